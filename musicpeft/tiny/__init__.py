"""Tiny models: random-weight builders (the test suite's fixtures) and trained ones shipped in the package.

The builders (``tiny_musicgen``, ``tiny_clap``, ...) make models in memory with random weights.
The loaders (``load_trained_musicgen``, ``load_trained_clap``, ``load_trained_codec``,
``load_instrument_classifier``) read small models trained on the micro-world
(:mod:`musicpeft.tiny.world`) from ``musicpeft/tiny/weights``; see docs/tiny_models.md.
"""

from .audioldm2 import tiny_audioldm2_pipeline
from .clap import make_roberta_tokenizer, tiny_clap, tiny_clap_config, tiny_clap_processor
from .musicgen import tiny_musicgen, tiny_musicgen_config, tiny_musicgen_processor, tiny_musicgen_with_music
from .tokenizers import WORDS, WORLD_WORDS, make_t5_tokenizer, make_world_t5_tokenizer
from .trained import (
    load_instrument_classifier,
    load_trained_clap,
    load_trained_codec,
    load_trained_musicgen,
    trained_clap_path,
    trained_classifier_path,
    trained_codec_path,
    trained_musicgen_path,
)

__all__ = [
    "load_instrument_classifier",
    "load_trained_clap",
    "load_trained_codec",
    "load_trained_musicgen",
    "make_roberta_tokenizer",
    "make_world_t5_tokenizer",
    "tiny_audioldm2_pipeline",
    "tiny_clap",
    "tiny_clap_config",
    "tiny_clap_processor",
    "WORDS",
    "make_t5_tokenizer",
    "tiny_musicgen",
    "tiny_musicgen_config",
    "tiny_musicgen_processor",
    "tiny_musicgen_with_music",
    "trained_clap_path",
    "trained_classifier_path",
    "trained_codec_path",
    "trained_musicgen_path",
    "WORLD_WORDS",
]
