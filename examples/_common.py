"""What the examples share: their common flags, the Trainer settings of a short CPU run, and the report they write.

Run as a script (``python examples/<name>.py``), an example finds this module because Python puts the
script's folder on the import path; tests/test_examples.py does the same when it loads them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Sequence

from transformers import TrainingArguments

from musicpeft.evaluation.micro_world import codes_dataset
from musicpeft.io import atomic_write_json
from musicpeft.tiny.world import world_clips
from musicpeft.training.musicgen_trainer import make_musicgen_trainer


def example_parser(
    doc: str, output_dir: str | None, output_help: str = "Where report.json goes."
) -> argparse.ArgumentParser:
    """A parser described by the first line of the example's docstring, with ``--output_dir`` and ``--seed``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--output_dir", default=output_dir, help=output_help)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def cpu_training_arguments(output_dir: str, args: argparse.Namespace, **settings) -> TrainingArguments:
    """Trainer settings of an example: its ``--batch_size``, ``--learning_rate`` and ``--seed``, on CPU, no
    progress bars or loggers; ``settings`` adds the rest (steps or epochs, evaluation and save strategies)."""
    return TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
        learning_rate=args.learning_rate, seed=args.seed, report_to=[], use_cpu=True, disable_tqdm=True, **settings,
    )


def train_musicgen(world, model, train, validation, training_args: TrainingArguments, patience: int | None):
    """Train ``model`` with the library's MusicGen Trainer (``patience``: early stopping, or None); returns
    (the model in eval mode, the trainer, whose ``state.log_history`` holds the losses)."""
    trainer = make_musicgen_trainer(model, world.processor, train, eval_dataset=validation, args=training_args,
                                    early_stopping_patience=patience)
    trainer.train()
    return model.eval(), trainer


def world_codes(world, instrument: str, split: str, n: int, seconds: float, seed: int):
    """``n`` rendered clips of ``instrument`` from the micro-world's ``split`` pieces, as a dataset of codec codes."""
    return codes_dataset(world_clips(instrument, split, n, seconds, world.sampling_rate, seed=seed), world.model)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None) -> str:
    """A Markdown table; ``align`` has one letter per column, ``l`` or ``r`` (default: first left, others right)."""
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header):
        raise ValueError(f"markdown_table: align {align!r} needs one letter per column of {list(header)}")
    rule = ["---:" if a == "r" else "---" for a in align]
    return "\n".join("| " + " | ".join(str(c) for c in cells) + " |" for cells in [header, rule, *rows])


def write_report(output_dir: str, report: dict, show: str | None = None) -> dict:
    """Write ``report`` to ``output_dir/report.json`` atomically, print ``show`` (default: its table), return it."""
    os.makedirs(output_dir, exist_ok=True)
    atomic_write_json(os.path.join(output_dir, "report.json"), report)
    print(report["table"] if show is None else show)
    return report
