"""Generation for evaluation: one base, adapters switched on it, prompts in batches with per-prompt seeds.

Why separate from the report: the same steps serve any comparison of a base with its adapters
(``musicpeft evaluate``, a notebook, a listening test), for every family. How a family loads and
generates is the family's (``musicpeft.families``); this module picks the family of a source, switches
adapters and writes clips.

Seeds: prompt ``i`` is drawn with its own generator seeded ``seeds[i]``, so its clip is the same whether
it is generated alone or in a batch, and whatever the other prompts of the batch are:

* MusicGen and its variants: :class:`PromptSeededSampler` draws every prompt's next codes (one per
  codebook, per step) from that prompt's ``torch.Generator``, after classifier-free guidance and the
  generation config's temperature / top-k / top-p, exactly where ``generate`` would sample.
* AudioLDM2: each prompt's initial latents come from its own ``torch.Generator``; DDIM with ``eta=0``
  adds no other noise.

Batched clips equal unbatched ones up to float rounding (padding changes the shapes of the text
encoder's matmuls, ~1e-7), which can flip a sampled code only when a draw lands within that distance
of a boundary.

Adapters: :func:`switch_adapters` loads each adapter once onto the one base, under its own adapter
name, and activates them in turn (``set_adapter``); adapters of one kind share one PeftModel, and
between kinds the adapters are unloaded and the base is checked to be exactly as it was. No copy of
the base is made (a deep copy per adapter cost a model's worth of memory each).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..adapters.lifecycle import load_adapter, set_active_adapter, unload_adapters
from ..adapters.manifest import MANIFEST_NAME
from ..families import (
    DTYPES,
    TINY_AUDIOLDM2,
    TINY_MUSICGEN,
    TINY_MUSICGEN_MELODY,
    TINY_MUSICGEN_STEREO,
    TINY_MUSICGEN_TRAINED,
    LoadedBase,
    base_family,
    load_base,
)
from ..families.musicgen import PromptSeededSampler
from ..io import atomic_write

__all__ = [
    "DTYPES",
    "TINY_AUDIOLDM2",
    "TINY_MUSICGEN",
    "TINY_MUSICGEN_MELODY",
    "TINY_MUSICGEN_STEREO",
    "TINY_MUSICGEN_TRAINED",
    "LoadedBase",
    "PromptSeededSampler",
    "base_family",
    "default_guidance",
    "generate_clips",
    "load_base",
    "save_clips",
    "switch_adapters",
]


def _adapter_kind(folder: str) -> tuple:
    """What a PeftModel must share to hold several adapters: (component, peft_type) of every adapted part."""

    components = {".": "."}
    manifest = os.path.join(folder, MANIFEST_NAME)
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as handle:
            components = json.load(handle).get("components") or components
    kind = []
    for component, subfolder in sorted(components.items()):
        with open(os.path.join(folder, subfolder, "adapter_config.json"), encoding="utf-8") as handle:
            kind.append((component, json.load(handle).get("peft_type")))
    return tuple(kind)


def _fingerprint(base: LoadedBase) -> dict[str, tuple]:
    """Name, shape, dtype and sums of every base weight and buffer: what unloading adapters must give back."""
    modules = base.model_family.fingerprint_modules(base.model)
    prints = {}
    with torch.no_grad():
        for prefix, module in modules.items():
            for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
                values = tensor.detach().double()
                prints[f"{prefix}.{name}"] = (tuple(tensor.shape), tensor.dtype, float(values.sum()),
                                              float(values.abs().sum()))
    return prints


def switch_adapters(base: LoadedBase, folders: dict[str, str]) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, model)`` for every adapter, each loaded once onto ``base.model`` and active alone.

    Adapters of one kind (same components and peft type) are loaded together, under their names, into
    one PeftModel per component and switched with ``set_adapter``; peft cannot hold adapters of
    different types in one PeftModel, so between kinds every adapter is unloaded, and the base is
    checked to be exactly as it was (no adapter leaks into the next kind). The base itself is
    generated with ``base.model`` before this is called, or after it is exhausted.
    """

    groups: dict[tuple, list[str]] = {}
    for name, folder in folders.items():
        groups.setdefault(_adapter_kind(folder), []).append(name)
    before = _fingerprint(base)
    for names in groups.values():
        try:
            for name in names:
                load_adapter(base.model, folders[name], adapter_name=name)
            for name in names:
                yield name, set_active_adapter(base.model, name)
        finally:
            unload_adapters(base.model)
        if _fingerprint(base) != before:
            raise RuntimeError(f"Unloading adapters {names} left the base model changed; evaluation stopped so "
                               "that no adapter's effect is attributed to another.")


def default_guidance(base: LoadedBase, guidance_scale: float | None = None) -> float:
    """``guidance_scale`` if given, else the family's usual one (MusicGen: generation config or 3.0; AudioLDM2: 3.5)."""
    if guidance_scale is not None:
        return float(guidance_scale)
    return base.model_family.default_guidance(base.model)


def generate_clips(base: LoadedBase, model: Any, prompts: list[str], seeds: list[int], *, seconds: float,
                   guidance_scale: float, num_inference_steps: int = 200, batch_size: int = 8) -> list[np.ndarray]:
    """One clip per prompt, prompt ``i`` drawn with ``seeds[i]``: mono 1-D or ``(channels, samples)`` float32.

    ``model`` is ``base.model`` or the base with an adapter active; clips are ``seconds`` long (MusicGen
    generates whole frames, then the clip is cut). Prompts go ``batch_size`` at a time; a prompt's clip does
    not depend on the batch (see the module docstring). ``num_inference_steps`` is AudioLDM2's.
    """
    return base.model_family.generate_clips(base, model, prompts, seeds, seconds=seconds,
                                            guidance_scale=guidance_scale, num_inference_steps=num_inference_steps,
                                            batch_size=batch_size)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "prompt"


def save_clips(clips: list[np.ndarray], folder: str, categories: list[str], sampling_rate: int) -> list[str]:
    """Write ``NNN-<category>.wav`` atomically; returns the paths.

    32-bit float wavs hold exactly the samples that were scored; 16-bit PCM would round quiet clips to silence.
    """
    import soundfile as sf  # lazy: only writing clips needs libsndfile

    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, (clip, category) in enumerate(zip(clips, categories, strict=True)):
        path = os.path.join(folder, f"{i:03d}-{_slug(category)}.wav")
        data = clip.T if clip.ndim == 2 else clip
        atomic_write(path, lambda tmp, data=data: sf.write(tmp, data, sampling_rate, format="WAV", subtype="FLOAT"))
        paths.append(path)
    return paths
