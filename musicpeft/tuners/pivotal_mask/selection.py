"""Which self-attention value entries become trainable: the one swappable policy of pivotal tuning.

A selection is a plain `dict[str, LongTensor]`: module name -> sorted, unique flat indices into that
module's `W_V` (row-major, `out_features x in_features`). Flat indices keep the stored adapter small
(one int32 per entry) and make unions a set operation.

- `top_percent`: the paper's rule (§4.2): the top P% of `|M_V - M_V*|` after mask training, ranked
  across all layers at once (default) or layer by layer.
- `random_percent`: the same count drawn at random (the paper's "5%-random" ablation, Table 2).
- `union`: Algorithm 1, line 6: the union of the concepts' selections.
"""

from __future__ import annotations

import os

import torch
from safetensors.torch import load_file, save_file

from ...io import atomic_write

Selection = dict[str, torch.Tensor]


def check_percent(percent: float) -> float:
    if not isinstance(percent, (int, float)) or isinstance(percent, bool) or not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent!r}.")
    return float(percent)


def selected_count(total: int, percent: float) -> int:
    """round(P% x entries): the number of entries a selection of `percent` keeps."""
    return int(round(total * check_percent(percent) / 100.0))


def top_percent(deltas: dict[str, torch.Tensor], percent: float, per_layer: bool = False) -> Selection:
    """The entries with the largest mask change.

    `deltas` maps module name -> `|M_V - M_V*|` (any shape; flattened row-major). Globally, exactly
    `selected_count(sum of sizes, percent)` entries are kept; per layer, `selected_count(size, percent)`
    in each layer. Ties are broken by `torch.topk`, deterministically for a given input.
    """
    check_percent(percent)
    if not deltas:
        raise ValueError("No mask deltas to select from: the model has no stage-1 mask.")
    names = sorted(deltas)
    flats = [deltas[n].detach().reshape(-1).float().cpu() for n in names]
    if per_layer:
        return {
            name: torch.sort(torch.topk(flat, selected_count(flat.numel(), percent)).indices).values
            for name, flat in zip(names, flats, strict=True)
        }
    sizes = [f.numel() for f in flats]
    k = selected_count(sum(sizes), percent)
    chosen = torch.topk(torch.cat(flats), k).indices
    return _split(names, sizes, chosen)


def random_percent(shapes: dict[str, tuple[int, ...]], percent: float, per_layer: bool = False,
                   seed: int = 0) -> Selection:
    """As many entries as `top_percent` would keep, drawn uniformly at random (seeded)."""
    check_percent(percent)
    names = sorted(shapes)
    sizes = [int(torch.tensor(shapes[n]).prod()) for n in names]
    generator = torch.Generator().manual_seed(seed)
    if per_layer:
        return {
            name: torch.sort(torch.randperm(size, generator=generator)[: selected_count(size, percent)]).values
            for name, size in zip(names, sizes, strict=True)
        }
    chosen = torch.randperm(sum(sizes), generator=generator)[: selected_count(sum(sizes), percent)]
    return _split(names, sizes, chosen)


def _split(names: list[str], sizes: list[int], chosen: torch.Tensor) -> Selection:
    """Global flat positions (over the concatenation of the layers) -> per-layer sorted flat indices."""
    chosen = torch.sort(chosen).values
    out: Selection = {}
    start = 0
    for name, size in zip(names, sizes, strict=True):
        lo, hi = torch.searchsorted(chosen, torch.tensor([start, start + size]))
        out[name] = chosen[lo:hi] - start
        start += size
    return out


def union(*selections: Selection) -> Selection:
    """Layer-wise union of several selections (Algorithm 1: one mask per concept, merged)."""
    out: Selection = {}
    for selection in selections:
        for name, idx in selection.items():
            out[name] = torch.unique(torch.cat([out[name], idx])) if name in out else torch.unique(idx)
    return out


def count(selection: Selection) -> int:
    return sum(int(v.numel()) for v in selection.values())


def save_selection(selection: Selection, path: str | os.PathLike) -> None:
    """Write a selection as safetensors (one int32 tensor per module; int64 past 2**31 entries), atomically."""

    def small(v: torch.Tensor) -> torch.Tensor:
        fits = v.numel() == 0 or int(v.max()) < 2**31
        return v.to(torch.int32 if fits else torch.int64).contiguous()

    tensors = {k: small(v) for k, v in selection.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp))


def load_selection(path: str | os.PathLike) -> Selection:
    return dict(load_file(os.fspath(path)))
