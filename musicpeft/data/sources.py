"""Where audio for training and evaluation comes from: a folder, or ``rendered:<program>:<n>`` clips.

Shared by ``musicpeft train`` and ``musicpeft evaluate`` so that both read the same specs the same way.
"""

from __future__ import annotations

import os

import numpy as np

from .audio import load_audio
from .dataset import load_audio_folder, make_rendered_dataset
from .metadata import METADATA_FILES, find_metadata

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".aiff", ".aif")


def parse_rendered(spec: str, what: str) -> tuple[int | None, int] | None:
    """``rendered:<program>:<n>`` -> (program or None, n); None when ``spec`` is not a rendered spec."""
    if not spec.startswith("rendered:"):
        return None
    parts = spec.split(":")
    expected = f"{what}: {spec!r} should read 'rendered:<program>:<n>' (program 0-127 or empty, n >= 1)"
    if len(parts) != 3 or not parts[2].isdigit() or int(parts[2]) < 1:
        raise ValueError(expected)
    program = parts[1].strip().lower()
    if program in ("", "none"):
        return None, int(parts[2])
    if not program.isdigit() or not 0 <= int(program) <= 127:
        raise ValueError(expected)
    return int(program), int(parts[2])


def check_source(spec: str, what: str) -> None:
    """A clear error when ``spec`` is neither a folder nor a rendered spec."""
    if parse_rendered(spec, what) is None and not os.path.isdir(spec):
        raise FileNotFoundError(f"{what}: {spec!r} is neither a folder nor 'rendered:<program>:<n>'")


def load_clips(spec: str, sampling_rate: int, seconds: float, seed: int, what: str, need_text: bool = False):
    """Audio for ``reference`` / ``heldout`` at the model's rate: ``(clips, texts or None)``.

    A folder with a metadata file (``metadata.jsonl``, ``.csv`` or ``.parquet``) goes through
    :func:`~musicpeft.data.dataset.load_audio_folder` (whole files as recorded, no normalisation; held-out
    files in chunks of at most 30 s); without one, every audio file in it is read (only for the reference:
    cross-entropy needs prompts). The second item is the dataset with the clips' captions (``text``) when the
    source has them (a folder with metadata or rendered clips), else None.
    """
    rendered = parse_rendered(spec, what)
    if rendered is not None:
        program, n = rendered
        data = make_rendered_dataset(n, seconds, sampling_rate, program=program, seed=seed)
    elif find_metadata(spec) is not None:
        data = load_audio_folder(spec, sample_rate=sampling_rate, chunk_seconds=30.0 if need_text else None,
                                 remainder="keep", normalize="none")
    elif need_text:
        raise FileNotFoundError(
            f"{what}: {spec} has no metadata file ({', '.join(METADATA_FILES)}); token cross-entropy needs each "
            "clip's prompt (one record per file with 'file_name' or 'path' and a caption such as 'text')"
        )
    else:
        files = sorted(name for name in os.listdir(spec) if name.lower().endswith(AUDIO_EXTENSIONS))
        if not files:
            raise FileNotFoundError(f"{what}: {spec} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
        return [load_audio(os.path.join(spec, name), sample_rate=sampling_rate)[0] for name in files], None
    clips = [np.asarray(row["audio"], dtype=np.float32) for row in data]
    return clips, data
