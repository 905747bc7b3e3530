"""An `AudioLDM2Pipeline` shaped like cvssp/audioldm2-music, with random weights (no download).

For `perf.py --size small --audioldm2`: timing and memory depend on the shapes, not on the weights. The
shapes are those diffusers' conversion script (`scripts/convert_original_audioldm2_to_diffusers.py`,
`DEFAULT_CONFIG` and the configs it loads) gives the published checkpoints:

- CLAP text branch (`laion/clap-htsat-unfused`): RoBERTa-base, 12 layers x 768, projection 512; the audio
  branch with transformers' default HTSAT config (not run by training or generation);
- FLAN-T5-large encoder: 24 layers, d_model 1024, d_ff 2816 (gated GELU), 16 heads, vocabulary 32,128;
- GPT2 base (12 layers x 768, 8 new states per prompt) as a bare `GPT2Model`, the published layout
  (made to generate by `ensure_audioldm2_compat`);
- U-Net: model channels 128 x (1, 2, 3, 5), 2 residual blocks per level, transformer layers at the three
  lower resolutions, heads of 32 channels, cross-attention to GPT2 (768) and T5 (1024), 8 latent channels;
- VAE: 128 x (1, 2, 4) channels, 2 blocks per level, 8 latent channels, over 64-bin log-mels;
- HiFi-GAN vocoder: 1024 initial channels, upsampling 5 x 4 x 2 x 2 x 2 = 160 (the mel hop) at 16 kHz.

The tokenizers are musicpeft's in-memory ones (`musicpeft.tiny`): their ids lie inside both vocabularies,
and prompt lengths are what the timing depends on.
"""

from __future__ import annotations

from typing import Any

import torch

MODEL_CHANNELS = 128
CHANNEL_MULT = (1, 2, 3, 5)
HEAD_CHANNELS = 32
T5_MAX_LENGTH = 128  # hard-coded in the original implementation (the conversion script says so)


def audioldm2_shaped_components(seed: int = 0) -> dict[str, Any]:
    """The eleven components of the pipeline, random weights from `seed` (builds under `torch.device("meta")`)."""
    from diffusers import AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel, AutoencoderKL
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
        GPT2Config,
        GPT2Model,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        T5Config,
        T5EncoderModel,
    )

    from musicpeft.tiny.audioldm2 import _scheduler, make_roberta_tokenizer
    from musicpeft.tiny.tokenizers import make_t5_tokenizer

    torch.manual_seed(seed)
    clap = ClapModel(ClapConfig(text_config=ClapTextConfig().to_dict(), audio_config=ClapAudioConfig().to_dict(),
                                projection_dim=512))
    t5 = T5EncoderModel(T5Config(vocab_size=32128, d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_heads=16,
                                 feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1))
    gpt2_config = GPT2Config()
    gpt2_config.max_new_tokens = 8  # as in the published language_model/config.json
    gpt2 = GPT2Model(gpt2_config)
    channels = tuple(MODEL_CHANNELS * m for m in CHANNEL_MULT)
    streams = [None, gpt2_config.n_embd, t5.config.d_model]  # extra self-attention, then the two cross-attentions
    unet = AudioLDM2UNet2DConditionModel(
        sample_size=262, in_channels=8, out_channels=8, block_out_channels=channels, layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(streams,) * len(channels),
        attention_head_dim=tuple(c // HEAD_CHANNELS for c in channels),
    )
    vae = AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=8, block_out_channels=(128, 256, 512), layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, sample_size=1048,
    )
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=64, sampling_rate=16000, upsample_initial_channel=1024, upsample_rates=[5, 4, 2, 2, 2],
        upsample_kernel_sizes=[16, 16, 8, 4, 4], resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5]] * 3, normalize_before=False,
    ))
    tokenizer_2 = make_t5_tokenizer()
    tokenizer_2.model_max_length = T5_MAX_LENGTH
    return {
        "vae": vae,
        "text_encoder": clap,
        "text_encoder_2": t5,
        "projection_model": AudioLDM2ProjectionModel(
            text_encoder_dim=512, text_encoder_1_dim=t5.config.d_model, langauge_model_dim=gpt2_config.n_embd
        ),
        "language_model": gpt2,
        "tokenizer": make_roberta_tokenizer(model_max_length=77),
        "tokenizer_2": tokenizer_2,
        "feature_extractor": ClapFeatureExtractor(),
        "unet": unet,
        "scheduler": _scheduler(),
        "vocoder": vocoder,
    }


def audioldm2_shaped_pipeline(seed: int = 0) -> Any:
    """The pipeline with random weights from `seed`; every module in eval mode, its progress bar off."""
    from diffusers import AudioLDM2Pipeline

    from musicpeft.families.audioldm2_loading import ensure_audioldm2_compat

    pipe = ensure_audioldm2_compat(AudioLDM2Pipeline(**audioldm2_shaped_components(seed)))
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def component_sizes(components: dict[str, Any]) -> dict[str, int]:
    """Parameters per module (to check the shapes against the published 350 M U-Net, 1.1 B in all)."""
    return {
        name: sum(p.numel() for p in module.parameters())
        for name, module in components.items()
        if isinstance(module, torch.nn.Module)
    }
