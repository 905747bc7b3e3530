"""MusicGen on the transformers ``Trainer``: the recipe of the soft-prompt and LoRA papers.

Paper defaults (the soft-prompt and LoRA papers; :data:`PAPER_DEFAULTS`): batch 32, learning rate 1e-5, up to 100
epochs, early stopping on the validation loss, best checkpoint kept. They are the defaults when
no ``TrainingArguments`` are given; tests and the tiny demo pass small values instead.

What this module fixes that a bare ``Trainer(model, args, collator)`` gets wrong for MusicGen:

* ``remove_unused_columns`` would drop ``audio``/``codes``/``text`` before the collator sees them
  (the model's ``forward`` has no such arguments): forced to ``False``.
* ``label_names`` is found by inspecting ``forward``; wrappers (peft's ``PeftModel`` and our
  tuners) hide it, and without it evaluation returns no ``eval_loss``: forced to ``["labels"]``.
* ``MusicgenForConditionalGeneration.forward`` takes ``**kwargs``, so the Trainer believes it
  normalises its loss by ``num_items_in_batch`` and stops dividing by the gradient-accumulation
  steps; MusicGen's loss is already a mean, so gradients would be ``k`` times too large with
  ``gradient_accumulation_steps=k``. The Trainer is told the model takes no loss kwargs.
* Early stopping needs evaluation and saving on the same schedule, ``load_best_model_at_end``
  and ``metric_for_best_model="eval_loss"`` (lower is better); set when an eval set is given.

Checkpoints hold the model only (``save_only_model=True`` by default): no optimizer or RNG state.
Pass ``save_only_model=False`` to be able to resume (the Trainer reads those states back with
``torch.load(weights_only=True)``, which runs no code). Resuming from a model-only checkpoint is refused
(:func:`check_resumable`): the Trainer would silently restart the optimizer and the learning-rate
schedule. The training arguments are saved as ``training_args.json`` instead of the pickled
``training_args.bin``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ResumeError
from ..families import MUSICGEN
from ..io import atomic_write_text
from .collator import MusicgenCollator, base_musicgen
from .finite import check_finite_loss, finite_check_callback
from .progress import bars_off

log = logging.getLogger(__name__)

PAPER_DEFAULTS: dict[str, Any] = {  # the MusicGen family's training defaults, as Trainer arguments
    "per_device_train_batch_size": MUSICGEN.training.batch_size,
    "per_device_eval_batch_size": MUSICGEN.training.batch_size,
    "learning_rate": MUSICGEN.training.learning_rate,
    "num_train_epochs": MUSICGEN.training.epochs,
}
_DEFAULTS: dict[str, Any] = {
    **PAPER_DEFAULTS,
    "output_dir": "musicpeft-trainer",
    "logging_strategy": "epoch",
    "save_strategy": "no",
    "save_only_model": True,
    "save_total_limit": 2,
    "report_to": "none",
    "dataloader_num_workers": 0,
}
_EARLY_STOPPING = {
    "load_best_model_at_end": True,
    "metric_for_best_model": "eval_loss",
    "greater_is_better": False,
}


def _training_args(args: Any, with_eval: bool, early_stopping: bool, overrides: dict[str, Any]):
    """TrainingArguments = defaults (or ``args``) + ``overrides`` + what the MusicGen path needs."""
    from transformers import TrainingArguments

    if args is None:
        values = {**_DEFAULTS, **overrides}
        # The Trainer's bar follows the package's rule (training.progress): none in logs or with TQDM_DISABLE.
        values.setdefault("disable_tqdm", bars_off())
        if with_eval:
            values.setdefault("eval_strategy", "epoch")
            if early_stopping and "save_strategy" not in overrides:
                values["save_strategy"] = values["eval_strategy"]
        args = TrainingArguments(**values)
    elif overrides:
        args = dataclasses.replace(args, **overrides)
    required: dict[str, Any] = {"remove_unused_columns": False, "label_names": ["labels"]}
    if with_eval and early_stopping:
        eval_strategy = getattr(args.eval_strategy, "value", args.eval_strategy)
        eval_strategy = "epoch" if eval_strategy == "no" else eval_strategy
        required.update(_EARLY_STOPPING, eval_strategy=eval_strategy, save_strategy=eval_strategy)
        if eval_strategy == "steps":
            required["save_steps"] = args.eval_steps or args.logging_steps
    changed = {k: v for k, v in required.items() if getattr(getattr(args, k), "value", getattr(args, k)) != v}
    if changed:
        log.info("make_musicgen_trainer: setting %s on the TrainingArguments", changed)
        args = dataclasses.replace(args, **changed)
    return args


def _musicgen_trainer_class():
    from transformers import Trainer

    class MusicgenTrainer(Trainer):
        """``Trainer`` that saves its arguments as JSON, not as a pickle (``training_args.bin``), and stops at
        the first non-finite loss (:mod:`musicpeft.training.finite`; gradients and weights are checked by
        the callback :func:`make_musicgen_trainer` adds)."""

        def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any) -> Any:
            if resume_from_checkpoint is True:
                resume_from_checkpoint = last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint:
                check_resumable(resume_from_checkpoint)
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
            loss = super().training_step(model, inputs, num_items_in_batch)
            check_finite_loss(loss, self.state.global_step + 1)
            return loss

        def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
            super()._save(output_dir, state_dict)
            output_dir = output_dir if output_dir is not None else self.args.output_dir
            if not self.args.should_save:
                return
            pickled = os.path.join(output_dir, "training_args.bin")
            if os.path.exists(pickled):
                os.remove(pickled)
            atomic_write_text(os.path.join(output_dir, "training_args.json"), self.args.to_json_string())

    return MusicgenTrainer


# what a checkpoint needs for an exact resume (names as the Trainer writes them)
RESUME_FILES = {
    "trainer_state.json": "the step, epoch and best metric",
    "optimizer.pt": "the optimizer state (AdamW moments)",
    "scheduler.pt": "the learning-rate schedule",
    "rng_state.pth": "the random number generators",
}


def last_checkpoint(directory: str | os.PathLike) -> str:
    """The ``checkpoint-<step>`` folder with the highest step in ``directory``."""
    from transformers.trainer_utils import get_last_checkpoint

    if not os.path.isdir(directory):
        raise ResumeError(f"resume: checkpoint folder {directory} does not exist")
    found = get_last_checkpoint(os.fspath(directory))
    if found is None:
        raise ResumeError(f"resume: {directory} holds no checkpoint-<step> folder")
    return found


def check_resumable(checkpoint: str | os.PathLike) -> None:
    """Refuse a checkpoint that cannot resume exactly: missing, or saved with ``save_only_model=True``."""
    checkpoint = os.fspath(checkpoint)
    if not os.path.isdir(checkpoint):
        raise ResumeError(f"resume: {checkpoint} is not a checkpoint folder")
    missing = [name for name in RESUME_FILES if not os.path.isfile(os.path.join(checkpoint, name))]
    if os.path.isfile(os.path.join(checkpoint, "optimizer.bin")) and "optimizer.pt" in missing:
        missing.remove("optimizer.pt")
    if os.path.isfile(os.path.join(checkpoint, "rng_state_0.pth")):  # several processes: one file each
        missing.remove("rng_state.pth")
    if missing:
        what = "; ".join(f"{m} ({RESUME_FILES[m]})" for m in missing)
        raise ResumeError(f"resume: {checkpoint} lacks {what}; it was saved with the model only, and resuming "
                          "would silently restart the optimizer and schedule. Resume from a checkpoint written "
                          "with save_only_model=False (musicpeft train --checkpoint-dir), or train from scratch")


def make_musicgen_trainer(
    model: Any,
    processor: Any,
    train_dataset: Any,
    eval_dataset: Any = None,
    args: Any = None,
    early_stopping_patience: int | None = 3,
    **overrides: Any,
):
    """A ``transformers.Trainer`` for MusicGen (plain or peft-wrapped) with :class:`MusicgenCollator`.

    ``args`` defaults to the paper's recipe (:data:`PAPER_DEFAULTS`); ``overrides`` are
    ``TrainingArguments`` fields applied on top (``output_dir=...``, ``max_steps=...``). With an
    ``eval_dataset`` and ``early_stopping_patience`` set, an ``EarlyStoppingCallback`` stops
    training after that many evaluations without a lower ``eval_loss`` and the best checkpoint is
    loaded at the end. ``max_text_length`` in ``overrides`` goes to the collator. A NaN/Inf loss, gradient
    or trainable weight stops training with :class:`~musicpeft.errors.NonFiniteTrainingError`.
    """
    from transformers import EarlyStoppingCallback

    if early_stopping_patience is not None and early_stopping_patience < 1:
        raise ValueError(f"early_stopping_patience must be >= 1 or None, got {early_stopping_patience}")
    collator = MusicgenCollator(processor, model, max_text_length=overrides.pop("max_text_length", None))
    early = eval_dataset is not None and early_stopping_patience is not None
    training_args = _training_args(args, eval_dataset is not None, early, overrides)
    callbacks = [finite_check_callback()]
    if early:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=early_stopping_patience))
    trainer = _musicgen_trainer_class()(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        callbacks=callbacks,
    )
    trainer.model_accepts_loss_kwargs = False  # MusicGen's loss is a mean: let the Trainer scale for accumulation
    return trainer


def _rows(dataset: Any, start: int, stop: int) -> list[dict]:
    return [dataset[i] for i in range(start, stop)]


@torch.no_grad()
def token_cross_entropy(
    model: Any, processor: Any, dataset: Any, batch_size: int = 8, max_text_length: int | None = None
) -> dict[str, Any]:
    """Mean cross-entropy (nats per audio token) and perplexity of a model on held-out clips.

    Averaged over every real code of every codebook (delay filler and padding excluded), in eval
    mode without gradients; ``perplexity = exp(cross_entropy)``. Works for a plain
    ``MusicgenForConditionalGeneration`` and for peft-wrapped ones. ``dataset`` rows hold
    ``text`` and ``audio`` or ``codes``. Also returns ``tokens`` and ``per_codebook`` (list).
    """
    if len(dataset) == 0:
        raise ValueError("token_cross_entropy: the dataset is empty")
    if batch_size < 1:
        raise ValueError(f"token_cross_entropy: batch_size must be >= 1, got {batch_size}")
    collator = MusicgenCollator(processor, model, max_text_length=max_text_length)
    num_codebooks = base_musicgen(model).decoder.num_codebooks
    device = next(p.device for p in model.parameters())
    was_training = model.training
    model.eval()
    sums = torch.zeros(num_codebooks, dtype=torch.float64)
    counts = torch.zeros(num_codebooks, dtype=torch.long)
    try:
        for start in range(0, len(dataset), batch_size):
            batch = collator(_rows(dataset, start, min(start + batch_size, len(dataset))))
            batch = {k: v.to(device) for k, v in batch.items()}
            labels = batch["labels"]  # [B, S, K]
            logits = model(**batch).logits  # [B * K, S', V]
            bsz, steps, _ = labels.shape
            logits = logits.reshape(bsz, num_codebooks, -1, logits.shape[-1])[:, :, -steps:].float()
            for k in range(num_codebooks):
                target = labels[..., k]
                sums[k] += torch.nn.functional.cross_entropy(
                    logits[:, k].reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum"
                ).item()
                counts[k] += int((target != -100).sum())
    finally:
        model.train(was_training)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("token_cross_entropy: the clips produced no audio tokens to score")
    ce = float(sums.sum() / total)
    per_codebook: Sequence[float] = [float(s / c) if c else math.nan for s, c in zip(sums, counts, strict=True)]
    return {"cross_entropy": ce, "perplexity": math.exp(ce), "tokens": total, "per_codebook": list(per_codebook)}
