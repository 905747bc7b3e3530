"""Tiny MusicGen-Melody and stereo MusicGen with random weights: the fixtures of the melody and stereo families.

Both reuse the tiny MusicGen's text encoder, codec and decoder sizes (`tiny_musicgen_config`) and its
tokenizer (`make_t5_tokenizer`), so they build in well under a second on CPU and load offline. Text
prompts need only that tokenizer: `MusicgenMelodyProcessor` adds a chroma extractor for melody prompts,
which needs torchaudio.

* MusicGen-Melody (`MusicgenMelodyForConditionalGeneration`): the projected text states (and the chroma
  of an optional melody) are prepended to the decoder's input; there is no cross-attention. The text
  width (24) differs from the decoder width (32), so the model has its `enc_to_dec_proj`, as every
  published checkpoint has (T5-base 768 -> 1536 / 2048).
* Stereo MusicGen (`MusicgenForConditionalGeneration` with `audio_channels=2`): twice the codebooks, the
  left channel's and the right channel's interleaved (codebook 2k is the left channel's k-th, 2k+1 the
  right's), decoded by a mono codec channel by channel.
"""

from __future__ import annotations

import torch

from .musicgen import tiny_musicgen_config

_TEXT_WIDTH = 24
_NUM_CHROMA = 12
_CHROMA_LENGTH = 8


def _audible_codebooks(model, seed: int):
    """Fill the config-built EnCodec's all-zero codebooks with seeded random vectors (in place).

    transformers initialises EnCodec codebooks to zeros, so every code would decode to the same sound and
    every clip would be the same whatever was sampled; with distinct vectors a clip follows its codes.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            book = layer.codebook
            values = torch.randn(book.embed.shape, generator=generator)
            book.embed.copy_(values)
            book.embed_avg.copy_(values)
            book.cluster_size.fill_(1.0)
    return model


def _set_generation_tokens(model, max_length: int = 64):
    start = model.config.decoder.pad_token_id
    model.generation_config.decoder_start_token_id = start
    model.generation_config.pad_token_id = start
    model.generation_config.bos_token_id = start
    model.generation_config.max_length = max_length
    return model


def tiny_musicgen_melody_config(num_codebooks: int = 4, audio_channels: int = 1):
    """Config of a MusicGen-Melody as small as the tiny MusicGen (text width 24, decoder width 32)."""
    from transformers import MusicgenMelodyConfig, MusicgenMelodyDecoderConfig

    base = tiny_musicgen_config(text_width=_TEXT_WIDTH, num_codebooks=num_codebooks)
    decoder = base.decoder.to_dict()
    for key in ("model_type", "transformers_version", "architectures"):
        decoder.pop(key, None)
    decoder["audio_channels"] = audio_channels
    cfg = MusicgenMelodyConfig(
        text_encoder=base.text_encoder.to_dict(),
        audio_encoder=base.audio_encoder.to_dict(),
        decoder=MusicgenMelodyDecoderConfig(**decoder).to_dict(),
        num_chroma=_NUM_CHROMA,
        chroma_length=_CHROMA_LENGTH,
    )
    cfg.decoder_start_token_id = base.decoder.pad_token_id
    cfg.pad_token_id = base.decoder.pad_token_id
    return cfg


def tiny_musicgen_melody(seed: int = 0, **kwargs):
    """A randomly initialised tiny `MusicgenMelodyForConditionalGeneration` with audible codebooks (eval mode)."""
    from transformers import MusicgenMelodyForConditionalGeneration

    torch.manual_seed(seed)
    model = MusicgenMelodyForConditionalGeneration(tiny_musicgen_melody_config(**kwargs))
    return _audible_codebooks(_set_generation_tokens(model), seed).eval()


def tiny_musicgen_stereo_config(codebooks_per_channel: int = 4):
    """Config of a stereo tiny MusicGen: `audio_channels=2`, `2 * codebooks_per_channel` interleaved codebooks."""
    cfg = tiny_musicgen_config(num_codebooks=2 * codebooks_per_channel)
    cfg.decoder.audio_channels = 2
    return cfg


def tiny_musicgen_stereo(seed: int = 0, **kwargs):
    """A randomly initialised tiny stereo `MusicgenForConditionalGeneration` with audible codebooks (eval mode)."""
    from transformers import MusicgenForConditionalGeneration

    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(tiny_musicgen_stereo_config(**kwargs))
    return _audible_codebooks(_set_generation_tokens(model), seed).eval()
