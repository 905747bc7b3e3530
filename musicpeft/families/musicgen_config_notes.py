"""Hide transformers' false alarm about MusicGen's special token ids, and nothing else.

MusicGen's decoder embeds `vocab_size + 1` ids: its pad / bos / decoder-start id is `vocab_size` (2048 in
facebook/musicgen-small), and transformers' `MusicgenDecoderConfig` accepts that. The composite
`MusicgenConfig` (and `MusicgenMelodyConfig`) of transformers 5 runs the generic check instead, so loading or
building any MusicGen prints three warnings such as "Model config: pad_token_id must be `None` or an integer
within the vocabulary (between 0 and 2047), got 2048. This may result in unexpected behavior." They were the
first lines of `musicpeft demo`. Only a note raised by `validate_token_ids` of a MusicGen config for an id equal
to the vocabulary size is dropped; every other config note passes.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

CONFIG_LOGGER = "transformers.configuration_utils"
MUSICGEN_CONFIG_TYPES = ("musicgen", "musicgen_melody")
_NOTE = re.compile(
    r"Model config: \w+_token_id must be `None` or an integer within the vocabulary "
    r"\(between 0 and (?P<last>-?\d+)\), got (?P<value>-?\d+)\."
)


def _raised_by_musicgen_config(max_depth: int = 16) -> bool:
    """Whether the record being filtered comes from `validate_token_ids` of a MusicGen config."""
    frame = sys._getframe(2)
    for _ in range(max_depth):
        if frame is None:
            return False
        if frame.f_code.co_name == "validate_token_ids":
            return getattr(frame.f_locals.get("self"), "model_type", None) in MUSICGEN_CONFIG_TYPES
        frame = frame.f_back
    return False


class MusicgenTokenIdNoteFilter(logging.Filter):
    """Drops the note for an id equal to the vocabulary size raised by a MusicGen config; passes every other record."""

    def filter(self, record: logging.LogRecord) -> bool:
        match = _NOTE.match(record.getMessage())
        if match is None or int(match["value"]) != int(match["last"]) + 1:
            return True
        return not _raised_by_musicgen_config()


@contextmanager
def musicgen_config_notes_hidden() -> Iterator[None]:
    """Within the block, transformers' config logger drops the MusicGen false alarm described above."""
    logger = logging.getLogger(CONFIG_LOGGER)
    note_filter = MusicgenTokenIdNoteFilter()
    logger.addFilter(note_filter)
    try:
        yield
    finally:
        logger.removeFilter(note_filter)
