"""Tying tokenizers to concept adapters: a MusicGen processor bound to its model, a pipeline's own tokenizers.

Typical use with MusicGen::

    processor = ...                                  # the model's MusicgenProcessor
    musicpeft.bind_processor(model, processor)
    peft_model = musicpeft.add_adapter(model, ConceptIdentifierConfig(concepts=["koto", "shamisen"]))
    processor(text=["a <koto> and <shamisen> duet"], return_tensors="pt")   # placeholders expanded

AudioLDM2 pipelines carry their tokenizers, so nothing needs binding there.
"""

from __future__ import annotations

import json
import os
from typing import Any

from torch import nn

from ...adapters.base import (
    WHOLE,
    bind_tokenizers,
    is_pipeline,
    peft_model_of,
    pipeline_peft_models,
    slot_tokenizers,
    unwrap_peft,
)
from ...adapters.files import CONFIG_NAME
from .model import ConceptIdentifierModel
from .placeholders import restore_placeholders

CONCEPT_PEFT_TYPES = ("CONCEPT_IDENTIFIER", "PIVOTAL_MASK")


def is_concept_adapter(config_or_folder: Any) -> bool:
    """Whether a config, or an adapter folder, belongs to the concept methods (identifier tokens, pivotal)."""
    if isinstance(config_or_folder, (str, os.PathLike)):
        path = os.path.join(os.fspath(config_or_folder), CONFIG_NAME)
        if not os.path.isfile(path):
            return False
        with open(path, encoding="utf-8") as handle:
            peft_type = json.load(handle).get("peft_type")
    else:
        peft_type = getattr(config_or_folder, "peft_type", None)
    return getattr(peft_type, "value", peft_type) in CONCEPT_PEFT_TYPES


def pipeline_peft_model(pipe: Any) -> Any:
    """The PeftModel holding a pipeline's concept adapters (None before the first one)."""
    return pipeline_peft_models(pipe).get(WHOLE) if is_pipeline(pipe) else None


def concept_tuners(model_or_pipe: Any) -> list[nn.Module]:
    """The concept-identifier tuners (including pivotal ones) attached to a model or pipeline."""
    if is_pipeline(model_or_pipe):
        roots = [pipeline_peft_model(model_or_pipe)]
    else:
        roots = [model_or_pipe, peft_model_of(unwrap_peft(model_or_pipe))]
    tuners = []
    for root in roots:
        tuner = getattr(root, "base_model", root)
        if isinstance(tuner, ConceptIdentifierModel) and tuner not in tuners:
            tuners.append(tuner)
    return tuners


def bind_processor(model_or_pipe: Any, processor: Any = None) -> None:
    """Tie a processor's (or tokenizer's) tokenizer to a MusicGen model, for its concept adapters.

    Adapters attached later add their identifier tokens to it, adapters already attached add theirs now,
    and from then on the tokenizer expands `<concept>` placeholders. Init words of a new adapter are
    tokenized with it. Pipelines keep their own tokenizers; for them `processor` must be None.
    """
    if is_pipeline(model_or_pipe):
        if processor is not None:
            raise TypeError("A pipeline tokenizes with its own tokenizers; bind_processor takes no processor for it.")
    else:
        if processor is None:
            raise TypeError("bind_processor needs the model's processor (or tokenizer).")
        tokenizers = slot_tokenizers(model_or_pipe, processor)
        restore_placeholders(processor)
        bind_tokenizers(model_or_pipe, tokenizers)
    for tuner in concept_tuners(model_or_pipe):
        tuner.sync_tokenizers()
