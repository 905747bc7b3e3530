from ...registration import register_method
from .config import ConceptIdentifierConfig, placeholder, token_strings
from .layer import ConceptEmbeddingLayer, TokenTable
from .model import ConceptIdentifierModel

register_method(
    name="concept_identifier", config_cls=ConceptIdentifierConfig, model_cls=ConceptIdentifierModel, prefix="concept_"
)

__all__ = [
    "ConceptEmbeddingLayer",
    "ConceptIdentifierConfig",
    "ConceptIdentifierModel",
    "TokenTable",
    "placeholder",
    "token_strings",
]
