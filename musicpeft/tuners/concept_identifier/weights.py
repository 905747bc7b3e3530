"""Reading base weights that may be offloaded by accelerate (on "meta", values in a hook's weights map)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def base_weight(module: nn.Module) -> torch.Tensor:
    """The weight of a module, or of the base layer inside a peft tuner layer."""
    return module.get_base_layer().weight if hasattr(module, "get_base_layer") else module.weight


def _offload_hooks(module: nn.Module) -> list[Any]:
    hook = getattr(module, "_hf_hook", None)
    return list(getattr(hook, "hooks", None) or ([hook] if hook is not None else []))


def readable_weight(module: nn.Module) -> torch.Tensor | None:
    """A module's weight with its values: an accelerate-offloaded weight (on "meta") is read from its hook's
    weights map (CPU memory or the offload folder). None when the values are nowhere to be found.
    """
    module = module.get_base_layer() if hasattr(module, "get_base_layer") else module
    weight = module.weight
    if weight.device.type != "meta":
        return weight
    for hook in _offload_hooks(module):
        weights_map = getattr(hook, "weights_map", None)
        if weights_map is None:
            continue
        try:
            return weights_map["weight"]
        except (KeyError, TypeError):
            continue
    return None


def execution_device(module: nn.Module) -> torch.device:
    """Where a module computes: its weight's device, or its offload hook's execution device (CPU if none)."""
    module = module.get_base_layer() if hasattr(module, "get_base_layer") else module
    weight = module.weight
    if weight.device.type != "meta":
        return weight.device
    for hook in _offload_hooks(module):
        device = getattr(hook, "execution_device", None)
        if device is not None:
            return torch.device(device)
    return torch.device("cpu")
