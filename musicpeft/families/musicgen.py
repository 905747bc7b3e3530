"""MusicGen (transformers' `MusicgenForConditionalGeneration`).

One prompt's path: processor -> `text_encoder` (T5 encoder; soft prompts and identifier tokens enter
here) -> `enc_to_dec_proj` -> every decoder layer's `encoder_attn` (cross-attention) -> `lm_heads`.
The top-level `attention_mask` masks the text encoder's output and the cross-attention keys.

Generation (`MusicgenFamily.generate_clips`): prompt `i` is drawn with its own generator seeded
`seeds[i]`: `PromptSeededSampler` draws every prompt's next codes (one per codebook, per step) from that
prompt's `torch.Generator`, after classifier-free guidance and the generation config's temperature /
top-k / top-p, exactly where `generate` would sample, so a prompt's clip does not depend on its batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from ..tiny import tiny_musicgen_processor, tiny_musicgen_with_music, trained_musicgen_path
from .base import (
    LOSS_CODEC_TOKENS,
    CardSnippet,
    LoadedBase,
    ModelFamily,
    TextEncoderSlot,
    TrainingDefaults,
    unwrap_peft,
)

TINY_MUSICGEN = "tiny-musicgen"
# The shipped tiny MusicGen trained on the micro-world (musicpeft.tiny.trained); the demo's base.
TINY_MUSICGEN_TRAINED = "tiny-musicgen-trained"

_LAYERS = r"decoder\.model\.decoder\.layers\.\d+"

# The soft-prompt and LoRA papers' recipe: 10 s clips, batch 32, learning rate 1e-5, up to 100 epochs.
MUSICGEN_TRAINING = TrainingDefaults(
    loss=LOSS_CODEC_TOKENS, clip_seconds=10.0, learning_rate=1e-5, batch_size=32, epochs=100, resumable=True
)


@dataclass(frozen=True)
class MusicgenFamily(ModelFamily):
    """A MusicGen-style model: a T5 text encoder, an EnCodec codec and a codebook decoder, one `nn.Module`."""

    # The transformers class that loads a checkpoint of the family.
    model_class: str = "MusicgenForConditionalGeneration"

    def transformers_class(self) -> type:
        """The transformers class named by `model_class`."""
        import transformers  # lazy: only the class named by the family is looked up

        return getattr(transformers, self.model_class)

    def load_processor(self, path: str) -> Any:
        """The checkpoint's processor (its tokenizer reads the prompts)."""
        from transformers import AutoProcessor

        try:
            return AutoProcessor.from_pretrained(path)
        except (OSError, ValueError) as err:
            raise OSError(f"base: {path} has a {self.name} model but no loadable processor ({err})") from None

    def build_tiny(self, source: str) -> tuple[Any, Any]:
        """(model, processor) of an embedded tiny base that is not a saved folder."""
        # `tiny_musicgen(seed=0)` with its zero EnCodec codebooks seeded from rendered audio: a config-built
        # EnCodec maps every code to the same vector, so every prompt would decode to the same clip.
        return tiny_musicgen_with_music(seed=0), tiny_musicgen_processor()

    def load(self, source: str, device: str, dtype: torch.dtype) -> LoadedBase:
        if source in self.tiny_sources and source != TINY_MUSICGEN_TRAINED:
            model, processor = self.build_tiny(source)
        else:
            path = trained_musicgen_path() if source == TINY_MUSICGEN_TRAINED else source
            model = self.transformers_class().from_pretrained(path, dtype=dtype)
            processor = self.load_processor(path)
        model = model.to(device=device, dtype=dtype).eval()
        return LoadedBase(self, model, processor, int(model.config.audio_encoder.sampling_rate), source)

    def default_guidance(self, model: Any) -> float:
        """The generation config's guidance scale, else 3.0 (MusicGen's published default)."""
        config = getattr(unwrap_peft(model), "generation_config", None)
        return float(getattr(config, "guidance_scale", None) or self.guidance_scale)

    def generate_clips(self, base: LoadedBase, model: Any, prompts: list[str], seeds: list[int], *,
                       seconds: float, guidance_scale: float, num_inference_steps: int = 200,
                       batch_size: int = 8) -> list[np.ndarray]:
        """Whole frames are generated (plus the delay pattern's tail), then each clip is cut to `seconds`."""
        inner = unwrap_peft(model)
        length = int(round(seconds * base.sampling_rate))
        channels = int(getattr(inner.config.decoder, "audio_channels", 1))
        delay = inner.decoder.num_codebooks // channels - 1
        max_new_tokens = math.ceil(seconds * inner.config.audio_encoder.frame_rate) + delay
        device = next(inner.parameters()).device
        clips: list[np.ndarray] = []
        for start in range(0, len(prompts), batch_size):
            stop = min(start + batch_size, len(prompts))
            inputs = base.processor(text=list(prompts[start:stop]), padding=True, return_tensors="pt").to(device)
            generators = [torch.Generator(device=device).manual_seed(s) for s in seeds[start:stop]]
            sampler = PromptSeededSampler(generators, inner.decoder.num_codebooks, guidance_scale,
                                          inner.generation_config)
            with torch.no_grad():
                out = model.generate(**inputs, do_sample=True, guidance_scale=guidance_scale,
                                     max_new_tokens=max_new_tokens, logits_processor=LogitsProcessorList([sampler]))
            for audio in out.float().cpu().numpy():
                clips.append((audio[0] if audio.shape[0] == 1 else audio)[..., :length])
        return clips


