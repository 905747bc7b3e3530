"""Where identifier tokens and pivotal parameters live in a model or a pipeline, read from the family data.

MusicGen is one `nn.Module`; on an AudioLDM2 pipeline a concept adapter touches three components (the U-Net
and both text encoders), presented to peft as one module by the pipeline host (`PipelineModules`).
Module names in a `Layout` are relative to that root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from ...adapters.base import PipelineModules, adapted_component
from ...families import FAMILIES, ModelFamily, TextEncoderSlot, family_of, get_submodule
from .layer import ConceptEmbeddingLayer


@dataclass(frozen=True)
class Layout:
    """Module names, relative to the tuner's root, of everything the two concept tuners may adapt."""

    family: ModelFamily
    root: nn.Module
    # Regex prefix under which the family's attention regexes apply ("" for MusicGen, "unet\." for AudioLDM2).
    attention_prefix: str

    @property
    def self_value_regex(self) -> str:
        return self.attention_prefix + f"(?:{self.family.self_attention_value})"

    @property
    def cross_key_value_regex(self) -> str:
        return self.attention_prefix + f"(?:{self.family.cross_attention_key_value})"

    def names(self, regex: str) -> list[str]:
        pattern = re.compile(regex)
        return [n for n, _ in self.root.named_modules() if n and pattern.fullmatch(n)]

    def slots(self, names: list[str] | None) -> list[TextEncoderSlot]:
        """The text encoders named (all of the family's when `names` is None) that have an embedding table."""
        if names is not None:
            return [self.family.text_encoder(n) for n in names]
        return [s for s in self.family.text_encoders if _has_input_embeddings(self.root, s)]

    def embedding_modules(self, slot: TextEncoderSlot) -> list[str]:
        """Every module of the encoder that holds its input-embedding weight (T5 keeps it in two places)."""
        encoder = get_submodule(self.root, slot.module)
        if not hasattr(encoder, "get_input_embeddings"):
            raise TypeError(f"The {slot.name} text encoder ({type(encoder).__name__}) has no get_input_embeddings().")
        embedding = encoder.get_input_embeddings()
        weight = embedding.get_base_layer().weight if isinstance(embedding, ConceptEmbeddingLayer) else embedding.weight
        # An accelerate-offloaded encoder unties the tables (each module gets its own "meta" placeholder):
        # there, every meta vocabulary table of the same shape is a copy of the input embedding.
        offloaded = weight.device.type == "meta"
        found: list[str] = []
        for name, module in encoder.named_modules():
            if any(name.startswith(f + ".") for f in found):
                continue
            base = module.get_base_layer() if isinstance(module, ConceptEmbeddingLayer) else module
            if not isinstance(base, nn.Embedding):
                continue
            tied = offloaded and base.weight.device.type == "meta" and base.weight.shape == weight.shape
            if base.weight is weight or tied:
                found.append(name)
        return [f"{slot.module}.{name}" if name else slot.module for name in found]

    def encoder(self, slot: TextEncoderSlot) -> nn.Module:
        return get_submodule(self.root, slot.module)


def _has_input_embeddings(root: nn.Module, slot: TextEncoderSlot) -> bool:
    try:
        encoder = get_submodule(root, slot.module)
    except AttributeError:
        return False
    return hasattr(encoder, "get_input_embeddings") and encoder.get_input_embeddings() is not None


def layout_of(root: nn.Module) -> Layout:
    """The layout of a MusicGen model or of a `PipelineModules`."""
    family = getattr(root, "musicpeft_family", None)
    if family is None:
        for candidate in FAMILIES:
            if candidate.matches_component(root):
                raise TypeError(
                    f"On {candidate.name} pipelines a concept adapter adapts the {type(root).__name__} and the text "
                    "encoders together: attach, save and load it on the pipeline (musicpeft.add_adapter / "
                    "save_adapter / load_adapter), not on one component."
                )
        family = family_of(root)
    component = adapted_component(family)
    prefix = re.escape(component) + r"\." if isinstance(root, PipelineModules) and component else ""
    return Layout(family=family, root=root, attention_prefix=prefix)
