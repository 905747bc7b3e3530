"""Training recipes: the MusicGen collator and the transformers Trainer path (``musicgen_trainer``), and the one
``accelerate`` loop (``accelerate_loop``) that AudioLDM2 training (``diffusion``) and the DreamStyler concept
recipes (``dreamstyler``) share; ``finite`` stops diverged runs, ``progress`` draws every long step's bar.

Names are imported on first use, so importing a sibling module (e.g. ``presets``) does not pay
for ``transformers.Trainer``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MusicgenCollator": "collator",
    "delayed_labels": "collator",
    "encode_audio": "collator",
    "init_codebooks_from_audio": "collator",
    "precompute_codes": "collator",
    "PAPER_DEFAULTS": "musicgen_trainer",
    "make_musicgen_trainer": "musicgen_trainer",
    "token_cross_entropy": "musicgen_trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
