"""Concept diagnostics, kept importable here: the code lives with its method
(`musicpeft.tuners.concept_identifier.diagnostics`)."""

from .tuners.concept_identifier.diagnostics import concept_similarity, encode_prompts

__all__ = ["concept_similarity", "encode_prompts"]
