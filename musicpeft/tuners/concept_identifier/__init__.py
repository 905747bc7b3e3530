"""Concept identifier tokens (textual inversion with several vectors per concept), and everything the method
needs around its layers: placeholders in prompts (`placeholders.py`), tokenizers bound to a model
(`binding.py`), where its parameters live (`layout.py`, `weights.py`, `fingerprint.py`) and diagnostics.
"""

from ...registration import register_method
from .binding import bind_processor, concept_tuners, is_concept_adapter, pipeline_peft_model
from .config import ConceptIdentifierConfig, placeholder, token_strings
from .layer import ConceptEmbeddingLayer, TokenTable
from .model import ConceptIdentifierModel
from .placeholders import UnknownConceptError

register_method(
    name="concept_identifier", config_cls=ConceptIdentifierConfig, model_cls=ConceptIdentifierModel, prefix="concept_"
)

__all__ = [
    "ConceptEmbeddingLayer",
    "ConceptIdentifierConfig",
    "ConceptIdentifierModel",
    "TokenTable",
    "UnknownConceptError",
    "bind_processor",
    "concept_tuners",
    "is_concept_adapter",
    "pipeline_peft_model",
    "placeholder",
    "token_strings",
]
