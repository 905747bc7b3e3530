"""``musicpeft train``: train an adapter (or a full fine-tune) and save it."""

from __future__ import annotations

import argparse

from ..training.runner import TrainArguments, format_summary, run_training
from .arguments import add_dataclass_arguments, from_namespace


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train", help="Train a soft prompt, LoRA preset or full fine-tune on MusicGen or AudioLDM2; save the adapter."
    )
    add_dataclass_arguments(parser, TrainArguments)
    parser.set_defaults(run=run, subparser=parser)


def run(namespace: argparse.Namespace) -> int:
    summary = run_training(from_namespace(TrainArguments, namespace))
    if summary.get("is_main_process", True):
        print("\n" + format_summary(summary))
    return 0
