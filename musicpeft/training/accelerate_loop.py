"""The one ``accelerate`` training loop of the package: AudioLDM2 diffusion recipes and DreamStyler concept recipes.

Why a loop of our own next to the transformers ``Trainer`` (which MusicGen's soft-prompt / LoRA recipes use):
a diffusers pipeline is several modules with no single ``forward`` to hand a Trainer, and the concept
recipes train the same way on MusicGen and AudioLDM2 in a few hundred steps with several parameter groups.
Both only need "a list of parameters, batches, a loss": :func:`optimizer_steps` runs exactly that and
yields after each optimizer step, so the caller decides about epochs, evaluation and logging.

What every step does, in order: forward under ``accelerator.autocast()`` (mixed precision) inside
``accelerator.accumulate()`` (gradient accumulation: the optimizer steps once every
``gradient_accumulation_steps`` batches), a NaN/Inf loss check before the backward pass, gradients averaged
over processes (the trained parameters live in unwrapped modules, so no DistributedDataParallel does it),
a NaN/Inf gradient check (skipped under fp16, whose loss scaler skips overflowing steps itself), clipping,
the optimizer and learning-rate steps, and a NaN/Inf weight check. Non-finite values raise
:class:`~musicpeft.errors.NonFiniteTrainingError` before anything more is saved.

Trainable state (the trained tensors only, safetensors plus a JSON note) is written atomically through
:mod:`musicpeft.io`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import NonFiniteTrainingError
from ..io import atomic_write, atomic_write_text
from .finite import check_finite_gradients, check_finite_loss, check_finite_weights
from .progress import progress_bar

STATE_FILE = "trainable_state.safetensors"
INFO_FILE = "trainer_state.json"
MIXED_PRECISION = ("no", "fp16", "bf16")


def allow_mixed_precision(mixed_precision: str) -> None:
    """Let this process's next ``Accelerator`` use ``mixed_precision``, whatever an earlier run chose.

    accelerate keeps one precision per process (``AcceleratorState``) and refuses another one
    ("AcceleratorState has already been initialized and cannot be changed, restart your runtime"), so a bf16
    Trainer run followed by a concept recipe in full precision in the same Python session (a notebook, a script
    training two adapters) failed. A finished run's choice is forgotten here; the process group
    (``PartialState``) stays. (transformers resets the state itself before each Trainer.)
    """
    from accelerate.state import AcceleratorState

    chosen = AcceleratorState._shared_state.get("_mixed_precision")
    if chosen is not None and chosen != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def make_accelerator(mixed_precision: str = "no", gradient_accumulation_steps: int = 1) -> Accelerator:
    """An ``Accelerator`` for :func:`optimizer_steps`, with a clear error for an unknown precision."""
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got {mixed_precision!r}.")
    if gradient_accumulation_steps < 1:
        raise ValueError(f"gradient_accumulation_steps must be >= 1, got {gradient_accumulation_steps}.")
    allow_mixed_precision(mixed_precision)
    return Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=gradient_accumulation_steps)


@dataclass
class StepResult:
    """One optimizer step: its 1-based number, the mean loss of its batches, the learning rate it used."""

    step: int
    loss: float
    lr: float


def average_gradients(accelerator: Any, params: Iterable[nn.Parameter]) -> None:
    """Mean of the gradients over processes (no-op on one process)."""
    if accelerator.num_processes == 1:
        return
    for p in params:
        if p.grad is not None:
            p.grad = accelerator.reduce(p.grad, reduction="mean")


def optimizer_steps(
    accelerator: Any,
    optimizer: Any,
    named: Mapping[str, nn.Parameter],
    batches: Iterable[Any],
    loss_fn: Callable[[Any], torch.Tensor],
    *,
    max_steps: int,
    start_step: int = 0,
    max_grad_norm: float | None = None,
    lr_scheduler: Any = None,
    bar: Any = None,
    label: str | None = None,
) -> Iterator[StepResult]:
    """Train ``named`` on ``batches`` until they run out or step ``max_steps`` is done; yield after each step.

    ``optimizer`` (and ``lr_scheduler``) come from ``accelerator.prepare``. ``loss_fn(batch)`` returns a
    scalar loss; it runs under autocast. Steps are numbered from ``start_step + 1`` (a loop over epochs
    passes the steps done so far). ``bar`` (a :func:`~musicpeft.training.progress.progress_bar`) advances
    one tick per optimizer step and shows the loss. A non-finite value stops training with
    :class:`~musicpeft.errors.NonFiniteTrainingError`, its message prefixed with ``label``.
    """
    params = list(named.values())
    step, window = start_step, []
    if step >= max_steps:
        return
    try:
        for batch in batches:
            with accelerator.accumulate():
                with accelerator.autocast():
                    loss = loss_fn(batch)
                try:
                    check_finite_loss(loss, step + 1)
                except NonFiniteTrainingError:
                    optimizer.zero_grad(set_to_none=True)
                    raise
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    average_gradients(accelerator, params)
                    if getattr(accelerator, "scaler", None) is None:  # fp16: the scaler skips overflowing steps
                        try:
                            check_finite_gradients(named.items(), step + 1)
                        except NonFiniteTrainingError:
                            optimizer.zero_grad(set_to_none=True)
                            raise
                    if max_grad_norm is not None:
                        accelerator.clip_grad_norm_(params, max_grad_norm)
                lr = lr_scheduler.get_last_lr()[0] if lr_scheduler is not None else optimizer.param_groups[0]["lr"]
                optimizer.step()
                if lr_scheduler is not None:
                    lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if accelerator.sync_gradients:
                    check_finite_weights(named.items(), step + 1)
            window.append(loss.detach().float().item())
            if not accelerator.sync_gradients:
                continue
            step += 1
            result = StepResult(step, sum(window) / len(window), float(lr))
            window = []
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{result.loss:.4f}", refresh=False)
            yield result
            if step >= max_steps:
                return
    except NonFiniteTrainingError as error:
        if label is None:
            raise
        raise NonFiniteTrainingError(f"{label}: {error}") from None


def train_steps(accelerator: Any, optimizer: Any, named: Mapping[str, nn.Parameter], batches: Iterable[Any],
                loss_fn: Callable[[Any], torch.Tensor], *, steps: int, max_grad_norm: float | None = None,
                label: str = "training") -> list[float]:
    """Run :func:`optimizer_steps` for ``steps`` steps under a progress bar; returns each step's loss."""
    with progress_bar(total=steps, desc=label, unit="step") as bar:
        return [r.loss for r in optimizer_steps(accelerator, optimizer, named, batches, loss_fn, max_steps=steps,
                                                max_grad_norm=max_grad_norm, bar=bar, label=label)]


