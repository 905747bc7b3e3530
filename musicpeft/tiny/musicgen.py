"""A tiny MusicGen built from configs with random weights: the demo's default model and the tests' fixture."""

from __future__ import annotations

import torch

from ..data.render import render_clips
from .tokenizers import make_t5_tokenizer


def tiny_musicgen_config(text_width: int = 32, decoder_width: int = 32, num_codebooks: int = 4):
    """Config of a MusicGen small enough to train on CPU in seconds."""
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    vocab = len(make_t5_tokenizer())
    text = T5Config(
        vocab_size=vocab,
        d_model=text_width,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    audio = EncodecConfig(
        sampling_rate=16000,
        audio_channels=1,
        num_filters=4,
        hidden_size=16,
        codebook_size=64,
        codebook_dim=16,
        upsampling_ratios=[8, 5, 4],
        num_lstm_layers=1,
        target_bandwidths=[2.4],
        chunk_length_s=None,
        overlap=None,
        normalize=False,
        compress=2,
        kernel_size=7,
        last_kernel_size=7,
        residual_kernel_size=3,
        dilation_growth_rate=2,
        use_causal_conv=False,
        pad_mode="reflect",
        trim_right_ratio=1.0,
        codebook_dim_override=None,
    )
    decoder = MusicgenDecoderConfig(
        vocab_size=64,
        max_position_embeddings=512,
        num_hidden_layers=2,
        ffn_dim=64,
        num_attention_heads=4,
        hidden_size=decoder_width,
        num_codebooks=num_codebooks,
        pad_token_id=64,
        bos_token_id=64,
        decoder_start_token_id=64,
        audio_channels=1,
        initializer_factor=0.1,  # std 0.1 rather than 0.02, so a random decoder listens to its text
    )
    from ..families.musicgen_config_notes import musicgen_config_notes_hidden  # lazy: families import this module

    with musicgen_config_notes_hidden():
        cfg = MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder)
    cfg.decoder_start_token_id = 64
    cfg.pad_token_id = 64
    return cfg


def tiny_musicgen(seed: int = 0, **kwargs):
    """A randomly initialised tiny MusicgenForConditionalGeneration (eval mode)."""
    from transformers import MusicgenForConditionalGeneration

    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(tiny_musicgen_config(**kwargs))
    model.generation_config.decoder_start_token_id = 64
    model.generation_config.pad_token_id = 64
    model.generation_config.bos_token_id = 64
    model.generation_config.max_length = 64
    return model.eval()


def tiny_musicgen_processor():
    """MusicgenProcessor = tiny T5 tokenizer + EnCodec feature extractor at the tiny model's rate."""
    from transformers import EncodecFeatureExtractor, MusicgenProcessor

    fe = EncodecFeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0)
    return MusicgenProcessor(feature_extractor=fe, tokenizer=make_t5_tokenizer())


def tiny_musicgen_with_music(seed: int = 0):
    """`tiny_musicgen` whose EnCodec codebooks are seeded from rendered piano music.

    A config-built EnCodec has all-zero codebooks, so every frame encodes to code 0; seeded from real
    audio (EnCodec's own k-means idea), codes follow the music and token losses mean something.
    """
    model = tiny_musicgen(seed)
    rate = model.config.audio_encoder.sampling_rate
    # lazy: training imports families, and the families import these tiny builders for their tiny sources
    from ..training.collator import init_codebooks_from_audio

    init_codebooks_from_audio(model, render_clips(4, 1.0, sample_rate=rate, program=0), seed=0)
    return model
