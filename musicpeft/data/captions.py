"""Text prompts from music metadata records (one per audio file, as in the MusicGen fine-tuning paper).

Why: fine-tuning data comes as audio files plus one JSON object per file with fields such as
``key, artist, sample_rate, file_extension, description, duration, bpm, genre, title,
instrument, moods, path``. MusicGen was trained on descriptions enriched with such tags, so the
prompt is the description (or, in the datasets ``audiofolder`` convention,
``text`` / ``caption``) followed by ``field: value`` tags, in audiocraft's style
("Calm solo piano. genre: classical. key: C major. bpm: 72"). Technical fields (paths, rates,
durations) describe the file, not the music, and never enter the prompt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

# fields that describe the music, in prompt order; the description leads
CAPTION_FIELDS: tuple[str, ...] = ("title", "artist", "genre", "instrument", "moods", "key", "bpm")
TECHNICAL_FIELDS: tuple[str, ...] = ("path", "file_name", "sample_rate", "file_extension", "duration")
# the free-text prompt: audiocraft's "description", or the datasets `audiofolder` convention's "text" / "caption"
TEXT_FIELDS: tuple[str, ...] = ("description", "text", "caption")


def _text(value: object) -> str:
    """A metadata value as prompt text; '' when it carries nothing."""
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(value)) if value.is_integer() else f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(t for t in (_text(v) for v in value) if t)
    return str(value).strip()


def caption_from_metadata(record: Mapping, fields: Sequence[str] = CAPTION_FIELDS) -> str:
    """Build a prompt from one metadata record; missing or empty fields are skipped.

    Raises ``ValueError`` naming the record when it has neither a description nor any of ``fields``.
    """
    if not isinstance(record, Mapping):
        raise TypeError(f"caption_from_metadata: expected a mapping, got {type(record).__name__}: {record!r}")
    description = next((t for t in (_text(record.get(f)).rstrip(". ") for f in TEXT_FIELDS) if t), "")
    tags = [f"{name}: {text}" for name in fields if (text := _text(record.get(name)))]
    if not description and not tags:
        raise ValueError(
            f"caption_from_metadata: record {_name(record)} has no {', '.join(TEXT_FIELDS)} and none of the fields "
            f"{list(fields)}; cannot build a prompt"
        )
    return ". ".join(([description] if description else []) + tags)


def _name(record: Mapping) -> str:
    for key in ("file_name", "path", "key", "title"):
        if record.get(key):
            return f"{key}={record[key]!r}"
    return repr(dict(record))[:200]
