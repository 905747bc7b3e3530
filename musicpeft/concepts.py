"""Concept placeholders in prompts: `<koto>` becomes that concept's identifier tokens before tokenization.

diffusers' textual inversion expands a multi-vector placeholder in the pipeline (`maybe_convert_prompt`);
MusicGen has no such step and AudioLDM2's pipeline does not call it. Here the expansion lives on the
tokenizer itself, so every caller (a MusicGen processor, AudioLDM2's `encode_prompt`, a collator) gets it:
`install_placeholders` gives one tokenizer instance an `_encode_plus`/`tokenize` that expand placeholders
first (instance attributes: the class and the vocabulary are untouched; the rule is also kept in the
tokenizer's `init_kwargs`, so a saved tokenizer carries it and `restore_placeholders` can reinstall it).

The identifier tokens themselves are added to the tokenizer as added tokens (`<koto:0>`, `<koto:1>`, ...);
the ids the tokenizer gives them are read back and handed to the embedding layers, which answer them from
the learned table (`musicpeft/tuners/concept_identifier/layer.py`).

Typical use with MusicGen::

    processor = ...                                  # the model's MusicgenProcessor
    musicpeft.concepts.bind_processor(model, processor)
    peft_model = musicpeft.add_adapter(model, ConceptIdentifierConfig(concepts=["koto", "shamisen"]))
    processor(text=["a <koto> and <shamisen> duet"], return_tensors="pt")   # placeholders expanded

AudioLDM2 pipelines carry their tokenizers, so nothing needs binding there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import nn

PLACEHOLDER = re.compile(r"<([\w\-]+)>")
IDENTIFIER_TOKEN = re.compile(r"<[\w\-]+:\d+>")
_DEFINITIONS = "_musicpeft_placeholders"
_OWN_TOKENS = "_musicpeft_identifier_tokens"
# Key in `tokenizer.init_kwargs`, hence in the tokenizer_config.json that `save_pretrained` writes.
SAVED_PLACEHOLDERS = "musicpeft_placeholders"


class UnknownConceptError(ValueError):
    """A prompt names a `<placeholder>` that no loaded concept defines."""


# -- pure text --------------------------------------------------------------------------------------------
def expand_placeholders(text: Any, definitions: Mapping[str, str], tokenizer: Any = None) -> Any:
    """Replace every `<name>` of `definitions` in `text` (a string or nested lists of strings).

    Anything shaped like a placeholder that is neither defined nor an existing token of `tokenizer`
    (such as `<pad>`) raises `UnknownConceptError` naming the known placeholders.
    """
    if isinstance(text, str):
        unknown: list[str] = []

        def replace(match: re.Match[str]) -> str:
            found = match.group(0)
            if found in definitions:
                return definitions[found]
            if tokenizer is None or not _is_vocabulary_token(tokenizer, found):
                unknown.append(found)
            return found

        expanded = PLACEHOLDER.sub(replace, text)
        if unknown:
            known = ", ".join(sorted(definitions)) or "none"
            raise UnknownConceptError(
                f"Unknown concept placeholder(s) {sorted(set(unknown))} in prompt {text!r}; known placeholders: "
                f"{known}. Load the adapter that defines them, or fix the name."
            )
        return expanded
    if isinstance(text, (list, tuple)):
        return type(text)(expand_placeholders(t, definitions, tokenizer) for t in text)
    return text  # None, or token ids


def _is_vocabulary_token(tokenizer: Any, token: str) -> bool:
    if token in getattr(tokenizer, "all_special_tokens", ()):
        return True
    token_id = tokenizer.convert_tokens_to_ids(token)
    unk = getattr(tokenizer, "unk_token_id", None)
    return token_id is not None and token_id != unk


# -- tokenizers -------------------------------------------------------------------------------------------
class _EncodePlus:
    """`tokenizer._encode_plus` (behind `__call__` and `encode`) expanding placeholders first.

    A small callable object rather than a bound function, so that the tokenizer still pickles (DataLoader
    workers, `datasets.map`) and deep-copies with the hook bound to the copy.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, text: Any = None, text_pair: Any = None, *args: Any, **kwargs: Any) -> Any:
        tokenizer = self.tokenizer
        definitions = getattr(tokenizer, _DEFINITIONS, {})
        text = expand_placeholders(text, definitions, tokenizer)
        text_pair = expand_placeholders(text_pair, definitions, tokenizer)
        return type(tokenizer)._encode_plus(tokenizer, text, text_pair, *args, **kwargs)


