"""Loading takes exactly the weights an adapter's config creates: no fewer, no others, no broken values.

peft only warns when an adapter file lacks weights that the adapter config creates (the adapter then
keeps its random or zero initial values and generates something else than what was trained), and it
loads any other key of the file with `load_state_dict(strict=False)`: a key naming a base weight, such
as `base_model.model.text_encoder.shared.weight`, silently overwrites that base weight. Our tuners call
`require_complete` after remapping a checkpoint, which turns both into clear errors raised before any
weight is copied; `check_checkpoint` does the same for any peft method, given the expected state dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn


def _shown(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")


def check_checkpoint(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], source: str = "The adapter file",
    file_keys: Iterable[str] | None = None,
) -> None:
    """Refuse a checkpoint whose keys differ from `expected`, or whose tensors do not fit (kind, shape, values).

    `expected` and `found` use the same key space (the file's, or the model's after remapping). Values
    of `found` may be tensors or (dtype, shape) pairs read from a safetensors header. `file_keys`: the
    file's own key names, shown when weights are missing (default: the keys of `found`).
    """
    missing = sorted(k for k in expected if k not in found)
    if missing:
        holds = ", ".join(sorted(found if file_keys is None else file_keys)[:5]) or "none"
        raise ValueError(
            f"{source}: the adapter weights lack {_shown(missing)}; the file holds: {holds}. It does not belong "
            "to this adapter config."
        )
    unexpected = sorted(k for k in found if k not in expected)
    if unexpected:
        raise ValueError(
            f"{source}: holds {_shown(unexpected)}, which this adapter's config does not create; refusing to "
            "load it (such keys would overwrite base-model weights or other adapters)."
        )
    for key, value in found.items():
        want = expected[key]
        floating = value.is_floating_point() if isinstance(value, torch.Tensor) else value[0].startswith(("F", "BF"))
        if floating != want.is_floating_point():
            kind = "floating-point" if want.is_floating_point() else f"{want.dtype} (integer)"
            got = value.dtype if isinstance(value, torch.Tensor) else value[0]
            raise ValueError(f"{source}: {key} is {got}; this adapter stores it as {kind} values.")
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(value[1])
        if shape != tuple(want.shape) and want.numel() > 0:
            raise ValueError(
                f"{source}: {key} has shape {list(shape)}; this adapter's config makes it {list(want.shape)}."
            )
        if isinstance(value, torch.Tensor) and floating and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{source}: {key} holds NaN/Inf values; the adapter is broken (diverged training?).")


def require_complete(model: nn.Module, adapter_name: str, remapped: dict, checkpoint_keys) -> None:
    """Raise unless the remapped checkpoint holds exactly the weights of adapter `adapter_name` in `model`.

    Every key of `remapped` that is not one of the adapter's own tensors is refused (peft would copy it
    into the model), as are missing tensors, mismatched kinds (float/integer) and NaN/Inf values.
    """
    from peft.tuners.tuners_utils import _filter_state_dict_by_key_prefixes, _get_tuner_state_dict_key_prefixes

    prefixes = _get_tuner_state_dict_key_prefixes(model, adapter_name=adapter_name)
    expected = _filter_state_dict_by_key_prefixes(model.state_dict(), prefixes)
    # Remapping passes keys that match no adapter tensor through unchanged, so unexpected keys are the file's own
    # names; missing ones are listed beside the file's keys as written.
    check_checkpoint(expected, remapped, file_keys=checkpoint_keys)
