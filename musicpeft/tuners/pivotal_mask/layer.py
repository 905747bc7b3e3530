"""The pivotal layer: one linear projection with, per adapter, a mask, sparse value deltas or a dense delta.

- `pivotal_mask[a]` (stage 1, self-attention W_V): `W * M`, M initialised to ones, the only thing trained.
- `pivotal_values[a]` at `pivotal_indices[a]` (stage 2, self-attention W_V): the selected entries' deltas
  as their own 1-D Parameter (SHiRA's layout: values at fixed flat indices), so gradients and optimizer
  state are the size of the selection, not of W_V.
- `pivotal_delta[a]` (stage 2, cross-attention W_K and W_V): a dense delta, zero at the start.

The effective weight is built by one function, used by `forward` and by `merge`, so a merged model
computes exactly what the adapted model computed.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners._buffer_dict import BufferDict
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

MASK, SPARSE, DENSE = "mask", "sparse", "dense"


class PivotalLinear(nn.Module, BaseTunerLayer):
    """Wraps an `nn.Linear`; each adapter holds a mask, sparse value deltas, or a dense delta for it."""

    adapter_layer_names = ("pivotal_mask", "pivotal_values", "pivotal_delta")
    other_param_names = ("pivotal_indices",)

    def __init__(self, base_layer: nn.Module, adapter_name: str, kind: str, indices: torch.Tensor | None = None,
                 **kwargs: Any) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"Pivotal tuning adapts nn.Linear projections, got {type(base_layer).__name__}.")
        self.base_layer = base_layer
        self.pivotal_mask = nn.ParameterDict()
        self.pivotal_values = nn.ParameterDict()
        self.pivotal_delta = nn.ParameterDict()
        self.pivotal_indices = BufferDict(persistent=True)
        self.merged_adapters = []
        self._premerge: list[tuple[list[str], torch.Tensor | None]] = []
        self._disable_adapters = False
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, kind, indices)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.base_layer.weight.shape)

    def update_layer(self, adapter_name: str, kind: str, indices: torch.Tensor | None = None) -> None:
        weight = self.base_layer.weight
        factory = {"device": weight.device, "dtype": torch.float32 if weight.dtype in _HALF else weight.dtype}
        if kind == MASK:
            self.pivotal_mask[adapter_name] = nn.Parameter(torch.ones(self.shape, **factory))
        elif kind == SPARSE:
            indices = torch.zeros(0, dtype=torch.long) if indices is None else indices
            self.set_selection(adapter_name, indices)
        elif kind == DENSE:
            self.pivotal_delta[adapter_name] = nn.Parameter(torch.zeros(self.shape, **factory))
        else:
            raise ValueError(f"Unknown pivotal layer kind {kind!r}; expected {MASK!r}, {SPARSE!r} or {DENSE!r}.")
        self.set_adapter(self.active_adapters)

    def set_selection(self, adapter_name: str, indices: torch.Tensor) -> None:
        """(Re)define which flat entries of W adapter `adapter_name` trains; their deltas restart at zero."""
        weight = self.base_layer.weight
        indices = indices.to(device=weight.device, dtype=torch.long).reshape(-1)
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= weight.numel()):
            raise ValueError(f"Selected indices fall outside a weight of {weight.numel()} entries.")
        dtype = torch.float32 if weight.dtype in _HALF else weight.dtype
        self.pivotal_indices[adapter_name] = indices
        trainable = adapter_name in self.pivotal_values and self.pivotal_values[adapter_name].requires_grad
        self.pivotal_values[adapter_name] = nn.Parameter(
            torch.zeros(indices.numel(), device=weight.device, dtype=dtype), requires_grad=trainable
        )

    def num_selected(self, adapter_name: str) -> int:
        return int(self.pivotal_indices[adapter_name].numel()) if adapter_name in self.pivotal_indices else 0

    # -- the one definition of the adapted weight --
    def effective_weight(self, adapter_names: list[str]) -> torch.Tensor:
        weight = self.base_layer.weight
        for name in adapter_names:
            if name in self.pivotal_mask:
                weight = weight * self.pivotal_mask[name].to(weight.dtype)
            if name in self.pivotal_values:
                values = self.pivotal_values[name].to(weight.dtype)
                weight = weight.reshape(-1).index_add(0, self.pivotal_indices[name], values).view_as(weight)
            if name in self.pivotal_delta:
                weight = weight + self.pivotal_delta[name].to(weight.dtype)
        return weight

    def _names(self, adapter_names: list[str] | None) -> list[str]:
        names = self.active_adapters if adapter_names is None else adapter_names
        return [n for n in names if n in self._get_available_adapters()]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        names = [n for n in self._names(None) if n not in self.merged_adapters]
        if not names:
            return self.base_layer(x, *args, **kwargs)
        return F.linear(x, self.effective_weight(names), self.base_layer.bias)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        names = [n for n in self._names(adapter_names) if n not in self.merged_adapters]
        if not names:
            return
        with torch.no_grad():
            merged = self.effective_weight(names).detach().clone()
            if safe_merge and not torch.isfinite(merged).all():
                raise ValueError(f"NaNs in the merged weight; adapter(s) {names} seem to be broken.")
            # A mask (possibly with zeros) cannot be divided out: keep the weight it replaced.
            keep = self.base_layer.weight.detach().clone() if any(n in self.pivotal_mask for n in names) else None
            self._premerge.append((names, keep))
            self.base_layer.weight.data = merged
        self.merged_adapters.extend(names)

    def unmerge(self) -> None:
        """Undo merges, last first: subtract the deltas, or restore the weight a mask merge replaced."""
        with torch.no_grad():
            while self._premerge:
                names, kept = self._premerge.pop()
                weight = self.base_layer.weight.data
                if kept is not None:
                    self.base_layer.weight.data = kept
                else:
                    for name in reversed(names):
                        if name in self.pivotal_delta:
                            weight -= self.pivotal_delta[name].to(weight.dtype)
                        if name in self.pivotal_values:
                            values = self.pivotal_values[name].to(weight.dtype)
                            weight.view(-1).index_add_(0, self.pivotal_indices[name], -values)
                for name in names:
                    self.merged_adapters.remove(name)

    def __repr__(self) -> str:
        return "pivotal." + super().__repr__()


_HALF = (torch.float16, torch.bfloat16)
