"""A digest of the base weights a concept adapter acts on, so that a merge can refuse another base."""

from __future__ import annotations

import hashlib

from ...families import TextEncoderSlot
from .layout import Layout
from .weights import readable_weight


def base_fingerprint(layout: Layout, slots: list[TextEncoderSlot]) -> str:
    """A short digest of the base weights an adapter acts on (attention projections and embedding tables).

    Deltas at fixed indices only make sense on the weights they were trained against; the digest lets a
    merge refuse an adapter made on another base. It samples each tensor (shape + ~4k values), so it costs
    milliseconds even on MusicGen-large.
    """
    digest = hashlib.sha256(layout.family.name.encode())
    modules = dict(layout.root.named_modules())
    names = layout.names(layout.self_value_regex) + layout.names(layout.cross_key_value_regex)
    names += [layout.embedding_modules(slot)[0] for slot in slots]
    for name in names:
        weight = readable_weight(modules[name])  # offloaded weights count too: no false mismatch warning
        if weight is None:
            continue
        weight = weight.detach()
        flat = weight.reshape(-1)
        step = max(1, flat.numel() // 4096)
        digest.update(f"{name}:{tuple(weight.shape)}".encode())
        digest.update(flat[::step].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