class PromptSeededSampler(LogitsProcessor):
    """Draws each prompt's next MusicGen codes with that prompt's own ``torch.Generator``.

    ``generate`` samples the whole batch from torch's global generator, so a prompt's clip would depend
    on its batch. This processor, passed as ``logits_processor``, runs where MusicGen's own
    classifier-free guidance would (it receives the conditional and unconditional logits stacked), applies
    the guidance and the generation config's temperature / top-k / top-p itself, draws one code per
    codebook row of each prompt from the prompt's generator, and returns logits that put all mass on the
    drawn code (equal in both halves, so the guidance and warpers that ``generate`` applies afterwards
    leave them as they are, and its own draw takes that code).
    """

    def __init__(self, generators: list[torch.Generator], rows_per_prompt: int, guidance_scale: float | None,
                 generation_config: Any) -> None:
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        self.generators = generators
        self.rows = rows_per_prompt
        self.guidance_scale = guidance_scale if guidance_scale is not None and guidance_scale > 1 else None
        unsupported = [k for k in ("min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_h")
                       if getattr(generation_config, k, None) not in (None, 1.0, 0.0)]
        if unsupported:
            raise NotImplementedError(f"generation config sets {unsupported}; per-prompt seeded sampling "
                                      "supports temperature, top_k and top_p")
        self.warpers = []
        temperature, top_k, top_p = (getattr(generation_config, k, None) for k in ("temperature", "top_k", "top_p"))
        if temperature is not None and temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if top_k:
            self.warpers.append(TopKLogitsWarper(top_k=top_k))
        if top_p is not None and top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=top_p))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = len(self.generators) * self.rows
        guided = self.guidance_scale is not None
        if scores.shape[0] != (2 if guided else 1) * rows:
            raise RuntimeError(f"PromptSeededSampler expected {(2 if guided else 1) * rows} rows of logits "
                               f"({len(self.generators)} prompts x {self.rows} codebooks), got {scores.shape[0]}")
        logits = scores
        if guided:  # transformers' ClassifierFreeGuidanceLogitsProcessor, which generate would apply next
            conditional, unconditional = scores.split(rows, dim=0)
            logits = unconditional + (conditional - unconditional) * self.guidance_scale
        for warper in self.warpers:
            logits = warper(input_ids[:rows], logits)
        probs = torch.softmax(logits.float(), dim=-1)
        codes = torch.cat([
            torch.multinomial(probs[i * self.rows:(i + 1) * self.rows], 1, generator=generator)
            for i, generator in enumerate(self.generators)
        ])
        # Finite, so that guidance (u + (c - u) * s) stays exact; everything but the drawn code gets no mass.
        chosen = torch.full_like(logits, torch.finfo(scores.dtype).min).scatter_(1, codes, 0.0)
        return torch.cat([chosen, chosen]) if guided else chosen


MUSICGEN = MusicgenFamily(
    name="musicgen",
    class_names=("MusicgenForConditionalGeneration",),
    model_types=("musicgen",),
    text_encoders=(TextEncoderSlot(name="t5", module="text_encoder", tokenizer="tokenizer"),),
    self_attention_value=_LAYERS + r"\.self_attn\.v_proj",
    cross_attention_key_value=_LAYERS + r"\.encoder_attn\.(k_proj|v_proj)",
    lora_presets={
        "self_attn": _LAYERS + r"\.self_attn\.(q_proj|k_proj|v_proj|out_proj)",
        "attn": _LAYERS + r"\.(self_attn|encoder_attn)\.(q_proj|k_proj|v_proj|out_proj)",
        "attn_mlp": _LAYERS + r"\.((self_attn|encoder_attn)\.(q_proj|k_proj|v_proj|out_proj)|fc1|fc2)",
    },
    lora_preset_descriptions={
        "self_attn": "decoder self-attention q/k/v/out",
        "attn": "decoder self- and cross-attention q/k/v/out",
        "attn_mlp": "decoder self- and cross-attention q/k/v/out plus the feed-forward layers (fc1, fc2): "
                    "the wider set of public MusicGen LoRA recipes",
    },
    full_finetune_module="decoder",
    tiny_sources=(TINY_MUSICGEN, TINY_MUSICGEN_TRAINED),
    guidance_scale=3.0,
    training=MUSICGEN_TRAINING,
    card=CardSnippet("from transformers import MusicgenForConditionalGeneration", "model",
                     "MusicgenForConditionalGeneration.from_pretrained({base})"),
)
