"""Registry of supported base-model families. Add a family by writing one module and listing it here.

A family module defines one `ModelFamily` (a subclass where it behaves differently) holding every fact
and behaviour the rest of musicpeft needs; see `families/base.py`. `family_of(obj)` finds the family of a
loaded model or pipeline, `family_of_source(source)` that of a base named by a folder, a Hub id or a tiny
name, without loading it. When several families match (stereo MusicGen is also a MusicGen), the one that
names the other in `variant_of` wins.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import torch

from .audioldm2 import AUDIOLDM2, TINY_AUDIOLDM2
from .base import (
    LOSS_CODEC_TOKENS,
    LOSS_LATENT_DIFFUSION,
    CardSnippet,
    CrossAttentionStream,
    LoadedBase,
    LossKind,
    ModelFamily,
    SourceIndex,
    TextEncoderSlot,
    TrainingDefaults,
    get_submodule,
    unwrap_peft,
)
from .musicgen import MUSICGEN, TINY_MUSICGEN, TINY_MUSICGEN_TRAINED
from .musicgen_melody import MUSICGEN_MELODY, TINY_MUSICGEN_MELODY
from .musicgen_stereo import MUSICGEN_STEREO, TINY_MUSICGEN_STEREO

FAMILIES: list[ModelFamily] = [MUSICGEN, AUDIOLDM2, MUSICGEN_MELODY, MUSICGEN_STEREO]
# A source no family claims is tried as MusicGen, whose loader then says what is missing.
DEFAULT_FAMILY = MUSICGEN


class UnsupportedModelError(TypeError):
    """Raised for a base model or pipeline that no registered family describes."""


def register_family(family: ModelFamily) -> None:
    if any(f.name == family.name for f in FAMILIES):
        raise ValueError(f"A model family named {family.name!r} is already registered.")
    FAMILIES.append(family)


def get_family(name: str | ModelFamily) -> ModelFamily:
    """The registered family named `name` (a family object is returned as it is)."""
    if isinstance(name, ModelFamily):
        return name
    for family in FAMILIES:
        if family.name == name:
            return family
    raise ValueError(f"Unknown model family {name!r}; supported: {', '.join(f.name for f in FAMILIES)}.")


def _most_specific(candidates: Iterable[ModelFamily]) -> ModelFamily | None:
    """The first candidate that no other candidate refines (`variant_of`)."""
    candidates = list(candidates)
    refined = {f.variant_of for f in candidates if f.variant_of}
    return next((f for f in candidates if f.name not in refined), None)


def family_of(obj: Any) -> ModelFamily:
    """The family describing `obj` (a model or a pipeline), or a clear error naming the supported ones."""
    inner = unwrap_peft(obj)  # PeftModel / BaseTuner wrappers: look at the model they wrap
    family = _most_specific(f for f in FAMILIES if f.matches(inner))
    if family is not None:
        return family
    supported = "; ".join(f"{f.name} ({', '.join(f.class_names)})" for f in FAMILIES)
    raise UnsupportedModelError(
        f"{type(inner).__name__} is not a supported base model. Supported families: {supported}."
    )


def component_family(obj: Any) -> ModelFamily | None:
    """The family whose adapted pipeline component (e.g. AudioLDM2's U-Net) `obj` is, when given on its own."""
    return next((f for f in FAMILIES if f.matches_component(obj)), None)


def _read_json(path: str) -> dict[str, Any] | None:
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            found = json.load(handle)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _hub_json(repo_id: str, filename: str) -> dict[str, Any] | None:
    """A JSON file of a Hub repo (downloaded or cached); None when the repo has no such file."""
    from huggingface_hub import hf_hub_download  # lazy: only Hub ids need it
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return _read_json(hf_hub_download(repo_id, filename))
    except EntryNotFoundError:
        return None


def read_source_index(source: str) -> SourceIndex:
    """What `source`'s files say about its family: a pipeline's `model_index.json` or a model's `config.json`.

    Tiny names are known without files. A Hub id is asked for its files (the Hub cache serves them
    offline); when they cannot be read at all, the index is marked unreachable and families judge by
    the name alone, leaving the loader to report why the files are missing.
    """
    if any(source in f.tiny_sources for f in FAMILIES):
        return SourceIndex(source)
    if os.path.isdir(source):
        model_index = _read_json(os.path.join(source, "model_index.json"))
        config = None if model_index is not None else _read_json(os.path.join(source, "config.json"))
        return SourceIndex(source, model_index=model_index, config=config)
    try:
        model_index = _hub_json(source, "model_index.json")
        config = None if model_index is not None else _hub_json(source, "config.json")
    except Exception as error:  # offline and not cached, or not a valid id: families judge by the name alone
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        return SourceIndex(source, reachable=False, reason=reason)
    return SourceIndex(source, model_index=model_index, config=config)


def check_base_source(source: str) -> SourceIndex:
    """The index of a base that can be loaded, or an error naming `base` before anything waits on the Hub in vain.

    Refused: a file, a name that is neither a folder, a tiny name nor a Hub repo id (a mistyped path), and a Hub
    id whose config could neither be fetched nor found in the Hub cache; loading it would retry for minutes and
    then fail with a message that names no flag.
    """
    tiny = tiny_sources()
    if source in tiny or os.path.isdir(source):
        return read_source_index(source)
    from huggingface_hub.errors import HFValidationError  # lazy: only non-folders need it
    from huggingface_hub.utils import validate_repo_id

    offline = f"a folder written by save_pretrained or a tiny name ({', '.join(tiny)})"
    if os.path.exists(source):
        raise NotADirectoryError(f"base: {source} is a file; expected {offline}, or a Hub repo id")
    try:
        validate_repo_id(source)
    except HFValidationError:
        raise FileNotFoundError(f"base: {source}: no such folder, and not a Hub repo id ('owner/name'); "
                                f"expected {offline}") from None
    index = read_source_index(source)
    if not index.reachable or (index.model_index is None and index.config is None):
        # hf_hub_download answers "not found" both for a repo without the file and for one it could not reach
        why = f" ({index.reason})" if index.reason else ""
        raise OSError(f"base: cannot load {source!r}: it is not a local folder, and neither a config.json nor a "
                      f"model_index.json of it could be fetched from the Hub or found in the Hub cache{why}. "
                      f"Without the Hub, pass {offline}; HF_HUB_OFFLINE=1 reads the cache without network retries.")
    return index


def family_of_index(index: SourceIndex) -> ModelFamily:
    """The family that a base's index (see :func:`read_source_index`) describes."""
    family = _most_specific(f for f in FAMILIES if f.matches_source(index))
    if family is None and index.model_index is not None:
        pipelines = ", ".join(c for f in FAMILIES if f.is_pipeline for c in f.class_names)
        raise UnsupportedModelError(
            f"base: {index.name} is a {index.model_index.get('_class_name')!r} pipeline; supported pipelines: "
            f"{pipelines}."
        )
    return family if family is not None else DEFAULT_FAMILY


def family_of_source(source: str) -> ModelFamily:
    """The family of the base `source` names (folder, Hub id or tiny name), read from its files, not loaded."""
    return family_of_index(read_source_index(source))


def tiny_sources() -> list[str]:
    """Every embedded tiny base name, over all families."""
    return [name for family in FAMILIES for name in family.tiny_sources]


__all__ = [
    "DTYPES",
    "base_family",
    "load_base",
    "loadable_base_family",
    "AUDIOLDM2",
    "DEFAULT_FAMILY",
    "FAMILIES",
    "LOSS_CODEC_TOKENS",
    "LOSS_LATENT_DIFFUSION",
    "MUSICGEN",
    "MUSICGEN_MELODY",
    "MUSICGEN_STEREO",
    "TINY_AUDIOLDM2",
    "TINY_MUSICGEN",
    "TINY_MUSICGEN_MELODY",
    "TINY_MUSICGEN_STEREO",
    "TINY_MUSICGEN_TRAINED",
    "CardSnippet",
    "CrossAttentionStream",
    "LoadedBase",
    "LossKind",
    "ModelFamily",
    "SourceIndex",
    "TextEncoderSlot",
    "TrainingDefaults",
    "UnsupportedModelError",
    "check_base_source",
    "component_family",
    "family_of",
    "family_of_index",
    "family_of_source",
    "get_family",
    "get_submodule",
    "read_source_index",
    "register_family",
    "tiny_sources",
    "unwrap_peft",
]


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def base_family(source: str) -> str:
    """The family name (``"musicgen"``, ``"audioldm2"``, ...) of the base ``source`` names, without loading it."""
    return family_of_source(source).name


def loadable_base_family(source: str) -> str:
    """:func:`base_family` for a base about to be loaded: a source that cannot be loaded is refused first."""
    return family_of_index(check_base_source(source)).name


def load_base(source: str, device: str, dtype: str = "float32") -> LoadedBase:
    """Load the base model or pipeline once, in eval mode, on ``device`` (its family says how)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    family = family_of_index(check_base_source(source))
    try:
        return family.load(source, device, DTYPES[dtype])
    except OSError as error:  # transformers' / diffusers' own message names no flag
        raise OSError(f"base: cannot load {source!r} as a {family.name} base ({' '.join(str(error).split())})"
                      ) from error
