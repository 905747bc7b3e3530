"""A tiny AudioLDM2 pipeline built from configs with random weights: no Hub, no downloads.

It keeps the wiring of the published checkpoints (cvssp/audioldm2, audioldm2-music) so that code written
against it runs unchanged on the real thing; only the widths shrink:

- CLAP (`text_encoder`, text + audio branches) -> one pooled vector per prompt, width `CLAP_DIM`;
- T5 encoder (`text_encoder_2`) -> one vector per token, width `T5_DIM` (FLAN-T5-large: 1024);
- `projection_model` maps both to the language-model width and adds SOS/EOS embeddings;
- GPT2 (`language_model`) generates 8 hidden states from them, width `GPT2_DIM` (768 in the real model);
- the U-Net's transformer layers come in threes per resolution, as in the published U-Net
  (`cross_attention_dim=[None, GPT2_DIM, T5_DIM]`): an extra self-attention layer, cross-attention to the
  GPT2 states, cross-attention to the T5 states;
- the VAE has three blocks (scale factor 4, 8 latent channels in the real model, 4 here) over log-mel
  spectrograms `[batch, 1, frames, n_mels]`;
- the SpeechT5HifiGan vocoder turns 16 kHz log-mels with a hop of 160 samples (the real upsampling
  product) back into waveforms, with 32 mel bins instead of 64.

Default generation length: `unet.sample_size` (32 latent frames) x 4 x 160 / 16000 = 1.28 s.
"""

from __future__ import annotations

from typing import Any

import torch

from .clap import make_roberta_tokenizer as _clap_roberta_tokenizer
from .tokenizers import make_t5_tokenizer

# Widths chosen all different so that a mis-wired tensor fails loudly instead of broadcasting.
CLAP_DIM = 16
T5_DIM = 32
GPT2_DIM = 24
N_MELS = 32
SAMPLING_RATE = 16000
HOP_LENGTH = 160
CLAP_MAX_LENGTH = 32
T5_MAX_LENGTH = 64
LANGUAGE_MODEL_CLASSES = ("GPT2LMHeadModel", "GPT2Model")


def make_roberta_tokenizer(model_max_length: int = CLAP_MAX_LENGTH):
    """The in-memory Roberta tokenizer of the tiny CLAP (`musicpeft.tiny.clap`), at this pipeline's length."""
    return _clap_roberta_tokenizer(model_max_length=model_max_length)


def _clap(vocab_size: int):
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig

    text = ClapTextConfig(
        vocab_size=vocab_size, hidden_size=CLAP_DIM, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=CLAP_MAX_LENGTH + 48, projection_dim=CLAP_DIM,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
    )
    # The audio branch only ranks waveforms when several are generated per prompt (`score_waveforms`).
    audio = ClapAudioConfig(
        spec_size=64, window_size=4, num_mel_bins=64, intermediate_size=32, depths=[2, 2],
        num_attention_heads=[2, 2], num_hidden_layers=2, hidden_size=192, projection_dim=CLAP_DIM,
        patch_size=2, patch_stride=2, patch_embed_input_channels=4, layer_norm_eps=1e-5,
    )
    model = ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=CLAP_DIM))
    # 48 kHz and 64 mel bins as the real CLAP; a long hop keeps the fused spectrogram within spec_size.
    extractor = ClapFeatureExtractor(feature_size=64, sampling_rate=48000, hop_length=7900, max_length_s=10)
    return model, extractor


def _language_model(cls_name: str):
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

    if cls_name not in LANGUAGE_MODEL_CLASSES:
        raise ValueError(f"language_model_class must be one of {LANGUAGE_MODEL_CLASSES}, got {cls_name!r}.")
    config = GPT2Config(
        n_embd=GPT2_DIM, n_head=2, n_layer=2, vocab_size=64, n_positions=128, n_inner=48,
        bos_token_id=0, eos_token_id=0,
    )
    config.max_new_tokens = 8  # as in the published language_model/config.json
    cls = GPT2LMHeadModel if cls_name == "GPT2LMHeadModel" else GPT2Model
    return cls(config)


def _unet():
    from diffusers import AudioLDM2UNet2DConditionModel

    streams = [None, GPT2_DIM, T5_DIM]
    return AudioLDM2UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=(streams, streams), attention_head_dim=2, norm_num_groups=8,
    )


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=4, block_out_channels=(8, 16, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        norm_num_groups=4, sample_size=128, scaling_factor=0.5,
    )


def _vocoder():
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    # Upsampling product 4 * 4 * 10 = 160 = the mel hop; kernel = 2 x rate keeps lengths exact.
    config = SpeechT5HifiGanConfig(
        model_in_dim=N_MELS, sampling_rate=SAMPLING_RATE, upsample_initial_channel=16,
        upsample_rates=[4, 4, 10], upsample_kernel_sizes=[8, 8, 20], resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]], normalize_before=False,
    )
    return SpeechT5HifiGan(config)


def _scheduler():
    from diffusers import DDIMScheduler

    # The published AudioLDM2 scheduler settings.
    return DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
    )


def tiny_audioldm2_components(seed: int = 0, language_model_class: str = "GPT2LMHeadModel") -> dict[str, Any]:
    """The eleven components of an `AudioLDM2Pipeline`, tiny and randomly initialised."""
    from diffusers import AudioLDM2ProjectionModel
    from transformers import T5Config, T5EncoderModel

    tokenizer = make_roberta_tokenizer()
    tokenizer_2 = make_t5_tokenizer()
    # The pipeline truncates T5 input at `model_max_length` (512 for FLAN-T5); the word-list tokenizer has none.
    tokenizer_2.model_max_length = T5_MAX_LENGTH
    torch.manual_seed(seed)
    text_encoder, feature_extractor = _clap(len(tokenizer))
    text_encoder_2 = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer_2), d_model=T5_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                 pad_token_id=0, eos_token_id=1)
    )
    projection_model = AudioLDM2ProjectionModel(
        text_encoder_dim=CLAP_DIM, text_encoder_1_dim=T5_DIM, langauge_model_dim=GPT2_DIM
    )
    return {
        "vae": _vae(),
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "projection_model": projection_model,
        "language_model": _language_model(language_model_class),
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "feature_extractor": feature_extractor,
        "unet": _unet(),
        "scheduler": _scheduler(),
        "vocoder": _vocoder(),
    }


def tiny_audioldm2_pipeline(seed: int = 0, language_model_class: str = "GPT2LMHeadModel"):
    """A randomly initialised tiny `AudioLDM2Pipeline` (all modules in eval mode, progress bar off).

    `language_model_class="GPT2Model"` reproduces the layout of the published checkpoints, whose
    language model cannot generate under transformers 5 until
    `musicpeft.families.audioldm2_loading.ensure_audioldm2_compat` is applied; the default `GPT2LMHeadModel`
    is what diffusers' pipeline itself declares and works as is.
    """
    from diffusers import AudioLDM2Pipeline

    pipe = AudioLDM2Pipeline(**tiny_audioldm2_components(seed, language_model_class))
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe
