"""Concept placeholders in prompts: `<koto>` becomes that concept's identifier tokens before tokenization.

diffusers' textual inversion expands a multi-vector placeholder in the pipeline (`maybe_convert_prompt`);
MusicGen has no such step and AudioLDM2's pipeline does not call it. Here the expansion lives on the
tokenizer itself, so every caller (a MusicGen processor, AudioLDM2's `encode_prompt`, a collator) gets it:
`install_placeholders` gives one tokenizer instance an `_encode_plus`/`tokenize` that expand placeholders
first (instance attributes: the class and the vocabulary are untouched; the rule is also kept in the
tokenizer's `init_kwargs`, so a saved tokenizer carries it and `restore_placeholders` can reinstall it).

The identifier tokens themselves are added to the tokenizer as added tokens (`<koto:0>`, `<koto:1>`, ...);
the ids the tokenizer gives them are read back and handed to the embedding layers, which answer them from
the learned table (`layer.py`); `binding.py` ties a model's tokenizers to the tuner.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from transformers import AddedToken, AutoProcessor

from ...adapters.base import is_pipeline

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
    processor = AutoProcessor.from_pretrained(path, **kwargs)
    restore_placeholders(processor)
    return processor


def capture_placeholders(tokenizer: Any) -> Callable[[], None]:
    """Remember the placeholder rules of a tokenizer; calling the result puts exactly those rules back.

    The one way musicpeft undoes what attaching a concept adapter did to a tokenizer, used by the tuner when
    it refuses an adapter and by `musicpeft.adapters.rollback` when a load is refused. Only the rules are
    restored: identifier tokens already added stay in the vocabulary (tokenizers cannot drop added tokens,
    and restoring the tokenizer's other state would put it out of step with its backend).
    """
    definitions = placeholder_definitions(tokenizer)

    def restore() -> None:
        remove_placeholders(tokenizer)
        if definitions:
            install_placeholders(tokenizer, definitions)

    return restore
