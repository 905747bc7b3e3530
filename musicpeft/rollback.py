"""Undo everything a failed adapter load did to a model or pipeline.

Attaching an adapter changes the base in place before its weights are read: peft replaces modules with
wrappers, our soft prompt adds a child and hooks to a text encoder, `requires_grad` flags flip, a
pipeline's `encode_prompt` is wrapped, accelerate's hooks may be removed. When loading is then refused
(a bad file, a size mismatch), all of that must go, or the user is left with a half-adapted model that
generates something else than before without any sign of it.

`restore_on_error` takes a shallow snapshot of the Python state of every module (its `__dict__`, and a
copy of each dict or set in it: children, parameters, buffers, hooks) and of the given plain objects,
plus every parameter's `requires_grad`. On an exception it puts all of it back. Tensor contents are not
copied: the loaders check a file completely before copying any value, so base weights are never written.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from torch import nn


def _containers(state: dict[str, Any]) -> dict[str, Any]:
    # Exact types only: subclasses such as diffusers' FrozenDict cannot be edited (and are replaced, not edited).
    return {key: value.copy() for key, value in state.items() if type(value) in (dict, OrderedDict, set)}


class _Snapshot:
    def __init__(self, objects: list[Any]) -> None:
        self.states: list[tuple[Any, dict[str, Any], dict[str, Any]]] = []
        self.grads: list[tuple[nn.Parameter, bool]] = []
        seen: set[int] = set()
        for obj in objects:
            modules = list(obj.modules()) if isinstance(obj, nn.Module) else [obj]
            if not isinstance(obj, nn.Module):
                modules += [v for v in vars(obj).values() if isinstance(v, nn.Module)]
                modules = [m for root in modules for m in (root.modules() if isinstance(root, nn.Module) else [root])]
            for item in modules:
                if id(item) in seen:
                    continue
                seen.add(id(item))
                state = vars(item)
                self.states.append((item, dict(state), _containers(state)))
                if isinstance(item, nn.Module):
                    self.grads += [(p, p.requires_grad) for p in item.parameters(recurse=False)]

    def restore(self) -> None:
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
