"""A tiny CLAP (ClapModel + ClapProcessor) built from configs with random weights: the metric tests' fixture.

Why in memory: the tests and the offline demo must never reach the Hub, and in transformers 5 a
tokenizer "loaded" offline by name can come back near-empty without raising. The byte-level BPE
tokenizer here is built from a word list, so every prompt used in tests tokenizes to real ids.

The audio side is shaped like transformers' own CLAP test configuration: 16 mel bins, a 64x64
spectrogram "image" and two Swin stages, fed by a feature extractor at 16 kHz whose 4 s window
fits the model's 256-frame input exactly.
"""

from __future__ import annotations

import json

import torch

from .tokenizers import WORDS

SAMPLING_RATE = 16000
MAX_LENGTH_S = 4
_EXTRA_WORDS = ("concept", "sks", "style", "instrument", "sound")
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def roberta_vocab_and_merges(words=WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary trained (deterministically) on the word list, with and without a leading space.

    Every word becomes one token both at the start of a prompt ("piano") and after a space
    ("Ġpiano"); the 256 byte symbols are always in the vocabulary, so any other text still
    tokenizes, byte by byte.
    """
    from tokenizers import ByteLevelBPETokenizer

    lines: list[str] = []
    for word in list(words) + list(_EXTRA_WORDS):
        lines += [word, "the " + word] * 3
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        lines, vocab_size=5000, min_frequency=1, special_tokens=list(_SPECIALS), show_progress=False
    )
    model = json.loads(bpe._tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def make_roberta_tokenizer(model_max_length: int = 62):
    """A RobertaTokenizer built in memory from :func:`roberta_vocab_and_merges` (no files, no Hub)."""
    from transformers import RobertaTokenizer

    vocab, merges = roberta_vocab_and_merges()
    tok = RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
    if len(tok) != len(vocab):
        raise RuntimeError(f"tiny RoBERTa tokenizer has {len(tok)} tokens, expected {len(vocab)}")
    return tok


def tiny_clap_config(projection_dim: int = 16, enable_fusion: bool = False):
    """ClapConfig of a CLAP small enough to embed a few seconds of audio on CPU in milliseconds."""
    from transformers import ClapConfig

    vocab_size = len(roberta_vocab_and_merges()[0])
    text = dict(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, max_position_embeddings=64, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )
    audio = dict(
        num_mel_bins=16, spec_size=64, window_size=4, patch_size=2, patch_stride=2, hidden_size=64,
        depths=[1, 1], num_attention_heads=[2, 2], patch_embeds_hidden_size=32, enable_fusion=enable_fusion,
    )
    return ClapConfig(text_config=text, audio_config=audio, projection_dim=projection_dim)


def tiny_clap(seed: int = 0, **kwargs):
    """A randomly initialised tiny ClapModel in eval mode (deterministic for a given seed)."""
    from transformers import ClapModel

    torch.manual_seed(seed)
    return ClapModel(tiny_clap_config(**kwargs)).eval()


def tiny_clap_feature_extractor(truncation: str = "rand_trunc"):
    """ClapFeatureExtractor at 16 kHz with 16 mel bins and a 4 s window (251 frames <= the model's 256)."""
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(
        feature_size=16, sampling_rate=SAMPLING_RATE, hop_length=256, max_length_s=MAX_LENGTH_S,
        fft_window_size=512, frequency_min=50, frequency_max=8000, truncation=truncation, padding="repeatpad",
    )


def tiny_clap_processor(truncation: str = "rand_trunc"):
    """ClapProcessor = tiny in-memory RoBERTa tokenizer + :func:`tiny_clap_feature_extractor`."""
    from transformers import ClapProcessor

    return ClapProcessor(feature_extractor=tiny_clap_feature_extractor(truncation), tokenizer=make_roberta_tokenizer())
