"""AudioLDM2 (diffusers' `AudioLDM2Pipeline`).

One prompt's path through `AudioLDM2Pipeline.encode_prompt` and `__call__`:

1. `tokenizer` (Roberta) -> `text_encoder` (CLAP) `.get_text_features` -> one pooled, projected vector per
   prompt (the text branch pools the hidden state at position 0, the `<s>` token). Its mask is then
   replaced by `ones(batch, 1)`: nothing downstream sees CLAP's token mask.
2. `tokenizer_2` (T5) -> `text_encoder_2` (FLAN-T5 encoder) -> `prompt_embeds` `[batch, L, d_t5]` and the
   *tokenizer's* `attention_mask` `[batch, L]`. That one mask is used three times:
   a. `projection_model(hidden_states_1=prompt_embeds, attention_mask_1=mask)` adds learned SOS/EOS
      (mask becomes `[1, mask, 1]`) and concatenates after CLAP's `[SOS, clap, EOS]` (mask `[1, 1, 1]`);
   b. that projected sequence and mask go to `generate_language_model(..., attention_mask=...)`: GPT2
      extends the sequence by `max_new_tokens` (8) hidden states, appending a 1 to the mask per step
      (`_update_model_kwargs_for_generation`), and only the 8 new states are kept (`generated_prompt_embeds`);
   c. it is returned as `attention_mask` with `prompt_embeds`, repeated per waveform with
      `.view(batch * num_waveforms, prompt_embeds.shape[1])`, and passed to the U-Net as
      `encoder_attention_mask_1`.
3. Classifier-free guidance: the negative/empty prompt is tokenized by `tokenizer_2` with
   `padding="max_length", max_length=prompt_embeds.shape[1]` (the conditional T5 output length), encoded
   the same way, and concatenated in front of the conditional tensors (`torch.cat([negative, positive])`).
4. U-Net (`AudioLDM2UNet2DConditionModel`): each resolution has transformer layers in groups of
   `len(cross_attention_dim)` (3 in every published checkpoint: `[None, 768, 1024]`). In group position 0
   (dim `None`) both `attn1` and `attn2` are self-attention (an extra self-attention layer); at positions
   0-1 with a dim, `attn2` attends to `encoder_hidden_states` = the GPT2 `generated_prompt_embeds`, unmasked;
   at positions >= 2, `attn2` attends to `encoder_hidden_states_1` = the T5 `prompt_embeds`, masked by
   `encoder_attention_mask_1`. `attention_streams(unet)` computes this classification from a U-Net.

Consequence for a soft prompt that lengthens T5's output by N tokens: the mask that must grow is the one
`encode_prompt` gets from `tokenizer_2`, not one inside the encoder. If only the encoder output grows, step
2c fails (`view` of an `L`-long mask as `L + N`) and step 2a misaligns the GPT2 mask. See `T5_MASK_FLOW`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..tiny import tiny_audioldm2_pipeline
from .base import (
    LOSS_LATENT_DIFFUSION,
    CardSnippet,
    CrossAttentionStream,
    LoadedBase,
    ModelFamily,
    TextEncoderSlot,
    TrainingDefaults,
)

TINY_AUDIOLDM2 = "tiny-audioldm2"

# Module names are relative to the pipeline's `unet` (the adapted component), e.g.
# `down_blocks.0.attentions.4.transformer_blocks.0.attn2.to_k`.
_BLOCK = r"(down_blocks\.\d+|mid_block|up_blocks\.\d+)\.attentions\.{k}\.transformer_blocks\.\d+"
_PROJ = r"(to_q|to_k|to_v|to_out\.0)"
# Transformer index k within a block -> stream k % 3 for the published layout (3 per layer, at most 3
# layers per block since layers_per_block = 2). `check_unet_layout` verifies this on a given U-Net.
_EXTRA_SELF = _BLOCK.format(k="[036]")
_CROSS = _BLOCK.format(k="[124578]")
_ANY = _BLOCK.format(k=r"\d+")
_SELF_ATTN = rf"({_ANY}\.attn1|{_EXTRA_SELF}\.attn2)"
_CROSS_ATTN = rf"{_CROSS}\.attn2"

T5_MASK_FLOW: dict[str, str] = {
    "source": "AudioLDM2Pipeline.encode_prompt: text_inputs = tokenizer_2(prompt, padding=True, ...); "
    "attention_mask = text_inputs.attention_mask (the tokenizer's mask, never the encoder's)",
    "projection_model": "projection_model(hidden_states_1=t5_out, attention_mask_1=mask): the mask must have "
    "t5_out.shape[1] entries; SOS/EOS add a 1 on each side and CLAP's part [1, 1, 1] goes in front",
    "language_model": "generate_language_model(projected, attention_mask=projected_mask, max_new_tokens=8): "
    "appends a 1 per generated token; only the generated states reach the U-Net (no mask there)",
    "unet": "returned attention_mask -> .view(batch * num_waveforms, prompt_embeds.shape[1]) -> U-Net "
    "encoder_attention_mask_1, used by the T5-stream attn2 only",
    "guidance": "negative prompt: tokenizer_2(..., padding='max_length', max_length=prompt_embeds.shape[1]); "
    "its T5 output is concatenated with the conditional one, so both must have the same length",
    "soft_prompt": "to prepend N tokens at T5's input, the mask from tokenizer_2 must already have N more ones "
    "at the same place (e.g. N placeholder ids added at tokenization and replaced by the prompt in the "
    "encoder), or encode_prompt must be wrapped so that the conditional pass sees an extended mask and "
    "the unconditional pass runs the base encoder",
}


def attention_streams(unet: nn.Module) -> dict[str, list[str]]:
    """U-Net attention module names (`...attn1` / `...attn2`) grouped by what they attend to.

    Keys: `self` (self-attention: every `attn1`, and `attn2` of the dim-`None` transformers),
    `generated` (`attn2` over GPT2's generated states, `encoder_hidden_states`) and `t5` (`attn2` over
    the T5 states, `encoder_hidden_states_1`, masked by `encoder_attention_mask_1`). The grouping follows
    the U-Net blocks' `forward`: transformer `k` of a block uses `cross_attention_dim[k % n]`, and
    positions 0-1 read `encoder_hidden_states`, positions >= 2 `encoder_hidden_states_1`.
    """
    streams: dict[str, list[str]] = {"self": [], "generated": [], "t5": []}
    blocks = [(f"down_blocks.{i}", b) for i, b in enumerate(unet.down_blocks)]
    blocks += [("mid_block", unet.mid_block)] + [(f"up_blocks.{i}", b) for i, b in enumerate(unet.up_blocks)]
    for prefix, block in blocks:
        attentions = getattr(block, "attentions", None)
        dims = getattr(block, "cross_attention_dim", None)
        if not attentions or dims is None:
            continue
        for k, transformer in enumerate(attentions):
            idx = k % len(dims)
            for t, layer in enumerate(transformer.transformer_blocks):
                name = f"{prefix}.attentions.{k}.transformer_blocks.{t}"
                streams["self"].append(f"{name}.attn1")
                if getattr(layer, "attn2", None) is None:
                    continue
                stream = "self" if dims[idx] is None else ("generated" if idx <= 1 else "t5")
                streams[stream].append(f"{name}.attn2")
    return streams


def check_unet_layout(unet: nn.Module) -> None:
    """Raise if this U-Net's attention streams differ from what the family's regexes assume."""
    streams = attention_streams(unet)
    names = [n for n, _ in unet.named_modules()]
    by_regex = {
        "self": [n for n in names if re.fullmatch(_SELF_ATTN, n)],
        "cross": [n for n in names if re.fullmatch(_CROSS_ATTN, n)],
    }
    expected = {"self": sorted(streams["self"]), "cross": sorted(streams["generated"] + streams["t5"])}
    for kind in ("self", "cross"):
        if sorted(by_regex[kind]) != expected[kind]:
            dims = getattr(getattr(unet, "config", None), "cross_attention_dim", None)
            raise ValueError(
                f"AudioLDM2 U-Net layout not supported by the family regexes: its {kind}-attention modules "
                f"are {expected[kind][:4]}... but the regexes select {sorted(by_regex[kind])[:4]}... "
                f"(unet.config.cross_attention_dim={dims}; expected 3 transformers per layer as "
                f"[None, d_gpt2, d_t5] and layers_per_block <= 2, as in the published checkpoints)."
            )


@dataclass(frozen=True)
class AudioLDM2Family(ModelFamily):
    """AudioLDM2 pipelines: adapters go on the U-Net and the text encoders, one peft model per component."""

    def check_layout(self, module: nn.Module) -> None:
        check_unet_layout(module)

    def prepare(self, obj: Any) -> None:
        """Wrap a bare GPT2Model language model so that the pipeline generates under transformers 5."""
        from .audioldm2_loading import ensure_audioldm2_compat  # lazy: it imports diffusers (seconds)

        ensure_audioldm2_compat(obj)

    def load(self, source: str, device: str, dtype: torch.dtype) -> LoadedBase:
        if source in self.tiny_sources:
            pipe = tiny_audioldm2_pipeline(seed=0)
            if dtype != torch.float32:
                pipe.to(dtype=dtype)
        else:
            from .audioldm2_loading import load_audioldm2_pipeline  # lazy: it imports diffusers (seconds)

            pipe = load_audioldm2_pipeline(source, torch_dtype=dtype)
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return LoadedBase(self, pipe, None, int(pipe.vocoder.config.sampling_rate), source)

    def generate_clips(self, base: LoadedBase, model: Any, prompts: list[str], seeds: list[int], *,
                       seconds: float, guidance_scale: float, num_inference_steps: int = 200,
                       batch_size: int = 8) -> list[np.ndarray]:
        """Each prompt's initial latents come from its own generator; DDIM with `eta=0` adds no other noise."""
        length = int(round(seconds * base.sampling_rate))
        clips: list[np.ndarray] = []
        for start in range(0, len(prompts), batch_size):
            stop = min(start + batch_size, len(prompts))
            generators = [torch.Generator().manual_seed(s) for s in seeds[start:stop]]
            out = model(prompts[start:stop], audio_length_in_s=seconds, guidance_scale=guidance_scale,
                        num_inference_steps=num_inference_steps, generator=generators, num_waveforms_per_prompt=1)
            clips += [np.asarray(a, dtype=np.float32)[..., :length] for a in out.audios]
        return clips

    def unet_inputs(self, generated: torch.Tensor, t5: torch.Tensor, t5_mask: torch.Tensor | None,
                    dtype: torch.dtype) -> dict[str, torch.Tensor | None]:
        """The U-Net's conditioning keywords for `encode_prompt`'s outputs (GPT2 states, T5 states and mask)."""
        streams = self.cross_attention_streams
        return {
            streams["generated"].kwarg: generated.to(dtype),
            streams["t5"].kwarg: t5.to(dtype),
            streams["t5"].mask_kwarg: t5_mask,
        }


