"""Loading must not leave an adapter half-initialised.

peft only warns when an adapter file lacks weights that the adapter config creates; the adapter then
keeps its random (or zero) initial values and generates something else than what was trained. Our
tuners call `require_complete` after remapping a checkpoint, which turns that into a clear error.
"""

from __future__ import annotations

from torch import nn


def require_complete(model: nn.Module, adapter_name: str, remapped: dict, checkpoint_keys) -> None:
    """Raise if any weight of adapter `adapter_name` in `model` is absent from the remapped checkpoint."""
    from peft.tuners.tuners_utils import _filter_state_dict_by_key_prefixes, _get_tuner_state_dict_key_prefixes

    prefixes = _get_tuner_state_dict_key_prefixes(model, adapter_name=adapter_name)
    expected = _filter_state_dict_by_key_prefixes(model.state_dict(), prefixes)
    missing = sorted(key for key in expected if key not in remapped)
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        found = ", ".join(sorted(checkpoint_keys)[:5]) or "none"
        raise ValueError(
            f"The adapter weights lack {shown}; the file holds: {found}. It does not belong to this adapter config."
        )
