"""MusicGen (transformers' `MusicgenForConditionalGeneration`).

One prompt's path: processor -> `text_encoder` (T5 encoder; soft prompts and identifier tokens enter
here) -> `enc_to_dec_proj` -> every decoder layer's `encoder_attn` (cross-attention) -> `lm_heads`.
The top-level `attention_mask` masks the text encoder's output and the cross-attention keys.
"""

from __future__ import annotations

from .base import ModelFamily, TextEncoderSlot

_LAYERS = r"decoder\.model\.decoder\.layers\.\d+"

MUSICGEN = ModelFamily(
    name="musicgen",
    class_names=("MusicgenForConditionalGeneration",),
    model_types=("musicgen",),
    text_encoders=(TextEncoderSlot(name="t5", module="text_encoder", tokenizer="tokenizer"),),
    self_attention_value=_LAYERS + r"\.self_attn\.v_proj",
    cross_attention_key_value=_LAYERS + r"\.encoder_attn\.(k_proj|v_proj)",
    lora_presets={
        # Self-attention only.
        "self_attn": _LAYERS + r"\.self_attn\.(q_proj|k_proj|v_proj|out_proj)",
        # Self- and cross-attention projections.
        "attn": _LAYERS + r"\.(self_attn|encoder_attn)\.(q_proj|k_proj|v_proj|out_proj)",
        # The wider set of public MusicGen LoRA recipes: attention plus the feed-forward layers.
        "attn_mlp": _LAYERS + r"\.((self_attn|encoder_attn)\.(q_proj|k_proj|v_proj|out_proj)|fc1|fc2)",
    },
    full_finetune_module="decoder",
    extra={"mask_kwarg": "attention_mask"},
)
