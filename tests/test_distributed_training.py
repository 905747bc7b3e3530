"""`musicpeft train` on two CPU processes (gloo), started by torchrun or by `accelerate launch`, trains exactly
what one process does with the same global batch: the Trainer averages the gradients over processes.

`accelerate launch --cpu --num_processes 2` starts ONE process (accelerate runs several CPU processes only
through mpirun); `accelerate launch --multi_gpu --num_processes 2` goes through torch.distributed and, on a
machine without CUDA, trains on two gloo CPU processes: that is the launch tested here."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from musicpeft.cli import main

SCRIPT = Path(__file__).parent / "scripts" / "train_without_dropout.py"
COMMON = ["--base", "tiny-musicgen", "--data", "rendered:107:2", "--eval-fraction", "0", "--clip-seconds", "1",
          "--max-steps", "2", "--num-virtual-tokens", "4", "--learning-rate", "0.01", "--encode-cache", "none"]


def _script():
    spec = importlib.util.spec_from_file_location("train_without_dropout", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_gloo_processes_match_one_process(tmp_path, monkeypatch, launcher):
    if launcher == "accelerate" and torch.cuda.is_available():
        pytest.skip("with CUDA, --multi_gpu trains on GPUs (nccl), not on two gloo CPU processes")
    import musicpeft.training.runner as train_cli

    monkeypatch.setattr(train_cli, "load_base", _script().load_without_dropout)
    assert main(["train", *COMMON, "--batch-size", "2", "--output-dir", str(tmp_path / "one")]) == 0

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    result = subprocess.run(
        [*LAUNCHERS[launcher], str(SCRIPT), *COMMON, "--batch-size", "1", "--output-dir", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "train_summary.json").read_text()) for d in ("one", "two"))
    assert (one["processes"], two["processes"], two["steps"]) == (1, 2, 2)
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
    weights = [load_file(tmp_path / d / "adapter_model.safetensors") for d in ("one", "two")]
    for key in weights[0]:
        torch.testing.assert_close(weights[1][key], weights[0][key], rtol=1e-4, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no staging folder left by any rank
