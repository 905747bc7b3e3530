"""MusicGen-Melody (transformers' `MusicgenMelodyForConditionalGeneration`).

One prompt's path: tokenizer -> `text_encoder` (T5 encoder; soft prompts and identifier tokens enter
here, as in MusicGen) -> `enc_to_dec_proj` -> masked by the top-level `attention_mask` -> concatenated
after the (projected) chroma of the melody prompt -> PREPENDED to the decoder's input embeddings. The
decoder has no cross-attention (no `encoder_attn`): every layer's causal `self_attn` reads the text
states as the first positions of its own sequence, and the logits of those positions are dropped.

So the family's attention facts differ from MusicGen's:
* self-attention value (pivotal stage 1's masks): every decoder `self_attn.v_proj`, as in MusicGen;
* what maps the text into the decoder's attention (pivotal stage 2's dense deltas, the role MusicGen's
  cross-attention K/V play): `enc_to_dec_proj`, the only weights that act on the text states alone;
  self-attention K/V act on the music tokens as well;
* LoRA presets: `self_attn` (q/k/v/out), `attn` (+ `enc_to_dec_proj`) and `attn_mlp` (+ fc1/fc2).

During `generate` the mask multiplies the text states inside
`_prepare_encoder_hidden_states_kwargs_for_generation`, not in `forward`, so a soft prompt must grow the
mask there too (`generation_mask_methods`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..tiny import make_t5_tokenizer
from ..tiny.musicgen_variants import tiny_musicgen_melody
from .base import CardSnippet, LoadedBase, TextEncoderSlot
from .musicgen import MUSICGEN_TRAINING, MusicgenFamily

TINY_MUSICGEN_MELODY = "tiny-musicgen-melody"

_LAYERS = r"decoder\.model\.decoder\.layers\.\d+"
_SELF = _LAYERS + r"\.self_attn\.(q_proj|k_proj|v_proj|out_proj)"


@dataclass(frozen=True)
class MusicgenMelodyFamily(MusicgenFamily):
    """MusicGen with prepended conditioning; loads, generates and trains as MusicGen does."""

    def load_processor(self, path: str) -> Any:
        """The checkpoint's processor; its tokenizer alone when the chroma extractor cannot load (no torchaudio).

        Text prompts need only the tokenizer: `MusicgenMelodyProcessor` adds a chroma extractor for melody
        prompts, which requires torchaudio.
        """
        from transformers import AutoProcessor, AutoTokenizer

        try:
            return AutoProcessor.from_pretrained(path)
        except ImportError:
            return AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as err:
            raise OSError(f"base: {path} has a {self.name} model but no loadable processor ({err})") from None

    def build_tiny(self, source: str) -> tuple[Any, Any]:
        return tiny_musicgen_melody(seed=0), make_t5_tokenizer()

    def generate_clips(self, base: LoadedBase, model: Any, prompts: list[str], seeds: list[int], *,
                       seconds: float, guidance_scale: float, num_inference_steps: int = 200,
                       batch_size: int = 8) -> list[np.ndarray]:
        """As MusicGen's, but a prompt is batched only with prompts of its own token length.

        Padding positions are prepended to the decoder's input too (zeroed, yet attended to, and they
        shift every later position), so a padded prompt's clip would depend on its batch-mates' lengths.
        """
        tokenizer = getattr(base.processor, "tokenizer", base.processor)
        groups: dict[int, list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(len(tokenizer(prompt)["input_ids"]), []).append(i)
        clips: dict[int, np.ndarray] = {}
        for indices in groups.values():
            made = super().generate_clips(base, model, [prompts[i] for i in indices], [seeds[i] for i in indices],
                                          seconds=seconds, guidance_scale=guidance_scale, batch_size=batch_size)
            clips.update(zip(indices, made, strict=True))
        return [clips[i] for i in range(len(prompts))]


MUSICGEN_MELODY = MusicgenMelodyFamily(
    name="musicgen-melody",
    class_names=("MusicgenMelodyForConditionalGeneration",),
    model_types=("musicgen_melody",),
    text_encoders=(TextEncoderSlot(name="t5", module="text_encoder", tokenizer="tokenizer"),),
    self_attention_value=_LAYERS + r"\.self_attn\.v_proj",
    cross_attention_key_value=r"enc_to_dec_proj",
    lora_presets={
        "self_attn": _SELF,
        "attn": rf"{_SELF}|enc_to_dec_proj",
        "attn_mlp": rf"{_SELF}|{_LAYERS}\.(fc1|fc2)|enc_to_dec_proj",
    },
    lora_preset_descriptions={
        "self_attn": "decoder self-attention q/k/v/out (the text states are its first positions)",
        "attn": "decoder self-attention q/k/v/out plus enc_to_dec_proj, the text's projection into the decoder",
        "attn_mlp": "decoder self-attention q/k/v/out, enc_to_dec_proj and the feed-forward layers (fc1, fc2)",
    },
    full_finetune_module="decoder",
    # `generate` applies the text mask to the text states here, before any forward.
    generation_mask_methods=("_prepare_encoder_hidden_states_kwargs_for_generation",),
    tiny_sources=(TINY_MUSICGEN_MELODY,),
    name_hints=("melody",),
    guidance_scale=3.0,
    training=MUSICGEN_TRAINING,
    card=CardSnippet("from transformers import MusicgenMelodyForConditionalGeneration", "model",
                     "MusicgenMelodyForConditionalGeneration.from_pretrained({base})"),
    model_class="MusicgenMelodyForConditionalGeneration",
)
