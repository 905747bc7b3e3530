"""Prompt sets for evaluation: prompts grouped into categories, read from a JSON or JSON-lines file.

Why categories: the prompt tuning paper scores four groups of 20 prompts (instruments, genres,
cultural themes, stories) separately, because an adapter trained on instrument and genre data helps
those prompts far more than the others; one average over all prompts would hide that. Two file
shapes are accepted, both plain JSON so they diff and review well:

* a JSON object ``{"instruments": ["prompt", ...], "genres": [...]}`` (categories in file order);
* JSON lines, one ``{"category": "...", "prompt": "..."}`` object per line (other keys are ignored).

Anything else fails with an error naming the file and, where there is one, the line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

SHAPES = 'a JSON object {"category": ["prompt", ...]} or JSON lines {"category": "...", "prompt": "..."}'


@dataclass(frozen=True)
class PromptSet:
    """Prompts in file order, each with its category; ``source`` is the file they came from."""

    prompts: tuple[str, ...]
    categories: tuple[str, ...]
    source: str = ""

    def __len__(self) -> int:
        return len(self.prompts)

    def category_names(self) -> list[str]:
        """Categories in order of first appearance."""
        return list(dict.fromkeys(self.categories))

    def limit(self, per_category: int | None) -> PromptSet:
        """The first ``per_category`` prompts of each category (all of them for None), order kept."""
        if per_category is None:
            return self
        if per_category < 1:
            raise ValueError(f"max_prompts_per_category must be >= 1 or None, got {per_category}")
        seen: dict[str, int] = {}
        keep = []
        for prompt, category in zip(self.prompts, self.categories, strict=True):
            seen[category] = seen.get(category, 0) + 1
            if seen[category] <= per_category:
                keep.append((prompt, category))
        return PromptSet(tuple(p for p, _ in keep), tuple(c for _, c in keep), self.source)


def _text(value: object, where: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {what} must be a non-empty string, got {value!r}")
    return value.strip()


def _from_mapping(data: dict, path: str) -> PromptSet:
    if not data:
        raise ValueError(f"{path}: the JSON object has no categories; expected {SHAPES}")
    prompts: list[str] = []
    categories: list[str] = []
    for category, items in data.items():
        where = f"{path}: category {category!r}"
        _text(category, path, "a category name")
        if not isinstance(items, list) or not items:
            raise ValueError(f"{where}: expected a non-empty list of prompt strings, got {items!r}")
        for i, item in enumerate(items):
            prompts.append(_text(item, f"{where} item {i}", "a prompt"))
            categories.append(category.strip())
    return PromptSet(tuple(prompts), tuple(categories), path)


def _record(record: object, where: str) -> tuple[str, str]:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object with 'category' and 'prompt', got {record!r}")
    missing = [key for key in ("category", "prompt") if key not in record]
    if missing:
        raise ValueError(f"{where}: the object has no {' or '.join(repr(m) for m in missing)} key; got {record!r}")
    return _text(record["prompt"], where, "'prompt'"), _text(record["category"], where, "'category'")


def _from_lines(text: str, path: str) -> PromptSet:
    prompts: list[str] = []
    categories: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err.msg}); expected {SHAPES}") from None
        prompt, category = _record(record, where)
        prompts.append(prompt)
        categories.append(category)
    return PromptSet(tuple(prompts), tuple(categories), path)


def _first_line_is_record(text: str) -> bool:
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def load_prompt_set(path: str | os.PathLike) -> PromptSet:
    """Read a prompts file (see the module docstring for its two shapes).

    Raises:
        FileNotFoundError: no such file.
        ValueError: anything else than the two shapes, an empty category, an empty or non-string
            prompt; the message names the file and the line (JSON lines) or the category and item.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such prompts file (expected {SHAPES})")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err}); expected {SHAPES}") from None
    if not text.strip():
        raise ValueError(f"{path}: the file is empty; expected {SHAPES}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if _first_line_is_record(text):
            return _from_lines(text, path)
        raise ValueError(f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg}); expected {SHAPES}") from None
    if isinstance(data, dict) and isinstance(data.get("prompt"), str):
        return _from_lines(text, path)  # a JSON-lines file of a single record
    if not isinstance(data, dict):
        raise ValueError(f"{path}:1: the file holds a JSON {type(data).__name__}; expected {SHAPES}")
    return _from_mapping(data, path)
