"""The one training loop of the tiny-model recipes: a wall-time budget, a cosine schedule, resumable checkpoints.

Why a wall-time budget instead of a step count: the recipes must fit a shared 2-core machine whose
speed varies with the load, and a budget in minutes is what the build script can promise. The
learning rate follows a cosine over the *elapsed fraction of the budget*, so a run resumed from a
checkpoint continues the same schedule.

Why safetensors checkpoints and not ``torch.save``: the package never unpickles, not even its own
build files. Adam's state is two tensors per parameter plus a step count, which flatten into
safetensors keys by parameter name.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ...io import atomic_write, atomic_write_text


def save_checkpoint(path: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer, info: dict) -> None:
    """Write ``path`` (.safetensors) and ``path.json`` (``info`` + step), each atomically."""
    path = Path(path)
    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    tensors[f"opt.{names[id(p)]}.{key}"] = state[key].contiguous()
            if "step" in state:
                tensors[f"opt.{names[id(p)]}.step"] = torch.as_tensor(state["step"], dtype=torch.float32).reshape(1)
    atomic_write(path, lambda tmp: save_file(tensors, tmp))
    atomic_write_text(path.with_suffix(".json"), json.dumps(info, indent=2))


def load_checkpoint(path: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict | None:
    """Restore a checkpoint written by :func:`save_checkpoint`; ``None`` when there is none."""
    path = Path(path)
    if not (path.is_file() and path.with_suffix(".json").is_file()):
        return None
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for name, p in model.named_parameters():
        if f"opt.{name}.exp_avg" in tensors:
            opt.state[p] = {
                "exp_avg": tensors[f"opt.{name}.exp_avg"],
                "exp_avg_sq": tensors[f"opt.{name}.exp_avg_sq"],
                "step": tensors[f"opt.{name}.step"].reshape(()),
            }
    return json.loads(path.with_suffix(".json").read_text())


@dataclass(frozen=True)
class Schedule:
    """Learning rate ``lr * warm-up * (floor + (1 - floor) * cosine(elapsed fraction of the budget))``.

    ``warmup_steps`` = 0 means no warm-up; otherwise the factor is ``min(1, (step + 1) / warmup_steps)``.
    """

    lr: float
    floor: float = 0.1
    warmup_steps: int = 0

    def __call__(self, step: int, frac: float) -> float:
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        return self.lr * warm * (self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * frac)))


StepFn = Callable[[np.random.Generator], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def train_for_budget(ckpt: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step_fn: StepFn,
                     minutes: float, schedule: Schedule, *, seed: int = 0, max_grad_norm: float = 1.0,
                     clip_params: Iterable[torch.nn.Parameter] | None = None, tag: str = "train", log=print,
                     checkpoint_every_s: float = 120.0, log_every: int = 25) -> dict:
    """Run ``step_fn`` until ``minutes`` of wall time are spent in all (resuming from ``ckpt``); returns info.

    ``step_fn(rng)`` draws its batch from ``rng`` and returns (loss to minimise, named loss parts to
    log); this loop owns the schedule, the optimiser step, gradient clipping and checkpoints. The
    batch generator is ``default_rng(seed + step)`` at (re)start, so a resumed run draws fresh batches.
    ``info`` has ``step``, ``elapsed_s`` and, when this call trained, ``losses`` (running means of the
    parts) and ``train_loss`` (the running mean of the ``loss`` part, when there is one).
    """
    info = load_checkpoint(ckpt, model, opt) or {"step": 0, "elapsed_s": 0.0}
    params = list(clip_params) if clip_params is not None else list(model.parameters())
    rng = np.random.default_rng(seed + info["step"])
    budget = minutes * 60.0
    start, last_save = time.time() - info["elapsed_s"], time.time()
    first_step = info["step"]
    running: dict[str, float] = {}
    while time.time() - start < budget:
        model.train()
        lr = schedule(info["step"], (time.time() - start) / budget)
        for group in opt.param_groups:
            group["lr"] = lr
        loss, parts = step_fn(rng)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        info["step"] += 1
        for k, v in parts.items():
            v = float(v.detach())
            running[k] = 0.95 * running.get(k, v) + 0.05 * v
        if info["step"] % log_every == 0:
            parts_text = " ".join(f"{k}={v:.3f}" for k, v in running.items())
            log(f"{tag} step {info['step']} {time.time() - start:.0f}s {parts_text}")
        if time.time() - last_save > checkpoint_every_s:
            info["elapsed_s"] = time.time() - start
            save_checkpoint(ckpt, model, opt, info)
            last_save = time.time()
    if info["step"] > first_step:  # budget already spent: export only, leave the checkpoint alone
        info["elapsed_s"] = time.time() - start
        info["losses"] = running
        if "loss" in running:
            info["train_loss"] = running["loss"]
        save_checkpoint(ckpt, model, opt, info)
    return info
