"""One host per kind of adapted object: a transformers model, or a diffusers pipeline's components.

A host answers the few questions in which the two kinds differ, so that attaching, saving and loading are
each written once (`lifecycle.py`):

* which targets an adapter config adapts (`target_for`): a model has one target, itself (`WHOLE`); a
  pipeline has one per adapted component (soft prompts: a text encoder; other peft methods: the family's
  adapted component, the U-Net) and `WHOLE` for methods that adapt several components at once (the concept
  methods, through `PipelineModules`);
* which module a target is, and where its PeftModel is kept;
* how an adapter folder is laid out: a model's adapter at the folder's root with a manifest naming no
  component; a pipeline's component adapters in one subfolder each, named by the manifest; a pipeline's
  `WHOLE` adapter at the root, without a manifest (a loader that expects one adapter per component must not
  take it for one);
* what must happen around attaching (pipelines: the family's fix-ups before; after, the prompted
  `encode_prompt`, the refused `save_pretrained`, frozen non-adapter weights).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from peft import PeftModel
from torch import nn

from ..families import ModelFamily, family_of
from .base import (
    WHOLE,
    adapted_component,
    attaching_component,
    forget_peft_model,
    is_pipeline,
    peft_model_of,
    pipeline_modules,
    pipeline_peft_models,
    prepare_pipeline,
    record_pipeline_peft_model,
    remember_peft_model,
)
from .files import AdapterFileError, read_adapter_config
from .manifest import read_manifest
from .pipeline_hooks import freeze_unadapted, install_prompted_encode_prompt, protect_save_pretrained

# Class attribute of a musicpeft config saying what the method adapts on a pipeline: "text_encoder" (one
# text encoder, named by the config's `text_encoder`) or "components" (several components together).
# Configs without it (peft's own methods) adapt the family's adapted component.
PIPELINE_TARGET = "musicpeft_pipeline_target"


class ModelHost:
    """A transformers model (or a PeftModel around one): one target, adapted in place as peft does."""

    kind = "model"

    def __init__(self, model: Any, family: ModelFamily) -> None:
        self.obj = model
        self.family = family

    def peft_models(self) -> dict[str, PeftModel]:
        peft_model = peft_model_of(self.obj)
        return {WHOLE: peft_model} if peft_model is not None else {}

    def record(self, target: str, peft_model: PeftModel) -> None:
        remember_peft_model(self.obj, peft_model)

    def module(self, target: str) -> Any:
        return self.obj

    def target_for(self, config: Any) -> str:
        return WHOLE

    def folder_targets(self, folder: str) -> dict[str, str]:
        """Target -> subfolder of a saved adapter (checked against the family)."""
        read_manifest(folder, self.family, per_component=False)
        return {WHOLE: "."}

    def manifest_components(self, targets: list[str]) -> dict[str, str] | None:
        """What the manifest of a folder holding `targets` lists (None: write no manifest)."""
        return {}

    def attaching(self, target: str) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def before_attach(self) -> None:
        """Nothing to prepare on a model."""

    def after_attach(self, *, trainable: bool) -> None:
        """Nothing to install on a model: peft's wrappers do everything."""

    def check_kwargs(self, kwargs: dict[str, Any]) -> Any:
        """The processor to bind before loading (the only extra argument a model takes)."""
        processor = kwargs.pop("processor", None)
        if kwargs:
            raise TypeError(f"load_adapter got unexpected arguments for a {self.family.name} model: "
                            f"{', '.join(kwargs)}.")
        return processor

    def unload(self) -> None:
        """Remove every adapter and forget the PeftModel (nothing merged: the base weights are as loaded)."""
        peft_model = peft_model_of(self.obj)
        if peft_model is not None:
            peft_model.unload()
            forget_peft_model(self.obj)


class PipelineHost:
    """A diffusers pipeline: one PeftModel per adapted component, or one over several (`WHOLE`)."""

    kind = "pipeline"

    def __init__(self, pipe: Any, family: ModelFamily) -> None:
        self.obj = pipe
        self.family = family

    def peft_models(self) -> dict[str, PeftModel]:
        return pipeline_peft_models(self.obj)

    def record(self, target: str, peft_model: PeftModel) -> None:
        record_pipeline_peft_model(self.obj, target, peft_model)

    def module(self, target: str) -> Any:
        return pipeline_modules(self.obj) if target == WHOLE else getattr(self.obj, target)

    def target_for(self, config: Any) -> str:
        kind = getattr(type(config), PIPELINE_TARGET, None)
        if kind == "components":
            return WHOLE
        if kind == "text_encoder":
            return self.family.text_encoder(getattr(config, "text_encoder", None)).component
        component = adapted_component(self.family)
        if component is None:
            raise ValueError(f"The {self.family.name} family names no component for {type(config).__name__}.")
        return component

    def folder_targets(self, folder: str) -> dict[str, str]:
        manifest = read_manifest(folder, self.family, per_component=True)
        if manifest is None:  # a plain peft folder: its config says what it adapts
            return {self.target_for(read_adapter_config(folder)): "."}
        components = manifest["components"]
        for component in components:
            if not isinstance(getattr(self.obj, component, None), nn.Module):
                raise AdapterFileError(f"{folder}: adapts component {component!r}, which this pipeline does not have.")
        return dict(components)

    def manifest_components(self, targets: list[str]) -> dict[str, str] | None:
        return None if targets == [WHOLE] else {target: target for target in targets}

    def attaching(self, target: str) -> contextlib.AbstractContextManager:
        if target == WHOLE:  # `PipelineModules` carries the family itself
            return contextlib.nullcontext()
        return attaching_component(getattr(self.obj, target), self.family)

    def before_attach(self) -> None:
        prepare_pipeline(self.obj, self.family)

    def after_attach(self, *, trainable: bool) -> None:
        install_prompted_encode_prompt(self.obj, self.family)
        protect_save_pretrained(self.obj)
        if trainable:
            freeze_unadapted(self.obj)

    def check_kwargs(self, kwargs: dict[str, Any]) -> Any:
        if kwargs:
            raise TypeError(f"load_adapter got unexpected arguments for a {self.family.name} pipeline: "
                            f"{', '.join(kwargs)}.")
        return None

    def unload(self) -> None:
        """Remove every component's adapters and the prompted `encode_prompt` (nothing merged)."""
        peft_models = pipeline_peft_models(self.obj)
        for peft_model in peft_models.values():
            peft_model.unload()
        peft_models.clear()
        self.obj.__dict__.pop("encode_prompt", None)


Host = ModelHost | PipelineHost


def host_of(obj: Any) -> Host:
    """The host of a model, a PeftModel or a pipeline (`UnsupportedModelError` for anything else)."""
    family = family_of(obj)
    return PipelineHost(obj, family) if is_pipeline(obj) else ModelHost(obj, family)


def subfolder(folder: str, name: str) -> str:
    """Where a target's adapter sits in an adapter folder (`.`: the folder itself)."""
    return folder if name == "." else os.path.join(folder, name)
