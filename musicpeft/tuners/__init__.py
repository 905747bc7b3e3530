"""One folder per method: config.py (dataclass config), layer.py (the tuner layer), model.py (the tuner)."""

from .concept_identifier import ConceptIdentifierConfig, ConceptIdentifierModel
from .pivotal_mask import PivotalMaskConfig, PivotalMaskModel
from .soft_prompt import SoftMusicPromptConfig, SoftMusicPromptModel

__all__ = [
    "ConceptIdentifierConfig",
    "ConceptIdentifierModel",
    "PivotalMaskConfig",
    "PivotalMaskModel",
    "SoftMusicPromptConfig",
    "SoftMusicPromptModel",
]
