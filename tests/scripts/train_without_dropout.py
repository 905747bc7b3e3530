"""`musicpeft train` with dropout switched off in the loaded base: runs that split batches differently (over
processes or accumulation steps) must then agree. Launched by tests/test_distributed_training.py under
`torchrun` / `accelerate launch`, and once as a single process."""

import sys

import torch

import musicpeft.training.runner as train_cli
from musicpeft.cli import main
from musicpeft.evaluation.generation import load_base


def load_without_dropout(*args, **kwargs):
    base = load_base(*args, **kwargs)
    for module in base.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name in ("dropout", "attention_dropout", "activation_dropout", "layerdrop"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)
    return base


if __name__ == "__main__":
    torch.set_num_threads(1)
    train_cli.load_base = load_without_dropout
    sys.exit(main(["train", *sys.argv[1:]]))
