"""Registry of supported base-model families. Add a family by writing one module and listing it here."""

from __future__ import annotations

from typing import Any

from .audioldm2 import AUDIOLDM2
from .base import ModelFamily, TextEncoderSlot, get_submodule
from .musicgen import MUSICGEN

FAMILIES: list[ModelFamily] = [MUSICGEN, AUDIOLDM2]


class UnsupportedModelError(TypeError):
    """Raised for a base model or pipeline that no registered family describes."""


def register_family(family: ModelFamily) -> None:
    if any(f.name == family.name for f in FAMILIES):
        raise ValueError(f"A model family named {family.name!r} is already registered.")
    FAMILIES.append(family)


def get_family(name: str) -> ModelFamily:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise ValueError(f"Unknown model family {name!r}; supported: {', '.join(f.name for f in FAMILIES)}.")


def family_of(obj: Any) -> ModelFamily:
    """The family describing `obj` (a model or a pipeline), or a clear error naming the supported ones."""
    # PeftModel / BaseTuner wrappers: look at the model they wrap.
    inner = obj
    while hasattr(inner, "get_base_model") and inner is not inner.get_base_model():
        inner = inner.get_base_model()
    for family in FAMILIES:
        if family.matches(inner):
            return family
    supported = "; ".join(f"{f.name} ({', '.join(f.class_names)})" for f in FAMILIES)
    raise UnsupportedModelError(
        f"{type(inner).__name__} is not a supported base model. Supported families: {supported}."
    )


__all__ = [
    "FAMILIES",
    "ModelFamily",
    "TextEncoderSlot",
    "UnsupportedModelError",
    "family_of",
    "get_family",
    "get_submodule",
    "register_family",
]
