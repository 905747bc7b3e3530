"""Undo everything a failed adapter load did to a model or pipeline.

`musicpeft.adapters.peft_guards` puts the same guarantee on peft's own `PeftModel.from_pretrained` and
`load_adapter`.

Attaching an adapter changes the base in place before its weights are read: peft replaces modules with
wrappers, our soft prompt adds a child and hooks to a text encoder, `requires_grad` flags flip, a
pipeline's `encode_prompt` is wrapped, accelerate's hooks may be removed. When loading is then refused
(a bad file, a size mismatch), all of that must go, or the user is left with a half-adapted model that
generates something else than before without any sign of it.

`restore_on_error` takes a shallow snapshot of the Python state of every module (its `__dict__`, and a
copy of each dict or set in it: children, parameters, buffers, hooks) and of the given plain objects,
plus every parameter's `requires_grad`. On an exception it puts all of it back. Tensor contents are not
copied: the loaders check a file completely before copying any value, so base weights are never written.

Tokenizers (bound to a model, a processor's, a pipeline's) are shared objects whose backend cannot be rolled
back: for them only the placeholder rules a concept adapter installs are put back, by the concept method's
own `capture_placeholders`, whichever way the tokenizer was reached.
"""

from __future__ import annotations

import contextlib
import types
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from ..tuners.concept_identifier.placeholders import capture_placeholders
from .base import bound_tokenizers


def _containers(state: dict[str, Any]) -> dict[str, Any]:
    # Exact types only: subclasses such as diffusers' FrozenDict cannot be edited (and are replaced, not edited).
    return {key: value.copy() for key, value in state.items() if type(value) in (dict, OrderedDict, set)}


def _is_plain_object(value: Any) -> bool:
    """An instance with its own attributes (a tokenizer, a scheduler), not a class, function or module."""
    return hasattr(value, "__dict__") and not isinstance(value, (type, types.FunctionType, types.ModuleType,
                                                                  types.MethodType))


class _Snapshot:
    def __init__(self, objects: list[Any]) -> None:
        self.states: list[tuple[Any, dict[str, Any], dict[str, Any]]] = []
        self.grads: list[tuple[nn.Parameter, bool]] = []
        self.tokenizers: list[Any] = []
        seen: set[int] = set()
        for obj in objects:
            items = list(obj.modules()) if isinstance(obj, nn.Module) else [obj]
            if isinstance(obj, nn.Module):
                self._add_tokenizers(bound_tokenizers(obj).values())
            elif not isinstance(obj, PreTrainedTokenizerBase):
                # A pipeline or processor: its modules, and its other parts (tokenizers, scheduler) one level deep.
                parts = [v for v in vars(obj).values() if isinstance(v, nn.Module) or _is_plain_object(v)]
                items += [m for part in parts for m in (part.modules() if isinstance(part, nn.Module) else [part])]
            for item in items:
                if isinstance(item, PreTrainedTokenizerBase):
                    self._add_tokenizers([item])
                    continue
                if id(item) in seen:
                    continue
                seen.add(id(item))
                state = vars(item)
                self.states.append((item, dict(state), _containers(state)))
                if isinstance(item, nn.Module):
                    self.grads += [(p, p.requires_grad) for p in item.parameters(recurse=False)]
        self.restore_tokenizers = [capture_placeholders(tokenizer) for tokenizer in self.tokenizers]

    def _add_tokenizers(self, tokenizers: Any) -> None:
        for tokenizer in tokenizers:
            if all(tokenizer is not known for known in self.tokenizers):
                self.tokenizers.append(tokenizer)

    def restore(self) -> None:
        for restore in self.restore_tokenizers:
            restore()
        for item, state, containers in self.states:
            current = vars(item)
            for key in [k for k in current if k not in state]:
                del current[key]
            for key, value in state.items():
                if key in containers:
                    value.clear()
                    value.update(containers[key])
                current[key] = value
        for param, requires_grad in self.grads:
            param.requires_grad_(requires_grad)


@contextlib.contextmanager
def restore_on_error(*objects: Any) -> Iterator[None]:
    """Run the block; if it raises, return `objects` (modules, pipelines) to their state before it."""
    snapshot = _Snapshot([obj for obj in objects if obj is not None])
    try:
        yield
    except BaseException:
        snapshot.restore()
        raise