class _Tokenize(_EncodePlus):
    """`tokenizer.tokenize` expanding placeholders first."""

    def __call__(self, text: str, *args: Any, **kwargs: Any) -> list[str]:  # type: ignore[override]
        tokenizer = self.tokenizer
        text = expand_placeholders(text, getattr(tokenizer, _DEFINITIONS, {}), tokenizer)
        return type(tokenizer).tokenize(tokenizer, text, *args, **kwargs)


def placeholder_definitions(tokenizer: Any) -> dict[str, str]:
    """The placeholders this tokenizer expands, and what each becomes."""
    return dict(getattr(tokenizer, _DEFINITIONS, {}))


def install_placeholders(tokenizer: Any, definitions: Mapping[str, str]) -> None:
    """Make `tokenizer` expand `definitions` (placeholder -> text) in everything it tokenizes.

    Idempotent; later definitions of the same placeholder replace earlier ones. Works on the instance
    only (callable instance attributes), so `copy.deepcopy` and pickling carry it along.
    """
    if not hasattr(type(tokenizer), "_encode_plus"):
        raise TypeError(f"{type(tokenizer).__name__} is not a transformers tokenizer; cannot expand placeholders.")
    merged = {**getattr(tokenizer, _DEFINITIONS, {}), **definitions}
    object.__setattr__(tokenizer, _DEFINITIONS, merged)
    _record(tokenizer, merged)
    tokenizer._encode_plus = _EncodePlus(tokenizer)
    tokenizer.tokenize = _Tokenize(tokenizer)


def _record(tokenizer: Any, definitions: Mapping[str, str]) -> None:
    """Keep the rule in `init_kwargs`: `save_pretrained` writes it to tokenizer_config.json with the added tokens.

    Without it a saved processor (say, next to a merged model) reloads with the identifier tokens but reads
    `<koto>` as characters; `restore_placeholders` / `load_processor` read it back.
    """
    init_kwargs = getattr(tokenizer, "init_kwargs", None)
    if isinstance(init_kwargs, dict):
        if definitions:
            init_kwargs[SAVED_PLACEHOLDERS] = dict(definitions)
        else:
            init_kwargs.pop(SAVED_PLACEHOLDERS, None)


def remove_placeholders(tokenizer: Any, placeholders: list[str] | None = None) -> None:
    """Stop expanding `placeholders` (all of them when None); the added tokens stay in the vocabulary."""
    current = getattr(tokenizer, _DEFINITIONS, {})
    keep = {} if placeholders is None else {k: v for k, v in current.items() if k not in placeholders}
    object.__setattr__(tokenizer, _DEFINITIONS, keep)
    _record(tokenizer, keep)
    if not keep:
        for name in ("_encode_plus", "tokenize"):
            tokenizer.__dict__.pop(name, None)


def check_identifier_tokens(tokenizer: Any, placeholders: Mapping[str, list[str]]) -> None:
    """Refuse placeholders or identifier tokens that are already real tokens of this tokenizer."""
    own = getattr(tokenizer, _OWN_TOKENS, set())
    for name, tokens in placeholders.items():
        clashes = [t for t in [name, *tokens] if t not in own and _is_vocabulary_token(tokenizer, t)]
        if clashes:
            raise ValueError(
                f"Concept placeholder {name} collides with existing token(s) {clashes} of the "
                f"{type(tokenizer).__name__}; rename the concept."
            )


def add_identifier_tokens(tokenizer: Any, tokens: list[str]) -> dict[str, int]:
    """Add identifier tokens as (non-special) added tokens; returns the id the tokenizer gave each."""
    from transformers import AddedToken

    own = set(getattr(tokenizer, _OWN_TOKENS, set()))
    new = [t for t in tokens if t not in own]
    if new:
        tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in new])
        object.__setattr__(tokenizer, _OWN_TOKENS, own | set(new))
    ids = dict(zip(tokens, tokenizer.convert_tokens_to_ids(tokens), strict=True))
    missing = [t for t, i in ids.items() if i is None or i == getattr(tokenizer, "unk_token_id", None)]
    if missing:
        raise RuntimeError(f"{type(tokenizer).__name__} did not accept the identifier tokens {missing}.")
    return ids


def saved_placeholders(tokenizer: Any) -> dict[str, str]:
    """The placeholder rule a saved tokenizer carries (its tokenizer_config.json), checked; {} if none."""
    saved = (getattr(tokenizer, "init_kwargs", None) or {}).get(SAVED_PLACEHOLDERS)
    if saved is None:
        return {}
    where = f"{SAVED_PLACEHOLDERS!r} of the {type(tokenizer).__name__}'s tokenizer_config.json"
    if not isinstance(saved, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in saved.items()):
        raise ValueError(f"{where} must map placeholder strings to strings, got {saved!r}.")
    bad = [k for k in saved if not PLACEHOLDER.fullmatch(k)]
    if bad:
        raise ValueError(f"{where} holds {bad}, which are not placeholders like '<koto>'.")
    tokens = [t for v in saved.values() for t in IDENTIFIER_TOKEN.findall(v)]
    missing = [t for t in tokens if not _is_vocabulary_token(tokenizer, t)]
    if missing:
        raise ValueError(
            f"{where} expands to identifier tokens {missing[:6]} that this tokenizer does not have; the tokenizer "
            "files do not belong to the placeholder rule."
        )
    return dict(saved)


