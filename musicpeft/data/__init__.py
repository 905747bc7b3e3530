"""Audio data for training and tests: rendering real scores, loading and chunking audio, captions."""

from .audio import (
    chunk,
    load_audio,
    loudness_normalize,
    mix_to_mono,
    peak_normalize,
    resample,
    to_mono,
    trim_silence,
)
from .captions import CAPTION_FIELDS, caption_from_metadata
from .dataset import default_caption, load_audio_folder, make_rendered_dataset
from .metadata import METADATA_FILES, find_metadata, load_metadata
from .render import corpus_pieces, render_clips, render_score, soundfont_path, stock_soundfont_path

__all__ = [
    "CAPTION_FIELDS",
    "METADATA_FILES",
    "caption_from_metadata",
    "chunk",
    "corpus_pieces",
    "default_caption",
    "find_metadata",
    "load_audio",
    "load_audio_folder",
    "load_metadata",
    "loudness_normalize",
    "make_rendered_dataset",
    "peak_normalize",
    "render_clips",
    "render_score",
    "resample",
    "soundfont_path",
    "stock_soundfont_path",
    "mix_to_mono",
    "to_mono",
    "trim_silence",
]
