"""`x @ ΔW_sparse^T` for a fixed selection of W entries, without a W-sized tensor that outlives the call.

The old stage-2 forward built W' = W + ΔW (a full copy of W_V) on every call and autograd kept it for
backward: ~2.2x the layer's cost per decoding step and one W_V per layer of extra training memory.

(Generation does not come here: in eval mode without autograd `PivotalLinear` reuses the adapted weight.)

- Few rows (`rows <= max_sparse_rows`, e.g. decoding in training mode): a CSR matmul over the selection,
  added to `base_layer(x)`; cost O(rows x selected). CSR is the fastest of the sparse forms measured on CPU
  (scatter-add on the output and COO are several times slower; `benchmarks/pivotal_forward.py`).
- Many rows (training, prefill): a dense BLAS matmul beats any sparse kernel at 5% density, so
  `sparse_delta_linear` builds W' transiently in forward and again in backward, and saves only `x` (which a
  plain linear layer saves too) and the selection: nothing of W's size stays alive between the passes.
  The gradient of the selected values is `(g^T x)` read at the selected entries only.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

# Above this many rows a dense matmul on W' is faster than the CSR product on CPU (measured on a
# 1024x1024 W_V at 5%: the two cross between 32 and 64 rows).
MAX_SPARSE_ROWS = 32


def index_dtype(numel: int) -> torch.dtype:
    """int32 flat indices (half the file and memory of int64) unless the weight has 2**31 entries or more."""
    return torch.int32 if numel < 2**31 else torch.int64


@dataclass
class SparsePlan:
    """Row-major structure of a selection: flat indices, CSR row pointers and column indices (same dtype)."""

    flat: torch.Tensor
    crow: torch.Tensor
    col: torch.Tensor
    shape: tuple[int, int]
    source: tuple[int, int, int] = field(default=(0, 0, 0))
    max_sparse_rows: int = MAX_SPARSE_ROWS
    _csr_cache: tuple | None = None

    def __deepcopy__(self, memo: dict) -> SparsePlan:
        """A copy without the cached CSR matrix: sparse CSR tensors cannot be deep-copied (a copied model,
        e.g. `copy.deepcopy(peft_model)` after generating, rebuilds it on first use)."""
        return dataclasses.replace(
            self, flat=copy.deepcopy(self.flat, memo), crow=copy.deepcopy(self.crow, memo),
            col=copy.deepcopy(self.col, memo), _csr_cache=None,
        )

    @staticmethod
    def _key(indices: torch.Tensor) -> tuple[int, int, int]:
        return (indices.data_ptr(), indices._version, indices.numel())

    def matches(self, indices: torch.Tensor) -> bool:
        return self.source == self._key(indices) and self.flat.device == indices.device

    @classmethod
    def build(cls, indices: torch.Tensor, shape: tuple[int, int]) -> SparsePlan:
        out_features, in_features = shape
        flat = indices.reshape(-1)
        rows = torch.div(flat, in_features, rounding_mode="floor")
        col = (flat - rows * in_features).to(flat.dtype)
        counts = torch.bincount(rows.long(), minlength=out_features)
        crow = torch.zeros(out_features + 1, dtype=flat.dtype, device=flat.device)
        crow[1:] = torch.cumsum(counts, 0)
        return cls(flat=flat, crow=crow, col=col, shape=(out_features, in_features), source=cls._key(indices))

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        """ΔW as a sparse CSR tensor; cached while `values` is unchanged and needs no gradient."""
        key = (values.data_ptr(), values._version, values.dtype, values.device)
        graph = values.requires_grad and torch.is_grad_enabled()
        if not graph and self._csr_cache is not None and self._csr_cache[0] == key:
            return self._csr_cache[1]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
            matrix = torch.sparse_csr_tensor(
                self.crow, self.col, values, self.shape, dtype=values.dtype, device=values.device,
                check_invariants=False,
            )
        if not graph:
            self._csr_cache = (key, matrix)
        return matrix


_CSR_DTYPES = (torch.float32, torch.float64)
_nothing = contextlib.nullcontext


def sparse_matmul(x: torch.Tensor, values: torch.Tensor, plan: SparsePlan) -> torch.Tensor:
    """`x @ ΔW^T` where ΔW holds `values` at the plan's entries; differentiable in `x` and `values`."""
    out_features, in_features = plan.shape
    x2 = x.reshape(-1, in_features)
    if values.numel() == 0:
        return x2.new_zeros(*x.shape[:-1], out_features)
    if values.dtype in _CSR_DTYPES:
        # Autocast would send the CSR product to bf16/fp16 kernels that do not exist on CPU: keep float32.
        device = x2.device.type
        with torch.autocast(device, enabled=False) if torch.is_autocast_enabled(device) else _nothing():
            product = (plan.csr(values) @ x2.to(values.dtype).T).T
    else:  # half precision: CSR kernels are missing on CPU; scatter a dense delta instead
        delta = torch.zeros(out_features * in_features, dtype=values.dtype, device=values.device)
        delta = delta.index_add(0, plan.flat, values).view(out_features, in_features)
        product = F.linear(x2, delta)
    return product.reshape(*x.shape[:-1], out_features)


class _SparseDeltaLinear(torch.autograd.Function):
    """`F.linear(x, W + ΔW_sparse, b)` that keeps `x` and the selection, not W', for backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, values, flat):  # noqa: ANN001, ANN205 (autograd.Function signature)
        merged = weight.reshape(-1).index_add(0, flat, values).view_as(weight)
        out = F.linear(x, merged, bias)
        ctx.save_for_backward(x, weight, values, flat)
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        x, weight, values, flat = ctx.saved_tensors
        need_x, need_w, need_b, need_v, _ = ctx.needs_input_grad
        grad_x = grad_w = grad_b = grad_v = None
        # Under autocast the forward ran in half precision: compute in the wider of the two dtypes.
        dtype = torch.promote_types(grad.dtype, weight.dtype)
        grad2 = grad.reshape(-1, grad.shape[-1]).to(dtype)
        if need_x:
            merged = weight.reshape(-1).index_add(0, flat, values.to(weight.dtype)).view_as(weight)
            grad_x = (grad2 @ merged.to(dtype)).reshape(x.shape).to(x.dtype)
            del merged
        if need_w or need_v:
            full = grad2.T @ x.reshape(-1, x.shape[-1]).to(dtype)
            grad_v = full.reshape(-1).index_select(0, flat).to(values.dtype) if need_v else None
            grad_w = full.to(weight.dtype) if need_w else None
        if need_b and ctx.bias_dtype is not None:
            grad_b = grad2.sum(0).to(ctx.bias_dtype)
        return grad_x, grad_w, grad_b, grad_v, None


def sparse_delta_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, values: torch.Tensor,
                        flat: torch.Tensor) -> torch.Tensor:
    """`x @ (W + ΔW)^T + b` with ΔW = `values` at the flat indices `flat`; W' is never kept for backward."""
    if not torch.is_grad_enabled() or not (x.requires_grad or values.requires_grad or weight.requires_grad):
        with torch.no_grad():
            merged = weight.reshape(-1).index_add(0, flat, values).view_as(weight)
            return F.linear(x, merged, bias)
    return _SparseDeltaLinear.apply(x, weight, bias, values, flat)
