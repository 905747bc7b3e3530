"""Stereo MusicGen checkpoints (`MusicgenForConditionalGeneration` with `audio_channels=2`).

The class and module layout are MusicGen's; what differs is the decoder: `num_codebooks` is twice the
codec's (8 for EnCodec's 4), the left channel's and the right channel's codebooks interleaved (codebook
2k is the left channel's k-th, 2k+1 the right's), and `generate` decodes each channel with the mono
codec, giving `(2, samples)` clips. The delay pattern spans `num_codebooks // 2` codebooks per channel.

Text conditioning, soft prompts, identifier tokens, LoRA presets and pivotal targets are exactly
MusicGen's. Training is not offered: musicpeft's MusicGen collator encodes mono clips only, so this family
has no training recipe and `musicpeft train` refuses it with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..tiny import tiny_musicgen_processor
from ..tiny.musicgen_variants import tiny_musicgen_stereo
from .base import SourceIndex
from .musicgen import MUSICGEN, MusicgenFamily

TINY_MUSICGEN_STEREO = "tiny-musicgen-stereo"


def _decoder_channels(config: Any) -> int:
    decoder = config.get("decoder", {}) if isinstance(config, dict) else getattr(config, "decoder", None)
    channels = decoder.get("audio_channels", 1) if isinstance(decoder, dict) else getattr(decoder, "audio_channels", 1)
    return int(channels or 1)


@dataclass(frozen=True)
class MusicgenStereoFamily(MusicgenFamily):
    """MusicGen whose decoder predicts two channels' codebooks; recognised by `config.decoder.audio_channels`."""

    def matches(self, obj: Any) -> bool:
        config = getattr(obj, "config", None)
        return super().matches(obj) and config is not None and _decoder_channels(config) == 2

    def matches_source(self, index: SourceIndex) -> bool:
        if index.config is not None and index.model_index is None and index.name not in self.tiny_sources:
            return super().matches_source(index) and _decoder_channels(dict(index.config)) == 2
        return super().matches_source(index)

    def build_tiny(self, source: str) -> tuple[Any, Any]:
        return tiny_musicgen_stereo(seed=0), tiny_musicgen_processor()


_fields = {name: getattr(MUSICGEN, name) for name in (
    "class_names", "model_types", "text_encoders", "self_attention_value", "cross_attention_key_value",
    "lora_presets", "lora_preset_descriptions", "full_finetune_module", "guidance_scale", "card", "model_class",
)}

MUSICGEN_STEREO = MusicgenStereoFamily(
    name="musicgen-stereo",
    variant_of=MUSICGEN.name,
    tiny_sources=(TINY_MUSICGEN_STEREO,),
    name_hints=("stereo",),
    training=None,
    **_fields,
)
