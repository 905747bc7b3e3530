"""Tiny models, tokenizers and processors built in memory (random weights, no downloads).

They serve as the offline demo's default model and as the test suite's fixtures.
"""

from .audioldm2 import tiny_audioldm2_pipeline
from .clap import make_roberta_tokenizer, tiny_clap, tiny_clap_config, tiny_clap_processor
from .musicgen import tiny_musicgen, tiny_musicgen_config, tiny_musicgen_processor, tiny_musicgen_with_music
from .tokenizers import WORDS, make_t5_tokenizer

__all__ = [
    "make_roberta_tokenizer",
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
]
