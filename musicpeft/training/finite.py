"""Stop training on a NaN/Inf loss, gradient or weight instead of saving a broken adapter.

Why: an overflowing step (a learning rate of ``inf``, an fp16 overflow, a corrupt clip) turns the trainable
weights into NaN, and every later step happily "trains" them; the run ends with exit status 0, a NaN
adapter and a summary whose losses were filtered to look finite. Both training paths (the transformers
Trainer for MusicGen, the accelerate loop for AudioLDM2) call these checks on every step and raise
:class:`~musicpeft.errors.NonFiniteTrainingError` at the first non-finite value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ..errors import NonFiniteTrainingError

_HINT = "lower the learning rate, or check the data for NaN/Inf samples"


def check_finite_loss(loss: torch.Tensor | float, step: int) -> None:
    """Raise when the training loss of optimizer step ``step`` (1-based) is NaN or infinite."""
    value = float(loss.detach().float().mean()) if torch.is_tensor(loss) else float(loss)
    if not torch.isfinite(torch.tensor(value)):
        raise NonFiniteTrainingError(f"training stopped at step {step}: the loss is {value}; {_HINT}")


def first_non_finite(named: Iterable[tuple[str, torch.Tensor | None]]) -> str | None:
    """Name of the first tensor holding a NaN or Inf (``None`` entries are skipped), or None."""
    for name, tensor in named:
        if tensor is not None and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def check_finite_gradients(named_params: Iterable[tuple[str, torch.nn.Parameter]], step: int) -> None:
    """Raise when a trainable parameter's gradient holds NaN or Inf before optimizer step ``step``."""
    bad = first_non_finite((n, p.grad) for n, p in named_params if p.requires_grad)
    if bad is not None:
        raise NonFiniteTrainingError(f"training stopped at step {step}: the gradient of {bad} is not finite; {_HINT}")


def check_finite_weights(named_params: Iterable[tuple[str, torch.nn.Parameter]], step: int) -> None:
    """Raise when a trainable parameter holds NaN or Inf after optimizer step ``step``."""
    bad = first_non_finite((n, p.detach()) for n, p in named_params if p.requires_grad)
    if bad is not None:
        raise NonFiniteTrainingError(f"training stopped after step {step}: {bad} is no longer finite; {_HINT}")


def finite_check_callback() -> Any:
    """A ``transformers.TrainerCallback`` checking gradients before and weights after each optimizer step."""
    from transformers import TrainerCallback

    class FiniteCheckCallback(TrainerCallback):
        """Raises NonFiniteTrainingError at the first non-finite gradient or trainable weight."""

        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            # under fp16 an overflowing gradient is routine: the loss scaler skips that step and scales down
            if model is not None and not args.fp16:
                check_finite_gradients(model.named_parameters(), state.global_step + 1)

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if model is not None:
                check_finite_weights(model.named_parameters(), state.global_step)

    return FiniteCheckCallback()
