"""The pivotal layer: one linear projection with, per adapter, a mask, sparse value deltas or a dense delta.

- `pivotal_mask[a]` (stage 1, self-attention W_V): `W * M`, M initialised to ones, the only thing trained.
- `pivotal_values[a]` at `pivotal_indices[a]` (stage 2, self-attention W_V): the selected entries' deltas
  as their own 1-D Parameter (SHiRA's layout: values at fixed flat indices), so gradients and optimizer
  state are the size of the selection, not of W_V.
- `pivotal_delta[a]` (stage 2, cross-attention W_K and W_V): a dense delta, zero at the start.

The effective weight is built by one function (`effective_weight`), used by `merge` and by the general
forward, so a merged model computes exactly what the adapted model computed.

Stage 2 is the common case at inference and in training, and there the forward never builds W_V' = W_V + ΔW:
it computes `base_layer(x) + x @ ΔW_sparse^T` (`sparse_ops.py`): a CSR matmul over the selection for few
rows, or, for many rows (training, prefill), one fused op that builds W_V' only transiently and keeps
nothing of W's size for backward. Indices are stored as int32.

Inference (eval mode, no autograd: generation) is the exception: there the adapted weight is built once,
bitwise what `merge` writes, and reused by every decoding step while nothing it depends on changes, so a
step costs the base's one matmul; `train()` drops it (`_InferenceWeight`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners._buffer_dict import BufferDict
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from .sparse_ops import SparsePlan, index_dtype, sparse_delta_linear, sparse_matmul

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
        self._plans: dict[str, SparsePlan] = {}
        # Inference only (eval mode, no autograd): the adapted weight, built once and reused by every decoding
        # step while nothing it depends on changes; dropped by `train()`, so training never holds it.
        self._inference_weight: _InferenceWeight | None = None
        self._disable_adapters = False
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, kind, indices)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.base_layer.weight.shape)

    def _adapter_device(self) -> torch.device:
        """Where adapter tensors live: the base weight's device, or its execution device when it is offloaded."""
        weight = self.base_layer.weight
        if weight.device.type != "meta":
            return weight.device
        device = getattr(getattr(self.base_layer, "_hf_hook", None), "execution_device", None)
        return torch.device(device) if device is not None else torch.device("cpu")

    def update_layer(self, adapter_name: str, kind: str, indices: torch.Tensor | None = None) -> None:
        weight = self.base_layer.weight
        factory = {"device": self._adapter_device(), "dtype": torch.float32 if weight.dtype in _HALF else weight.dtype}
        if kind == MASK:
            self.pivotal_mask[adapter_name] = nn.Parameter(torch.ones(self.shape, **factory))
        elif kind == SPARSE:
            indices = torch.zeros(0, dtype=torch.int32) if indices is None else indices
            self.set_selection(adapter_name, indices)
        elif kind == DENSE:
            self.pivotal_delta[adapter_name] = nn.Parameter(torch.zeros(self.shape, **factory))
        else:
            raise ValueError(f"Unknown pivotal layer kind {kind!r}; expected {MASK!r}, {SPARSE!r} or {DENSE!r}.")
        self.set_adapter(self.active_adapters)

    def set_adapter(self, adapter_names: str | list[str], *args: Any, **kwargs: Any) -> None:
        self._inference_weight = None
        super().set_adapter(adapter_names, *args, **kwargs)

    def set_selection(self, adapter_name: str, indices: torch.Tensor) -> None:
        """(Re)define which flat entries of W adapter `adapter_name` trains; their deltas restart at zero.

        Indices must be sorted and unique (every selection function returns them so; the values of a saved
        adapter are stored in that order). They are checked where they are (CPU, before any move), so an
        offloaded base with weights on the meta device works too.
        """
        checked = self.check_indices(indices)
        weight = self.base_layer.weight
        device = self._adapter_device()
        dtype = torch.float32 if weight.dtype in _HALF else weight.dtype
        self.pivotal_indices[adapter_name] = checked.to(device)
        self._plans.pop(adapter_name, None)
        self._inference_weight = None
        trainable = adapter_name in self.pivotal_values and self.pivotal_values[adapter_name].requires_grad
        self.pivotal_values[adapter_name] = nn.Parameter(
            torch.zeros(checked.numel(), device=device, dtype=dtype), requires_grad=trainable
        )

    def check_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Flat indices as a 1-D int32 tensor (int64 for weights past 2**31 entries); refuses bad ones."""
        numel = self.base_layer.weight.numel()
        if not isinstance(indices, torch.Tensor) or indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise TypeError(f"Selected indices must be an integer tensor, got {getattr(indices, 'dtype', indices)}.")
        flat = indices.detach().reshape(-1)
        if flat.device.type == "meta":
            raise ValueError("Selected indices are on the meta device; pass real indices (e.g. from the file).")
        if flat.numel():
            low, high = int(flat.min()), int(flat.max())
            if low < 0 or high >= numel:
                raise ValueError(
                    f"Selected indices [{low}, {high}] fall outside a weight of {numel} entries {self.shape}."
                )
            if flat.numel() > 1 and not bool((flat[1:] > flat[:-1]).all()):
                raise ValueError("Selected indices must be sorted and unique (flat, row-major).")
        return flat.to(index_dtype(numel))

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        self._plans.pop(adapter_name, None)
        self._inference_weight = None

    def train(self, mode: bool = True) -> PivotalLinear:
        """Switching to training drops the inference weight: training memory holds no W-sized copy."""
        if mode:
            self._inference_weight = None
        return super().train(mode)

    def num_selected(self, adapter_name: str) -> int:
        return int(self.pivotal_indices[adapter_name].numel()) if adapter_name in self.pivotal_indices else 0

    def _plan(self, adapter_name: str) -> SparsePlan:
        """Row/column structure of a selection, rebuilt only when the indices change (e.g. a load)."""
        indices = self.pivotal_indices[adapter_name]
        plan = self._plans.get(adapter_name)
        if plan is None or not plan.matches(indices):
            plan = SparsePlan.build(indices, self.shape)
            self._plans[adapter_name] = plan
        return plan

    # -- the one definition of the adapted weight --
    def effective_weight(self, adapter_names: list[str]) -> torch.Tensor:
        weight = self.base_layer.weight
        for name in adapter_names:
            if name in self.pivotal_mask:
                weight = weight * self.pivotal_mask[name].to(weight.dtype)
            if name in self.pivotal_values:
                values = self.pivotal_values[name].to(weight.dtype)
                weight = weight.reshape(-1).index_add(0, self._plan(name).flat, values).view_as(weight)
            if name in self.pivotal_delta:
                weight = weight + self.pivotal_delta[name].to(weight.dtype)
        return weight

    def _names(self, adapter_names: list[str] | None) -> list[str]:
        names = self.active_adapters if adapter_names is None else adapter_names
        return [n for n in names if n in self._get_available_adapters()]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        cached = self._inference_weight
        if cached is not None and not self.training and not torch.is_grad_enabled() and cached.valid(self._state()):
            # Decoding: one token per step, so this check is kept to plain attribute reads (no ParameterDict
            # lookups); on a 32-wide layer they cost more than the matmul.
            return F.linear(x, cached.weight, cached.bias)
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        names = [n for n in self._names(None) if n not in self.merged_adapters]
        if not names:
            return self.base_layer(x, *args, **kwargs)
        if not self.training and not torch.is_grad_enabled() and self.base_layer.weight.device.type != "meta":
            return F.linear(x, self._cached_effective_weight(names), self.base_layer.bias)
        if len(names) == 1 and names[0] in self.pivotal_values:
            return self._sparse_forward(x, names[0], *args, **kwargs)
        with self._materialized():
            return F.linear(x, self.effective_weight(names), self.base_layer.bias)

    def _cached_effective_weight(self, names: list[str]) -> torch.Tensor:
        """`effective_weight(names)` (what `merge` writes), rebuilt only when a weight, value or selection changes.

        Decoding runs one token per step, so any per-call work on the delta (a CSR product: two extra kernels
        and their fixed cost in every layer and step) shows as generation time; with the adapted weight cached,
        a step costs exactly one `F.linear`, the base's own cost. Memory: one weight-sized tensor per adapted
        layer while the model is in eval mode (for MusicGen-small's 24 W_V, 100 MB); `train()` drops it.
        """
        state = self._state()
        cached = self._inference_weight
        if cached is not None and cached.valid(state):
            return cached.weight
        self._inference_weight = None  # free the stale one before building the next
        bias = self.base_layer.bias
        deps = [self.base_layer.weight, *([bias] if bias is not None else [])]
        for name in names:
            for table in (self.pivotal_mask, self.pivotal_values, self.pivotal_delta, self.pivotal_indices):
                if name in table:
                    deps.append(table[name])
        weight = self.effective_weight(names).detach()
        self._inference_weight = _InferenceWeight(
            state, tuple((t, t._version, t.data_ptr()) for t in deps), weight, bias
        )
        return weight

    def _state(self) -> tuple:
        """Which adapters the forward applies: active ones, merged ones, the disable switch (plain attributes)."""
        active = self._active_adapter
        return (active if isinstance(active, str) else tuple(active), tuple(self.merged_adapters),
                self._disable_adapters)

    def _sparse_forward(self, x: torch.Tensor, name: str, *args: Any, **kwargs: Any) -> torch.Tensor:
        """`x @ (W + ΔW_sparse)^T + b` without keeping a W-sized tensor.

        Few rows (decoding): `base_layer(x)` plus a CSR matmul over the selection, which also runs the base
        layer's own hooks (offloaded weights). Many rows: one fused op (W + ΔW built transiently).
        """
        weight, plan = self.base_layer.weight, self._plan(name)
        values = self.pivotal_values[name]
        rows = x.numel() // max(1, x.shape[-1])
        if weight.device.type == "meta" or rows <= plan.max_sparse_rows:
            out = self.base_layer(x, *args, **kwargs)
            return out + sparse_matmul(x.to(values.dtype), values, plan).to(out.dtype)
        return sparse_delta_linear(x, weight, self.base_layer.bias, values.to(weight.dtype), plan.flat)

    def _materialized(self):
        """While active, an offloaded base weight (meta device) is loaded by its accelerate hook."""
        return _OffloadedWeight(self.base_layer)

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
                            weight.view(-1).index_add_(0, self._plan(name).flat, -values)
                for name in names:
                    self.merged_adapters.remove(name)

    def __repr__(self) -> str:
        return "pivotal." + super().__repr__()


class _OffloadedWeight:
    """Context: run the accelerate offload hook of `module` (if its weight is on the meta device) around a block."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        hook = getattr(module, "_hf_hook", None)
        self.hook = hook if hook is not None and module.weight.device.type == "meta" else None

    def __enter__(self) -> None:
        if self.hook is not None:
            self.hook.pre_forward(self.module)

    def __exit__(self, *exc: Any) -> None:
        if self.hook is not None:
            self.hook.post_forward(self.module, None)


_HALF = (torch.float16, torch.bfloat16)


class _InferenceWeight:
    """The adapted weight for eval-mode, no-autograd calls, with what it was built from.

    Valid while the same adapters apply and every tensor it depends on (base weight and bias, each adapter's
    mask, values, delta, indices) is the same object, unmodified in place (`_version`) and in the same
    storage (`data_ptr`: `param.data = ...` swaps storage without a version bump). Replacing an adapter
    tensor (`set_selection`, `update_layer`, `set_adapter`, `delete_adapter`) drops it explicitly.
    """

    __slots__ = ("state", "deps", "weight", "bias")

    def __init__(self, state: tuple, deps: tuple, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.state, self.deps, self.weight, self.bias = state, deps, weight, bias

    def valid(self, state: tuple) -> bool:
        return state == self.state and all(t._version == v and t.data_ptr() == p for t, v, p in self.deps)
