"""``datasets.Dataset`` builders: a folder of audio plus metadata, or rendered corpus clips.

Both give the columns the collators read: ``audio`` (1-D float32 array at the model's rate) and
``text`` (the prompt). The ``audio`` column is formatted as numpy, so a row hands the collator an
array instead of a Python list of a million floats.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from . import audio as audio_utils
from .captions import caption_from_metadata
from .metadata import METADATA_FILES, find_metadata, read_metadata_lines
from .render import render_clips

log = logging.getLogger(__name__)


def _to_dataset(audios: list[np.ndarray], texts: list[str]):
    import datasets

    features = datasets.Features(
        {"audio": datasets.Sequence(datasets.Value("float32")), "text": datasets.Value("string")}
    )
    ds = datasets.Dataset.from_dict({"audio": audios, "text": texts}, features=features)
    ds.set_format("numpy", columns=["audio"], output_all_columns=True)
    return ds


def _audio_path(folder: Path, record: dict, metadata: Path, line: int) -> Path:
    """Where a record's audio lives: ``file_name`` (the datasets ``audiofolder`` convention) or ``path``
    (audiocraft's), relative to the folder unless absolute.

    ``key`` is the musical key in audiocraft's layout, never a file name; a ``path`` without a suffix gets
    ``file_extension``.
    """
    name = record.get("file_name") or record.get("path")
    if not name or not isinstance(name, str):
        raise ValueError(f"{metadata}:{line}: the record has no 'file_name' (or 'path') naming its audio file")
    path = Path(name)
    if not path.suffix and record.get("file_extension"):
        path = path.with_suffix("." + str(record["file_extension"]).lstrip("."))
    return path if path.is_absolute() else folder / path


def _load_row(folder: Path, record: dict, meta_path: Path, line: int, sample_rate: int, trim_silence: bool,
              normalize: str) -> tuple[np.ndarray, str]:
    """One metadata row's prompt and prepared audio; ``ValueError`` naming the row or file when unusable."""
    path = _audio_path(folder, record, meta_path, line)
    try:
        text = caption_from_metadata(record)
    except ValueError as e:
        raise ValueError(f"{meta_path}:{line}: {e}") from e
    if not path.is_file():
        raise ValueError(f"{path}: no such audio file ({meta_path}:{line})")
    wav, _ = audio_utils.load_audio(path, sample_rate=sample_rate)
    if trim_silence:
        wav = audio_utils.trim_silence(wav)
    if normalize == "peak":
        wav = audio_utils.peak_normalize(wav)
    elif normalize == "loudness":
        wav = audio_utils.loudness_normalize(wav)
    return wav, text


def load_audio_folder(
    folder: str | os.PathLike,
    metadata: str | None = None,
    sample_rate: int = 32000,
    chunk_seconds: float | None = 30.0,
    remainder: Literal["drop", "pad", "keep"] = "drop",
    normalize: Literal["peak", "loudness", "none"] = "peak",
    trim_silence: bool = False,
):
    """Load every file listed in the folder's metadata as mono ``sample_rate`` chunks.

    The metadata is ``folder/metadata`` when given, else whichever of ``metadata.jsonl``, ``metadata.csv`` and
    ``metadata.parquet`` (the datasets ``audiofolder`` names) the folder holds. Each record names its file in
    ``file_name`` (the datasets ``audiofolder`` convention) or ``path`` (audiocraft's) and gets its prompt from
    :func:`caption_from_metadata` (``text``, ``caption`` or ``description`` plus musical tags); every chunk of a
    file carries that prompt. ``chunk_seconds=None`` keeps whole files. A file shorter than one chunk yields
    nothing under ``remainder="drop"``.

    A row that cannot be used (bad JSON or CSV, no file name or caption, a missing or unreadable file, NaN/Inf
    samples) is skipped and reported by name in a warning, so one bad file never stops a run; the
    dataset's ``info.description`` lists them too. No usable chunk at all is an error listing why.
    """
    folder = Path(folder)
    meta_path = folder / metadata if metadata is not None else find_metadata(folder)
    if meta_path is None or not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path or folder}: no metadata file (expected {' or '.join(METADATA_FILES)}, "
                                "one record per audio file)")
    if normalize not in ("peak", "loudness", "none"):
        raise ValueError(f"load_audio_folder: normalize must be 'peak', 'loudness' or 'none', got {normalize!r}")
    audios: list[np.ndarray] = []
    texts: list[str] = []
    skipped: list[str] = []
    for line, record, problem in read_metadata_lines(meta_path):
        if record is None:
            skipped.append(str(problem))
            continue
        try:
            wav, text = _load_row(folder, record, meta_path, line, sample_rate, trim_silence, normalize)
        except ValueError as e:
            skipped.append(str(e))
            continue
        pieces = [wav] if chunk_seconds is None else audio_utils.chunk(wav, sample_rate, chunk_seconds, remainder)
        audios.extend(pieces)
        texts.extend([text] * len(pieces))
    if skipped:
        log.warning("load_audio_folder: skipped %d row(s) of %s:\n  %s", len(skipped), meta_path,
                    "\n  ".join(skipped))
    if not audios:
        why = f"; skipped rows: {'; '.join(skipped)}" if skipped else ""
        raise ValueError(
            f"{meta_path}: no audio chunks of {chunk_seconds} s (files too short for remainder={remainder!r}?){why}"
        )
    dataset = _to_dataset(audios, texts)
    if skipped:
        dataset.info.description = f"skipped {len(skipped)} unusable row(s): " + "; ".join(skipped)
    return dataset


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