def named_trainable(modules: Iterable[nn.Module], params: Iterable[nn.Parameter]) -> dict[str, nn.Parameter]:
    """``params`` keyed by their names in ``modules`` (``param.<i>`` for one found in none), for error messages."""
    names: dict[int, str] = {}
    for module in modules:
        for name, p in module.named_parameters():
            names.setdefault(id(p), name)
    return {names.get(id(p), f"param.{i}"): p for i, p in enumerate(params)}


@contextlib.contextmanager
def training_scope(modules: Mapping[str, nn.Module], params: Iterable[nn.Parameter]) -> Iterator[None]:
    """Only ``params`` require grad; modules holding them train (dropout on), the others evaluate.

    ``requires_grad`` of every parameter and the mode of every module are restored afterwards, also
    when training fails.
    """
    params = list(params)
    trainable = {id(p) for p in params}
    everything = [p for m in modules.values() for p in m.parameters()] + params
    flags = {id(p): p.requires_grad for p in everything}
    modes = {name: m.training for name, m in modules.items()}
    owners = {name for name, m in modules.items() if any(id(p) in trainable for p in m.parameters())}
    try:
        for module in modules.values():
            for p in module.parameters():
                p.requires_grad_(id(p) in trainable)
        for p in params:
            p.requires_grad_(True)
        for name, module in modules.items():
            module.train(name in owners)
        yield
    finally:
        for p in everything:
            p.requires_grad_(flags[id(p)])
        for name, module in modules.items():
            module.train(modes[name])


# ------------------------------------------------------------------------------------- trainable state


def save_trainable_state(named: Mapping[str, nn.Parameter], directory: str, info: dict[str, Any]) -> None:
    """Write the trainable tensors (safetensors) and ``info`` (JSON) into ``directory``, each file atomically."""
    state = {n: p.detach().to("cpu", copy=True).contiguous() for n, p in named.items()}
    atomic_write(os.path.join(directory, STATE_FILE), lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    atomic_write_text(os.path.join(directory, INFO_FILE), json.dumps(info, indent=2, default=str) + "\n")


def load_trainable_state(named: Mapping[str, nn.Parameter], directory: str) -> None:
    """Copy tensors saved by :func:`save_trainable_state` back into the parameters, checking names and shapes."""
    state = load_file(os.path.join(directory, STATE_FILE))
    if set(state) != set(named):
        missing, extra = sorted(set(named) - set(state)), sorted(set(state) - set(named))
        raise ValueError(f"{directory}/{STATE_FILE} does not match the trainable parameters: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}.")
    copy_into(named, state)


def copy_into(named: Mapping[str, nn.Parameter], state: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state[name]`` into each parameter (same shape required), on the parameter's device and dtype."""
    with torch.no_grad():
        for name, param in named.items():
            if state[name].shape != param.shape:
                raise ValueError(f"Saved {name} has shape {tuple(state[name].shape)}, expected {tuple(param.shape)}.")
            param.copy_(state[name].to(param.device, param.dtype))
