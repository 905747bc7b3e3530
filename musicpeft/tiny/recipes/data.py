"""The rendered micro-world as arrays on disk, so each training stage reads it in a second.

``build_world_arrays`` renders every usable 4 s window (see :func:`musicpeft.tiny.world.world_clips`)
of every instrument and split once and stores, per (instrument, split), ``<name>.npy`` (float16
audio ``[n, samples]``, no pickle) and ``<name>.json`` (captions, pieces, offsets).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ...io import atomic_write, atomic_write_text
from ..world import ALL_INSTRUMENTS, SPLITS, world_clips

CLIP_SECONDS = 4.0
SAMPLING_RATE = 16000


def _stem(folder: Path, instrument: str, split: str) -> Path:
    return folder / f"{instrument}_{split}"


def build_world_arrays(folder: str | Path, log=print) -> None:
    """Render (or reuse) every instrument/split array under ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for instrument in ALL_INSTRUMENTS:
        for split in SPLITS:
            stem = _stem(folder, instrument, split)
            if stem.with_suffix(".json").is_file():
                continue
            t = time.time()
            clips = world_clips(instrument, split, None, CLIP_SECONDS, SAMPLING_RATE)
            audio = np.stack([c["audio"] for c in clips]).astype(np.float16)
            meta = [{k: c[k] for k in ("text", "piece", "offset", "tempo", "era", "mode")} for c in clips]

            def save(tmp: str, audio=audio) -> None:
                with open(tmp, "wb") as f:
                    np.save(f, audio, allow_pickle=False)

            atomic_write(stem.with_suffix(".npy"), save)
            atomic_write_text(stem.with_suffix(".json"), json.dumps(meta))
            log(f"data: {instrument} {split}: {len(clips)} clips in {time.time() - t:.1f}s")


def load_world(folder: str | Path, instruments, split: str) -> tuple[np.ndarray, list[dict], list[str]]:
    """(float32 audio ``[n, samples]``, metadata rows, instrument per row) for ``instruments`` in ``split``."""
    folder = Path(folder)
    audios, metas, names = [], [], []
    for instrument in instruments:
        stem = _stem(folder, instrument, split)
        if not stem.with_suffix(".json").is_file():
            raise FileNotFoundError(f"{stem}.json: world data missing; run scripts/build_tiny_models.py --stages data")
        audios.append(np.load(stem.with_suffix(".npy"), allow_pickle=False).astype(np.float32))
        meta = json.loads(stem.with_suffix(".json").read_text())
        metas += meta
        names += [instrument] * len(meta)
    return np.concatenate(audios), metas, names