def restore_placeholders(obj: Any) -> dict[str, str]:
    """Make a reloaded processor, tokenizer or pipeline expand the concept placeholders it was saved with.

    A tokenizer that expanded placeholders (a concept adapter was bound, merged or not) is saved with its
    identifier tokens and the rule (`musicpeft_placeholders` in tokenizer_config.json). transformers reloads
    the tokens but not the rule; this installs it again. Returns placeholder -> expansion over all of `obj`'s
    tokenizers (empty when nothing was saved). `load_processor` and `bind_processor` call it.
    """
    from .tuners.concept_identifier.components import is_pipeline

    if is_pipeline(obj):
        tokenizers = [getattr(obj, n) for n in ("tokenizer", "tokenizer_2") if getattr(obj, n, None) is not None]
    else:
        tokenizer = getattr(obj, "tokenizer", None)
        tokenizers = [tokenizer if tokenizer is not None else obj]
    restored: dict[str, str] = {}
    for tokenizer in tokenizers:
        saved = saved_placeholders(tokenizer)
        if not saved:
            continue
        tokens = {t for v in saved.values() for t in IDENTIFIER_TOKEN.findall(v)}
        object.__setattr__(tokenizer, _OWN_TOKENS, set(getattr(tokenizer, _OWN_TOKENS, set())) | tokens)
        install_placeholders(tokenizer, saved)
        restored.update(saved)
    return restored


def load_processor(path: Any, **kwargs: Any) -> Any:
    """`AutoProcessor.from_pretrained` that also restores the concept placeholders saved with the processor.

    Use it for a processor saved next to a merged concept model: a plain reload would read `<koto>` as
    characters and condition the model on something else than the learned concept.
    """
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path, **kwargs)
    restore_placeholders(processor)
    return processor


# -- models, processors, pipelines ------------------------------------------------------------------------
def _base_model(model: Any) -> Any:
    peft_model = model if hasattr(model, "peft_config") and hasattr(model, "base_model") else None
    peft_model = peft_model or getattr(model, "_musicpeft_peft_model", None)
    inner = peft_model if peft_model is not None else model
    while hasattr(inner, "get_base_model") and inner is not inner.get_base_model():
        inner = inner.get_base_model()
    return inner


def concept_tuners(model_or_pipe: Any) -> list[nn.Module]:
    """The concept-identifier tuners (including pivotal ones) attached to a model or pipeline."""
    from .tuners.concept_identifier.components import is_pipeline
    from .tuners.concept_identifier.model import ConceptIdentifierModel

    roots: list[Any] = []
    if is_pipeline(model_or_pipe):
        roots.append(getattr(model_or_pipe, "_musicpeft_concept_peft_model", None))
    else:
        roots += [model_or_pipe, getattr(_base_model(model_or_pipe), "_musicpeft_peft_model", None)]
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
    from .families import family_of
    from .tuners.concept_identifier.components import is_pipeline

    if is_pipeline(model_or_pipe):
        if processor is not None:
            raise TypeError("A pipeline tokenizes with its own tokenizers; bind_processor takes no processor for it.")
    else:
        if processor is None:
            raise TypeError("bind_processor needs the model's processor (or tokenizer).")
        base = _base_model(model_or_pipe)
        family = family_of(base)
        bound = {}
        for slot in family.text_encoders:
            tokenizer = getattr(processor, slot.tokenizer, None) if slot.tokenizer else None
            tokenizer = tokenizer if tokenizer is not None else processor
            if not hasattr(tokenizer, "convert_tokens_to_ids"):
                raise TypeError(f"{type(processor).__name__} has no tokenizer for the {slot.name} text encoder.")
            bound[slot.name] = tokenizer
        restore_placeholders(processor)
        object.__setattr__(base, "_musicpeft_tokenizers", bound)
    for tuner in concept_tuners(model_or_pipe):
        tuner.sync_tokenizers()


