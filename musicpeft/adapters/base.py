"""What the two kinds of host share: telling a pipeline from a model, finding the base under wrappers,
where an adapted object keeps its PeftModels, and which tokenizer feeds which text encoder.

A transformers model is one `nn.Module`, adapted as peft does; its PeftModel is remembered on the model.
A diffusers pipeline is not an `nn.Module`: each adapter adapts one of its components (a text encoder, the
U-Net), or several of them at once through `PipelineModules`. Every question of the form "is this a
pipeline?", "what is the model under these wrappers?" or "which PeftModel holds this adapter?" is answered
here, once.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from peft import PeftModel
from torch import nn

from ..families import ModelFamily, family_of
from ..families.base import unwrap_peft

# The name of the target that covers the whole adapted object: the model itself, or the pipeline's
# `PipelineModules`. Its adapter is saved at the root of an adapter folder.
WHOLE = "."

_PEFT_MODEL = "_musicpeft_peft_model"  # on a model: its PeftModel
_PIPELINE_PEFT_MODELS = "_musicpeft_components"  # on a pipeline: target -> PeftModel
_PIPELINE_MODULES = "_musicpeft_concept_modules"  # on a pipeline: its cached PipelineModules
_TOKENIZERS = "_musicpeft_tokenizers"  # on a model: text-encoder slot -> the tokenizer bound to it


def is_pipeline(obj: Any) -> bool:
    """A diffusers pipeline (components, no `nn.Module`), as opposed to a model or a PeftModel."""
    return not isinstance(obj, nn.Module) and hasattr(obj, "components")


def family_adapts_components(family: ModelFamily) -> bool:
    """Whether the family's adapted object is a pipeline whose components are adapted one by one."""
    return adapted_component(family) is not None


def adapted_component(family: ModelFamily) -> str | None:
    """The pipeline component that methods other than soft prompts adapt (AudioLDM2: `unet`); None for models."""
    return family.adapted_component


def prepare_pipeline(pipe: Any, family: ModelFamily) -> None:
    """The family's fix-ups of a pipeline, run before an adapter is attached or loaded."""
    family.prepare(pipe)


def peft_model_of(obj: Any) -> PeftModel | None:
    """The PeftModel adapting a model (the object itself when it is one); None before the first adapter."""
    return obj if isinstance(obj, PeftModel) else getattr(obj, _PEFT_MODEL, None)


def remember_peft_model(model: Any, peft_model: PeftModel) -> None:
    """Keep `peft_model` on `model`, so later calls with the bare model find its adapters."""
    # object.__setattr__: nn.Module.__setattr__ would register the PeftModel as a child of its own base model.
    object.__setattr__(model, _PEFT_MODEL, peft_model)


def forget_peft_model(model: Any) -> None:
    """Drop the PeftModel kept on `model` (after its adapters were unloaded)."""
    model.__dict__.pop(_PEFT_MODEL, None)


def pipeline_peft_models(pipe: Any) -> dict[str, PeftModel]:
    """A pipeline's PeftModels by target (a component name, or `WHOLE` for one adapter over several).

    The pipeline's own dict once an adapter was attached (so clearing it forgets them); before that an empty
    dict that is not stored: reading leaves the pipeline untouched.
    """
    return pipe.__dict__.get(_PIPELINE_PEFT_MODELS, {})


def record_pipeline_peft_model(pipe: Any, target: str, peft_model: PeftModel) -> None:
    """Keep the PeftModel of one target on the pipeline."""
    found = pipe.__dict__.get(_PIPELINE_PEFT_MODELS)
    if found is None:
        found = {}
        object.__setattr__(pipe, _PIPELINE_PEFT_MODELS, found)
    found[target] = peft_model


class PipelineModules(nn.Module):
    """The components of a pipeline that one adapter touches, as children of one module (no copies).

    The components are the pipeline's own objects, so layers injected into them adapt the pipeline in place,
    and one adapter folder holds the deltas of every component together (the concept methods: the U-Net
    and both text encoders of AudioLDM2).
    """

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
    cached = getattr(pipe, _PIPELINE_MODULES, None)
    if cached is not None:
        return cached
    family = family_of(pipe)
    names = [adapted_component(family) or family.full_finetune_module]
    names += [slot.component for slot in family.text_encoders]
    modules = PipelineModules(pipe, family, list(dict.fromkeys(n for n in names if n)))
    object.__setattr__(pipe, _PIPELINE_MODULES, modules)
    return modules


# -- tokenizers --------------------------------------------------------------------------------------------
def slot_tokenizers(model: Any, processor: Any) -> dict[str, Any]:
    """Slot name -> the processor's (or tokenizer's) tokenizer for each text encoder of a model's family."""
    tokenizers = {}
    for slot in family_of(unwrap_peft(model)).text_encoders:
        tokenizer = getattr(processor, slot.tokenizer, None) if slot.tokenizer else None
        tokenizer = tokenizer if tokenizer is not None else processor
        if not hasattr(tokenizer, "convert_tokens_to_ids"):
            raise TypeError(f"{type(processor).__name__} has no tokenizer for the {slot.name} text encoder.")
        tokenizers[slot.name] = tokenizer
    return tokenizers


def bind_tokenizers(model: Any, tokenizers: dict[str, Any]) -> None:
    """Tie tokenizers (slot name -> tokenizer) to the base of a model; pipelines carry their own."""
    object.__setattr__(unwrap_peft(model), _TOKENIZERS, dict(tokenizers))


def bound_tokenizers(root: Any) -> dict[str, Any]:
    """Slot name -> tokenizer of a tuner's root: a pipeline's own tokenizers, or those bound to a model."""
    if isinstance(root, PipelineModules):
        family = root.musicpeft_family
        return {s.name: getattr(root.pipe, s.tokenizer) for s in family.text_encoders if s.tokenizer}
    if is_pipeline(root):
        return bound_tokenizers(pipeline_modules(root))
    return dict(getattr(unwrap_peft(root), _TOKENIZERS, {}))


# -- a component adapted on its own ------------------------------------------------------------------------
_attaching: contextvars.ContextVar[tuple[nn.Module, ModelFamily] | None] = contextvars.ContextVar(
    "musicpeft_attaching_component", default=None
)


@contextlib.contextmanager
def attaching_component(component: nn.Module, family: ModelFamily) -> Iterator[None]:
    """Within the block, `component_family(component)` is `family`: a tuner attached to one pipeline component
    (AudioLDM2's T5 encoder, which no family recognises alone) learns which family it belongs to from the host,
    not from fields written into the user's config."""
    token = _attaching.set((component, family))
    try:
        yield
    finally:
        _attaching.reset(token)


def component_family(module: nn.Module) -> ModelFamily | None:
    """The family of the pipeline whose component `module` is being adapted right now, else None."""
    current = _attaching.get()
    return current[1] if current is not None and current[0] is module else None
