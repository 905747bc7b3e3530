"""Concept-named entry points over musicpeft's one attach / save / load path (`musicpeft.adapters.lifecycle`).

On a pipeline a concept adapter is one peft adapter over the U-Net and the text encoders together (the
pipeline's `PipelineModules`), saved at the root of its folder; on MusicGen it is an adapter of the model
like any other. These functions only add what is concept-specific: the processor bound before loading,
and a refusal when a non-concept config or folder is passed where a concept adapter is expected.

This module imports the adapters layer, which imports the tuners: the package's `__init__` does not import
it (`musicpeft.concepts` re-exports it).
"""

from __future__ import annotations

import os
from typing import Any

from ...adapters.base import WHOLE, pipeline_peft_models
from ...adapters.lifecycle import add_adapter, load_adapter, save_peft_adapter
from .binding import is_concept_adapter, pipeline_peft_model


def load_concept_adapter(model_or_pipe: Any, source: Any, adapter_name: str = "default", *, processor: Any = None,
                         **kwargs: Any) -> Any:
    """`musicpeft.load_adapter` with the processor bound first, so that placeholders work at once (MusicGen)."""
    if processor is not None:
        kwargs["processor"] = processor
    return load_adapter(model_or_pipe, source, adapter_name, **kwargs)


def add_pipeline_adapter(pipe: Any, config: Any, adapter_name: str = "default") -> Any:
    """Attach a concept adapter to a pipeline: one peft adapter over its U-Net and text encoders.

    The pipeline's modules are adapted in place, so `pipe(prompt="a <koto> jig")` uses the adapter, and its
    tokenizers expand the placeholders. Returns the PeftModel (its base is a `PipelineModules`).
    """
    if not is_concept_adapter(config):
        raise TypeError(f"add_pipeline_adapter attaches concept adapters; use musicpeft.add_adapter for a "
                        f"{type(config).__name__}.")
    if WHOLE in pipeline_peft_models(pipe) and adapter_name in pipeline_peft_model(pipe).peft_config:
        raise ValueError(f"The pipeline already has a concept adapter named {adapter_name!r}; pick another name.")
    return add_adapter(pipe, config, adapter_name)


def save_pipeline_adapter(pipe: Any, directory: Any, adapter_name: str = "default") -> str:
    """Write a pipeline's concept adapter in peft's layout (its config records the family it was made for)."""
    peft_model = pipeline_peft_model(pipe)
    if peft_model is None or adapter_name not in peft_model.peft_config:
        raise ValueError(f"This pipeline has no concept adapter named {adapter_name!r}.")
    directory = os.fspath(directory)
    save_peft_adapter(peft_model, directory, adapter_name)
    return directory


def load_pipeline_adapter(pipe: Any, folder: Any, adapter_name: str = "default", *, is_trainable: bool = False,
                          allow_pickle: bool = False) -> Any:
    """Load a saved concept adapter onto a pipeline (local folder); placeholders work right after."""
    return load_adapter(pipe, os.fspath(folder), adapter_name, is_trainable=is_trainable, allow_pickle=allow_pickle)
