"""A disk cache of encoded clips: EnCodec codes (MusicGen) and VAE latent distributions (AudioLDM2).

Why: the codec is frozen, so encoding the same clip again every batch of every epoch is pure waste (EnCodec
was a quarter of a MusicGen training step). Each clip is encoded once and stored as one small safetensors
file, keyed by the clip's content (samples, rate and how it was prepared) and by a fingerprint of the
codec (class, config and every weight). Change the audio or the codec's weights and the key changes; the
same clip in another dataset or another run is found again. Files are written atomically
(:func:`musicpeft.io.atomic_write`), so concurrent runs (several training processes) never read half a file.
Encoding a whole dataset shows a progress bar (``datasets``' own, in :func:`~.collator.precompute_codes`);
VAE latents are encoded inside the training steps, under the training bar.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..io import atomic_write

CACHE_VERSION = "v1"
_fingerprints: dict[int, tuple[int, str]] = {}


def default_cache_dir() -> str:
    """``$MUSICPEFT_CACHE/encoded``, else ``~/.cache/musicpeft/encoded``."""
    root = os.environ.get("MUSICPEFT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "musicpeft")
    return os.path.join(root, "encoded")


def module_fingerprint(module: torch.nn.Module, extra: str = "") -> str:
    """sha256 over a module's class, config and every parameter and buffer (names, shapes, dtypes, bytes).

    Memoised per module object and version counters of its tensors, so a training loop pays once.
    """
    tensors = list(module.state_dict().items())
    version = hash(tuple((name, t.data_ptr(), t._version) for name, t in tensors))
    memo = _fingerprints.get(id(module))
    if memo is not None and memo[0] == version:
        return hashlib.sha256((memo[1] + extra).encode()).hexdigest()
    digest = hashlib.sha256(type(module).__qualname__.encode())
    config = getattr(module, "config", None)
    if config is not None:
        to_dict = getattr(config, "to_dict", None)
        digest.update(json.dumps(to_dict() if to_dict else dict(config), sort_keys=True, default=str).encode())
    for name, tensor in tensors:
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    value = digest.hexdigest()
    _fingerprints[id(module)] = (version, value)
    return hashlib.sha256((value + extra).encode()).hexdigest()


def audio_key(audio: np.ndarray, sampling_rate: int | None = None, extra: str = "") -> str:
    """sha256 of a clip's float32 samples, shape, rate and ``extra`` (how the clip was prepared)."""
    arr = np.ascontiguousarray(np.asarray(audio, dtype=np.float32))
    digest = hashlib.sha256(f"{arr.shape}:{sampling_rate}:{extra}:".encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()


class EncodingCache:
    """``root/<kind>-<version>/<codec fingerprint[:24]>/<key[:2]>/<key>.safetensors``; one file per clip."""

    def __init__(self, root: str | os.PathLike, kind: str, fingerprint: str) -> None:
        self.folder = Path(root) / f"{kind}-{CACHE_VERSION}" / fingerprint[:24]

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        """The tensors stored under ``key``, or None (also for an unreadable file, which is then re-encoded)."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            return load_file(path)
        except Exception:  # a truncated or foreign file: encode again and overwrite it
            return None

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        """Store ``tensors`` under ``key`` atomically."""
        state = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        atomic_write(self._path(key), lambda tmp: save_file(state, tmp))


def cached_encode(cache: EncodingCache | None, keys: list[str], encode: Any) -> list[dict[str, torch.Tensor]]:
    """Each key's tensors: from ``cache`` when there, else from ``encode(indices)`` (a list of dicts for the
    missing positions, encoded in one call) and stored."""
    found: list[dict[str, torch.Tensor] | None] = [cache.get(k) if cache else None for k in keys]
    missing = [i for i, f in enumerate(found) if f is None]
    if missing:
        for i, tensors in zip(missing, encode(missing), strict=True):
            found[i] = tensors
            if cache is not None:
                cache.put(keys[i], tensors)
    return found  # type: ignore[return-value]