def bound_tokenizers(root: nn.Module) -> dict[str, Any]:
    """Slot name -> tokenizer for the tuner root: the bound processor's, or a pipeline's own."""
    from .tuners.concept_identifier.components import PipelineModules

    if isinstance(root, PipelineModules):
        family = root.musicpeft_family
        return {s.name: getattr(root.pipe, s.tokenizer) for s in family.text_encoders if s.tokenizer}
    return dict(getattr(root, "_musicpeft_tokenizers", {}))


def load_concept_adapter(model_or_pipe: Any, source: Any, adapter_name: str = "default", *, processor: Any = None,
                         **kwargs: Any) -> Any:
    """`musicpeft.load_adapter` with the processor bound first, so that placeholders work at once (MusicGen)."""
    from .api import load_adapter

    if processor is not None:
        bind_processor(model_or_pipe, processor)
    return load_adapter(model_or_pipe, source, adapter_name, **kwargs)


# -- pipelines: one adapter over the U-Net and the text encoders together ----------------------------------
_PIPE_PEFT = "_musicpeft_concept_peft_model"


def is_concept_adapter(config_or_folder: Any) -> bool:
    """Whether a config, or an adapter folder, belongs to the concept methods (identifier tokens, pivotal)."""
    import json
    import os

    if isinstance(config_or_folder, (str, os.PathLike)):
        path = os.path.join(os.fspath(config_or_folder), "adapter_config.json")
        if not os.path.isfile(path):
            return False
        with open(path) as handle:
            peft_type = json.load(handle).get("peft_type")
    else:
        peft_type = getattr(config_or_folder, "peft_type", None)
    return getattr(peft_type, "value", peft_type) in ("CONCEPT_IDENTIFIER", "PIVOTAL_MASK")


def pipeline_peft_model(pipe: Any) -> Any:
    """The PeftModel holding a pipeline's concept adapters (None before the first one)."""
    return pipe.__dict__.get(_PIPE_PEFT)


def add_pipeline_adapter(pipe: Any, config: Any, adapter_name: str = "default") -> Any:
    """Attach a concept adapter to a pipeline: one peft adapter over its U-Net and text encoders.

    The pipeline's modules are adapted in place, so `pipe(prompt="a <koto> jig")` uses the adapter, and its
    tokenizers expand the placeholders. Returns the PeftModel (its base is a `PipelineModules`).
    """
    from peft import get_peft_model

    from .tuners.concept_identifier.components import pipeline_modules

    peft_model = pipeline_peft_model(pipe)
    if peft_model is None:
        peft_model = get_peft_model(pipeline_modules(pipe), config, adapter_name=adapter_name)
        object.__setattr__(pipe, _PIPE_PEFT, peft_model)
        return peft_model
    if adapter_name in peft_model.peft_config:
        raise ValueError(f"The pipeline already has a concept adapter named {adapter_name!r}; pick another name.")
    peft_model.add_adapter(adapter_name, config)
    peft_model.set_adapter(adapter_name)
    return peft_model


def save_pipeline_adapter(pipe: Any, directory: Any, adapter_name: str = "default") -> str:
    """Write a pipeline's concept adapter in peft's layout (its config records the family it was made for).

    No per-component manifest: the folder is one adapter over several components, and a loader that
    expects one adapter per component must not take it for one (it fails loudly instead).
    """
    import os

    from .api import save_peft_adapter

    peft_model = pipeline_peft_model(pipe)
    if peft_model is None or adapter_name not in peft_model.peft_config:
        raise ValueError(f"This pipeline has no concept adapter named {adapter_name!r}.")
    directory = os.fspath(directory)
    save_peft_adapter(peft_model, directory, adapter_name)
    return directory


def load_pipeline_adapter(pipe: Any, folder: Any, adapter_name: str = "default", *, is_trainable: bool = False,
                          allow_pickle: bool = False) -> Any:
    """Load a saved concept adapter onto a pipeline (local folder); placeholders work right after."""
    import contextlib
    import os

    from peft import PeftModel

    from .adapter_files import allow_pickle_adapters, check_local_adapter_folder
    from .api import read_manifest
    from .families import family_of
    from .tuners.concept_identifier.components import pipeline_modules

    folder = os.fspath(folder)
    read_manifest(folder, family_of(pipe))
    check_local_adapter_folder(folder, allow_pickle=allow_pickle)
    peft_model = pipeline_peft_model(pipe)
    with allow_pickle_adapters() if allow_pickle else contextlib.nullcontext():
        if peft_model is None:
            peft_model = PeftModel.from_pretrained(
                pipeline_modules(pipe), folder, adapter_name=adapter_name, is_trainable=is_trainable
            )
            object.__setattr__(pipe, _PIPE_PEFT, peft_model)
        else:
            peft_model.load_adapter(folder, adapter_name, is_trainable=is_trainable)
            peft_model.set_adapter(adapter_name)
    return pipe
