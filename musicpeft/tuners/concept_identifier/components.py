"""Where identifier tokens and pivotal parameters live in a model or a pipeline, read from the family data.

MusicGen is one `nn.Module`; an AudioLDM2 pipeline is not, and its adapter touches three components (the
U-Net and both text encoders). `PipelineModules` presents those components as one module that peft can
wrap: the components are the pipeline's own objects, so layers injected into them adapt the pipeline in
place, and one adapter folder holds the U-Net deltas and the identifier tokens together.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...families import ModelFamily, TextEncoderSlot, family_of, get_submodule


class PipelineModules(nn.Module):
    """The components of a pipeline that one adapter touches, as children of one module (no copies)."""

    def __init__(self, pipe: Any, family: ModelFamily, names: list[str]) -> None:
        super().__init__()
        for name in names:
            component = getattr(pipe, name, None)
            if not isinstance(component, nn.Module):
                raise TypeError(f"{type(pipe).__name__}.{name} is {type(component).__name__}, not a torch module.")
            self.add_module(name, component)
        object.__setattr__(self, "pipe", pipe)
        object.__setattr__(self, "musicpeft_family", family)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("PipelineModules only holds a pipeline's components for peft; call the pipeline instead.")


def pipeline_modules(pipe: Any) -> PipelineModules:
    """The (cached) `PipelineModules` of a pipeline: its adapted component and its text encoders."""
    cached = getattr(pipe, "_musicpeft_concept_modules", None)
    if cached is not None:
        return cached
    family = family_of(pipe)
    names = [family.extra.get("adapted_component") or family.full_finetune_module]
    names += [slot.module.split(".")[0] for slot in family.text_encoders]
    modules = PipelineModules(pipe, family, list(dict.fromkeys(n for n in names if n)))
    object.__setattr__(pipe, "_musicpeft_concept_modules", modules)
    return modules


def is_pipeline(obj: Any) -> bool:
    return not isinstance(obj, nn.Module) and hasattr(obj, "components")


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
        from .layer import ConceptEmbeddingLayer

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
        from ...families import FAMILIES

        names = {cls.__name__ for cls in type(root).__mro__}
        for candidate in FAMILIES:
            if names & set(candidate.extra.get("adapted_component_classes", ())):
                raise TypeError(
                    f"On {candidate.name} pipelines a concept adapter adapts the {type(root).__name__} and the text "
                    "encoders together: attach, save and load it on the pipeline (musicpeft.concepts."
                    "add_pipeline_adapter / save_pipeline_adapter / load_pipeline_adapter), not on one component."
                )
        family = family_of(root)
    component = family.extra.get("adapted_component")
    prefix = re.escape(component) + r"\." if isinstance(root, PipelineModules) and component else ""
    return Layout(family=family, root=root, attention_prefix=prefix)


def base_weight(module: nn.Module) -> torch.Tensor:
    """The weight of a module, or of the base layer inside a peft tuner layer."""
    return module.get_base_layer().weight if hasattr(module, "get_base_layer") else module.weight


def _offload_hooks(module: nn.Module) -> list[Any]:
    hook = getattr(module, "_hf_hook", None)
    return list(getattr(hook, "hooks", None) or ([hook] if hook is not None else []))


def readable_weight(module: nn.Module) -> torch.Tensor | None:
    """A module's weight with its values: an accelerate-offloaded weight (on "meta") is read from its hook's
    weights map (CPU memory or the offload folder). None when the values are nowhere to be found.
    """
    module = module.get_base_layer() if hasattr(module, "get_base_layer") else module
    weight = module.weight
    if weight.device.type != "meta":
        return weight
    for hook in _offload_hooks(module):
        weights_map = getattr(hook, "weights_map", None)
        if weights_map is None:
            continue
        try:
            return weights_map["weight"]
        except (KeyError, TypeError):
            continue
    return None


def execution_device(module: nn.Module) -> torch.device:
    """Where a module computes: its weight's device, or its offload hook's execution device (CPU if none)."""
    module = module.get_base_layer() if hasattr(module, "get_base_layer") else module
    weight = module.weight
    if weight.device.type != "meta":
        return weight.device
    for hook in _offload_hooks(module):
        device = getattr(hook, "execution_device", None)
        if device is not None:
            return torch.device(device)
    return torch.device("cpu")


def base_fingerprint(layout: Layout, slots: list[TextEncoderSlot]) -> str:
    """A short digest of the base weights an adapter acts on (attention projections and embedding tables).

    Deltas at fixed indices only make sense on the weights they were trained against; the digest lets a
    merge refuse an adapter made on another base. It samples each tensor (shape + ~4k values), so it costs
    milliseconds even on MusicGen-large.
    """
    digest = hashlib.sha256(layout.family.name.encode())
    modules = dict(layout.root.named_modules())
    names = layout.names(layout.self_value_regex) + layout.names(layout.cross_key_value_regex)
    names += [layout.embedding_modules(slot)[0] for slot in slots]
    for name in names:
        weight = readable_weight(modules[name])  # offloaded weights count too: no false mismatch warning
        if weight is None:
            continue
        weight = weight.detach()
        flat = weight.reshape(-1)
        step = max(1, flat.numel() // 4096)
        digest.update(f"{name}:{tuple(weight.shape)}".encode())
        digest.update(flat[::step].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
