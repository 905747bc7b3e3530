"""``datasets.Dataset`` builders: a folder of audio plus metadata, or rendered corpus clips.

Both give the columns the collators read: ``audio`` (1-D float32 array at the model's rate) and
``text`` (the prompt). The ``audio`` column is formatted as numpy, so a row hands the collator an
array instead of a Python list of a million floats.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from . import audio as audio_utils
from .captions import caption_from_metadata, load_metadata
from .render import render_clips


def _to_dataset(audios: list[np.ndarray], texts: list[str]):
    import datasets

    features = datasets.Features(
        {"audio": datasets.Sequence(datasets.Value("float32")), "text": datasets.Value("string")}
    )
    ds = datasets.Dataset.from_dict({"audio": audios, "text": texts}, features=features)
    ds.set_format("numpy", columns=["audio"], output_all_columns=True)
    return ds


def _audio_path(folder: Path, record: dict, metadata: Path, line: int) -> Path:
    """Where a record's audio lives: ``path``, relative to the folder unless absolute.

    ``key`` is the musical key in this metadata layout (audiocraft's), never a file name; a
    ``path`` without a suffix gets ``file_extension``.
    """
    if not record.get("path"):
        raise ValueError(f"{metadata}: record {line} has no 'path' naming its audio file")
    path = Path(str(record["path"]))
    if not path.suffix and record.get("file_extension"):
        path = path.with_suffix("." + str(record["file_extension"]).lstrip("."))
    return path if path.is_absolute() else folder / path


def load_audio_folder(
    folder: str | os.PathLike,
    metadata: str = "metadata.jsonl",
    sample_rate: int = 32000,
    chunk_seconds: float | None = 30.0,
    remainder: Literal["drop", "pad", "keep"] = "drop",
    normalize: Literal["peak", "loudness", "none"] = "peak",
    trim_silence: bool = False,
):
    """Load every file listed in ``folder/metadata`` (JSON lines) as mono ``sample_rate`` chunks.

    Each record names its file in ``path`` and gets its prompt from
    :func:`caption_from_metadata`; every chunk of a file carries that prompt. ``chunk_seconds=None``
    keeps whole files. A file shorter than one chunk yields nothing under ``remainder="drop"``.
    """
    folder = Path(folder)
    meta_path = folder / metadata
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: no metadata file (expected JSON lines, one record per audio file)")
    if normalize not in ("peak", "loudness", "none"):
        raise ValueError(f"load_audio_folder: normalize must be 'peak', 'loudness' or 'none', got {normalize!r}")
    audios: list[np.ndarray] = []
    texts: list[str] = []
    for line, record in enumerate(load_metadata(meta_path), start=1):
        text = caption_from_metadata(record)
        wav, _ = audio_utils.load_audio(_audio_path(folder, record, meta_path, line), sample_rate=sample_rate)
        if trim_silence:
            wav = audio_utils.trim_silence(wav)
        if normalize == "peak":
            wav = audio_utils.peak_normalize(wav)
        elif normalize == "loudness":
            wav = audio_utils.loudness_normalize(wav)
        pieces = [wav] if chunk_seconds is None else audio_utils.chunk(wav, sample_rate, chunk_seconds, remainder)
        audios.extend(pieces)
        texts.extend([text] * len(pieces))
    if not audios:
        raise ValueError(
            f"{meta_path}: no audio chunks of {chunk_seconds} s (files too short for remainder={remainder!r}?)"
        )
    return _to_dataset(audios, texts)


def default_caption(program: int | None) -> str:
    """The prompt of rendered clips: "classical music played on <General MIDI instrument>"."""
    if program is None:
        return "classical music"
    import pretty_midi

    return f"classical music played on {pretty_midi.program_to_instrument_name(program).lower()}"


def make_rendered_dataset(
    n: int,
    seconds: float,
    sample_rate: int,
    program: int | None = None,
    caption: str | Callable[[int], str] | None = None,
    seed: int = 0,
    composer: str | None = None,
):
    """``n`` rendered corpus clips (see :func:`render_clips`) with a prompt each.

    ``caption`` is one prompt for all clips, a function of the clip index, or ``None`` for
    :func:`default_caption` of the program.
    """
    clips = render_clips(n, seconds, sample_rate=sample_rate, program=program, seed=seed, composer=composer)
    if caption is None:
        texts = [default_caption(program)] * n
    elif callable(caption):
        texts = [str(caption(i)) for i in range(n)]
    else:
        texts = [caption] * n
    return _to_dataset(clips, texts)
