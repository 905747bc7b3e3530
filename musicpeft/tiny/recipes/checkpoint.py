"""Resumable training checkpoints in safetensors: model state, Adam moments, step and elapsed time.

Why not ``torch.save``: the package never unpickles, not even its own build files. Adam's state is
two tensors per parameter plus a step count, which flatten into safetensors keys by parameter name.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def save_checkpoint(path: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer, info: dict) -> None:
    """Write ``path`` (.safetensors) and ``path.json`` (``info`` + step), each atomically."""
    from safetensors.torch import save_file

    from ...data.render import _atomic_write

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
    _atomic_write(path, lambda tmp: save_file(tensors, tmp))
    _atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2)))


def load_checkpoint(path: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict | None:
    """Restore a checkpoint written by :func:`save_checkpoint`; ``None`` when there is none."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path.is_file() and path.with_suffix(".json").is_file()):
        return None
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    params = dict(model.named_parameters())
    for name, p in params.items():
        if f"opt.{name}.exp_avg" in tensors:
            opt.state[p] = {
                "exp_avg": tensors[f"opt.{name}.exp_avg"],
                "exp_avg_sq": tensors[f"opt.{name}.exp_avg_sq"],
                "step": tensors[f"opt.{name}.step"].reshape(()),
            }
    return json.loads(path.with_suffix(".json").read_text())