# The paper's AudioLDM2 recipe: 30 epochs, batch 16, AdamW at 5e-5, 163,840-sample (10.24 s at 16 kHz) clips.
# The accelerate loop keeps no optimizer state between runs, so a run cannot resume.
AUDIOLDM2_TRAINING = TrainingDefaults(
    loss=LOSS_LATENT_DIFFUSION, clip_seconds=10.24, learning_rate=5e-5, batch_size=16, epochs=30, resumable=False
)

AUDIOLDM2 = AudioLDM2Family(
    name="audioldm2",
    class_names=("AudioLDM2Pipeline",),
    text_encoders=(
        # FLAN-T5: one state per token, the conditioning a soft prompt goes into.
        # (TTS checkpoints put a VitsModel here instead; it does not take a soft prompt.)
        TextEncoderSlot(name="t5", module="text_encoder_2", tokenizer="tokenizer_2", component_inner_module="encoder"),
        # CLAP's text branch: pooled at position 0 (`<s>`), so a soft prompt must go after that token.
        TextEncoderSlot(
            name="clap",
            module="text_encoder.text_model",
            tokenizer="tokenizer",
            takes_soft_prompt_by_default=False,
            prompt_insert_at=1,
        ),
    ),
    # Every self-attention value projection: attn1 everywhere and attn2 of the extra self-attention layers.
    self_attention_value=rf"{_SELF_ATTN}\.to_v",
    # Both cross-attention streams (GPT2 states and T5 states).
    cross_attention_key_value=rf"{_CROSS_ATTN}\.(to_k|to_v)",
    lora_presets={
        "self_attn": rf"{_SELF_ATTN}\.{_PROJ}",
        "cross_attn": rf"{_CROSS_ATTN}\.{_PROJ}",
        "attn": rf"{_ANY}\.(attn1|attn2)\.{_PROJ}",
        "attn_ff": rf"{_ANY}\.((attn1|attn2)\.{_PROJ}|ff\.net\.0\.proj|ff\.net\.2)",
    },
    lora_preset_descriptions={
        "self_attn": "U-Net self-attention q/k/v/out (attn1, and attn2 of the extra self-attention layers)",
        "cross_attn": "U-Net cross-attention q/k/v/out over the GPT2 and the T5 streams (attn2)",
        "attn": "all U-Net attention q/k/v/out (attn1 + attn2): the usual diffusers LoRA targets",
        "attn_ff": "all U-Net attention q/k/v/out plus the transformer feed-forward layers",
    },
    full_finetune_module="unet",
    # The regexes above are relative to this pipeline component, not to the pipeline.
    adapted_component="unet",
    adapted_component_classes=("AudioLDM2UNet2DConditionModel",),
    mask_kwarg="encoder_attention_mask_1",
    masked_text_encoder="t5",
    # Which U-Net keyword each cross-attention stream reads, and which mask goes with it.
    cross_attention_streams={
        "generated": CrossAttentionStream(kwarg="encoder_hidden_states", source="language_model (GPT2), 8 states",
                                          mask_kwarg=None, regex=rf"{_BLOCK.format(k='[147]')}\.attn2"),
        "t5": CrossAttentionStream(kwarg="encoder_hidden_states_1", source="text_encoder_2 (FLAN-T5) prompt_embeds",
                                   mask_kwarg="encoder_attention_mask_1", regex=rf"{_BLOCK.format(k='[258]')}\.attn2"),
    },
    tiny_sources=(TINY_AUDIOLDM2,),
    name_hints=("audioldm",),
    guidance_scale=3.5,
    training=AUDIOLDM2_TRAINING,
    card=CardSnippet("from diffusers import AudioLDM2Pipeline", "pipe", "AudioLDM2Pipeline.from_pretrained({base})"),
)
