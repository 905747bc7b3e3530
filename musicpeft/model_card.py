"""The model card (`README.md`) of a pushed adapter: metadata, loading instructions, metrics, audio samples.

Why its own module: the card is what a Hub visitor reads and what makes the adapter findable, so its
YAML metadata must be valid for the Hub (`check_card_metadata` applies the Hub's rules for the fields
we write, offline) and its body must say how to load the adapter, how well it does (the table of a
`musicpeft evaluate` run, `evaluation_table`) and what it sounds like (uploaded samples and their
spectrograms, `spectrogram_png`). The Jinja template ships inside the package
(`musicpeft/templates/adapter_card.md`), so it works from a wheel as well as from a checkout.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft import PeftConfig

from .families import CardSnippet, ModelFamily, get_family
from .io import atomic_write

TEMPLATE = "templates/adapter_card.md"

# Keys accepted in `model_card` / `extra`, with what each one fills.
CARD_KEYS = {
    "description": "a paragraph under the title",
    "base_model": "Hub id of the base model (overrides the one recorded in the adapter config)",
    "license": "license id for the metadata (e.g. 'apache-2.0')",
    "language": "language code(s) of the prompts (metadata)",
    "datasets": "Hub dataset ids the adapter was trained on (metadata)",
    "tags": "extra tags (metadata)",
    "training_data": "the 'Training data' section (markdown)",
    "metrics": "the 'Metrics' section: {metric name: value}",
}

PIPELINE_TAG = "text-to-audio"
_CONFIG_NOISE = {"task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# The columns of the evaluation table: (key in the results' summary / cross-entropy, header).
_EVALUATION_COLUMNS = (
    ("clap_score", "CLAP score ↑"),
    ("kld", "KLD ↓"),
    ("fd_clap", "FD (CLAP) ↓"),
    ("cross_entropy", "token cross-entropy ↓"),
    ("perplexity", "perplexity ↓"),
)


@dataclass
class CardSample:
    """An audio sample as the card links it: its path in the repo and the prompt it was generated from."""

    path: str
    caption: str | None = None


def render_model_card(
    config: PeftConfig | Mapping[str, PeftConfig],
    family: ModelFamily | str,
    extra: Mapping[str, Any] | None = None,
    *,
    repo_id: str | None = None,
    num_parameters: int | None = None,
    evaluation: Mapping[str, Any] | None = None,
    samples: Sequence[CardSample] = (),
    spectrogram: str | None = None,
) -> str:
    """The README.md (YAML metadata + body) for an adapter.

    `config` is the adapter's config, or {component: config} for a pipeline adapter with one peft
    adapter per component (as `save_adapter` lays it out in subfolders). `extra` holds the optional
    parts listed in `CARD_KEYS`; `evaluation` is `evaluation_table(...)`; `samples` and `spectrogram`
    are repo paths of uploaded audio samples and of their spectrogram image.
    """
    import peft
    from huggingface_hub import ModelCard, ModelCardData

    from . import __version__  # lazy: the package's __init__ must have finished (it reaches this module)

    extra = dict(extra or {})
    check_card_keys(extra)
    family = get_family(family)
    components = dict(config) if isinstance(config, Mapping) else {None: config}
    if not components:
        raise ValueError("render_model_card needs at least one adapter config; got an empty mapping.")
    first = next(iter(components.values()))
    method = method_name(first)
    base_model = extra.get("base_model") or _hub_base_model(components.values())
    tags = ["musicpeft", "text-to-music", method.lower().replace("_", "-"), family.name]
    tags += [t for t in _as_list(extra.get("tags"), "tags") if t not in tags]
    card_data = ModelCardData(
        library_name="peft",
        pipeline_tag=PIPELINE_TAG,
        tags=tags,
        base_model=base_model,
        license=extra.get("license"),
        language=extra.get("language"),
        datasets=_as_list(extra.get("datasets"), "datasets") or None,
    )
    snippet = family.card or CardSnippet(f"# build the {family.name} base model or pipeline", "model", "...")
    config_cls = type(first)
    doc = (config_cls.__doc__ or "").strip().splitlines()
    with importlib.resources.as_file(importlib.resources.files("musicpeft").joinpath(TEMPLATE)) as template:
        if not template.is_file():
            raise FileNotFoundError(f"The model card template {template} is missing from this musicpeft install.")
        card = ModelCard.from_template(
            card_data,
            template_path=str(template),
            title=repo_id or f"{method} adapter",
            description=extra.get("description"),
            method=method,
            method_title=config_cls.__name__.removesuffix("Config"),
            method_summary=doc[0] if doc else "",
            config_class=_public_name(config_cls),
            family=family.name,
            base_model=base_model,
            num_parameters=f"{num_parameters:,}" if num_parameters is not None else "not recorded",
            components=[{"name": name, "hyperparameters": _hyperparameters(cfg)} for name, cfg in components.items()],
            base_import=snippet.import_line,
            base_var=snippet.variable,
            base_load=snippet.loader.format(base=json.dumps(base_model or "<base model id>")),
            repo_id=repo_id or "<user>/<repo>",
            training_data=extra.get("training_data"),
            metrics=_metrics(extra.get("metrics")),
            evaluation=evaluation,
            samples=list(samples),
            spectrogram=spectrogram,
            musicpeft_version=__version__,
            peft_version=peft.__version__,
        )
    text = str(card)
    check_card_metadata(text)
    return text


# ---------------------------------------------------------------- metadata rules


def check_card_metadata(text: str) -> dict[str, Any]:
    """The card's YAML metadata, checked offline against the Hub's rules for the fields musicpeft writes.

    The Hub rejects a push whose README metadata is malformed; this raises ValueError naming the field
    instead: a YAML mapping; `library_name`, `pipeline_tag`, `license` strings; `tags`, `datasets`,
    `language` strings or lists of strings; `base_model` one Hub id or a list of them.
    """
    import yaml

    end = text.find("\n---", 3)
    if not text.startswith("---\n") or end < 0:
        raise ValueError("model card: no YAML metadata block at the top (it must start and end with '---').")
    try:
        data = yaml.safe_load(text[4:end])
    except yaml.YAMLError as err:
        raise ValueError(f"model card metadata: not valid YAML ({err}).") from None
    if not isinstance(data, dict):
        raise ValueError(f"model card metadata: must be a YAML mapping, got {type(data).__name__}.")
    for key in ("library_name", "pipeline_tag", "license"):
        if key in data and not isinstance(data[key], str):
            raise ValueError(f"model card metadata: {key} must be a string, got {data[key]!r}.")
    for key in ("tags", "datasets", "language"):
        value = data.get(key)
        if value is not None and not isinstance(value, str) and not (
            isinstance(value, list) and all(isinstance(v, str) and v for v in value)
        ):
            raise ValueError(f"model card metadata: {key} must be a string or a list of strings, got {value!r}.")
    base = data.get("base_model")
    for name in [base] if isinstance(base, str) else base or []:
        if not isinstance(name, str) or not _HUB_ID.match(name):
            raise ValueError(f"model card metadata: base_model must be Hub model id(s) like 'user/model', "
                             f"got {base!r}.")
    if data.get("library_name") not in (None, "peft", "musicpeft"):
        raise ValueError(f"model card metadata: library_name {data['library_name']!r}; expected 'peft'.")
    return data


# ---------------------------------------------------------------- evaluation results


def evaluation_table(results_path: str | os.PathLike, model: str | None = None, folder: str | None = None) -> dict:
    """The card's metrics table from a `musicpeft evaluate` results.json: the base and this adapter.

    Which adapter of the run is this one: `model` if given, else the one whose source is `folder`,
    else the only adapter of the run. Returns {"model", "description", "columns", "rows", "clips",
    "prompts"} (clips: this adapter's wav paths, absolute).
    """
    path = os.fspath(results_path)
    try:
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
    except OSError as err:
        raise FileNotFoundError(f"results: cannot read {path} ({err.strerror}).") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"results: {path} is not JSON ({err}); pass the results.json of musicpeft evaluate.") from None
    summary = payload.get("summary") if isinstance(payload, dict) else None
    setup = payload.get("setup") if isinstance(payload, dict) else None
    if not isinstance(summary, dict) or not isinstance(setup, dict) or "baseline" not in payload:
        raise ValueError(f"results: {path} has no 'summary', 'setup' and 'baseline'; pass the results.json "
                         "that musicpeft evaluate wrote.")
    baseline = payload["baseline"]
    adapters = [name for name in summary if name != baseline]
    name = model or _which_adapter(setup.get("adapters") or {}, adapters, folder, path)
    if name not in summary or name == baseline:
        raise ValueError(f"results: {path} has no adapter named {name!r}; it has {', '.join(adapters) or 'none'}.")
    cross_entropy = payload.get("token_cross_entropy") or {}
    columns = [(key, header) for key, header in _EVALUATION_COLUMNS
               if any(_value(summary, cross_entropy, n, key) is not None for n in (baseline, name))]
    rows = []
    for row_name, label in ((baseline, f"{baseline} (no adapter)"), (name, f"**{name}** (this adapter)")):
        cells = [_format(_value(summary, cross_entropy, row_name, key)) for key, _ in columns]
        result = (payload.get("results") or {}).get(row_name) or {}
        scored = f"{result.get('num_scored', '?')}/{result.get('num_items', '?')}"
        rows.append({"name": label, "cells": [*cells, scored]})
    prompts = payload.get("prompts") or []
    reference = setup.get("reference") or {}
    description = (
        f"From `musicpeft evaluate` ({len(prompts)} prompts from `{os.path.basename(str(setup.get('prompts_file')))}`, "
        f"one clip per prompt and model with the same seeds; guidance scale {setup.get('guidance_scale')}; "
        f"CLAP model `{setup.get('clap_model')}`; reference `{reference.get('source')}`, "
        f"{reference.get('clips')} clips). CLAP score: text-audio similarity; KLD: divergence of audio-feature "
        "distributions from the reference; FD: Fréchet distance of CLAP embeddings."
    )
    root = os.path.dirname(os.path.abspath(path))
    clips = [os.path.join(root, rel) for rel in (setup.get("clips") or {}).get(name, [])]
    return {"model": name, "description": description, "columns": [h for _, h in columns] + ["scored"],
            "rows": rows, "clips": clips, "prompts": list(prompts)}


def _which_adapter(sources: Mapping[str, str], adapters: list[str], folder: str | None, path: str) -> str:
    if folder is not None:
        here = os.path.realpath(folder)
        matches = [n for n, source in sources.items() if os.path.realpath(source) == here]
        if len(matches) == 1:
            return matches[0]
    if len(adapters) == 1:
        return adapters[0]
    raise ValueError(f"results: {path} compares several adapters ({', '.join(adapters)}); say which one this is "
                     "(--results-model NAME).")


def _value(summary: Mapping, cross_entropy: Mapping, name: str, key: str) -> float | None:
    if key in ("cross_entropy", "perplexity"):
        return (cross_entropy.get(name) or {}).get(key)
    return (summary.get(name) or {}).get(key)


def _format(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "—"
    return f"{value:.4f}"


# ---------------------------------------------------------------- samples


def spectrogram_png(samples: Sequence[tuple[str, str | None]], out_path: str | os.PathLike) -> Path:
    """One log-mel spectrogram per audio file, stacked in one PNG: [(path, caption or None), ...]."""
    import librosa
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np
    import soundfile as sf

    fig, axes = plt.subplots(len(samples), 1, figsize=(8, 2.2 * len(samples)), squeeze=False)
    try:
        for axis, (path, caption) in zip(axes[:, 0], samples, strict=True):
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
            mel = librosa.feature.melspectrogram(y=audio.mean(axis=1), sr=rate, n_mels=64)
            axis.imshow(librosa.power_to_db(mel + 1e-10, ref=np.max), origin="lower", aspect="auto",
                        extent=(0, audio.shape[0] / rate, 0, 64), cmap="magma")
            axis.set_title(caption or os.path.basename(path), fontsize=9)
            axis.set_ylabel("mel band")
        axes[-1, 0].set_xlabel("seconds")
        fig.tight_layout()
        atomic_write(out_path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    finally:
        plt.close(fig)
    return Path(out_path)


# ---------------------------------------------------------------- helpers


def method_name(config: PeftConfig) -> str:
    # peft_type is a str Enum (whose f-string is "PeftType.X") once registered, or a plain str.
    return str(getattr(config.peft_type, "value", config.peft_type))


def check_card_keys(extra: Mapping[str, Any]) -> None:
    unknown = sorted(set(extra) - set(CARD_KEYS))
    if unknown:
        expected = "; ".join(f"{k}: {v}" for k, v in CARD_KEYS.items())
        raise ValueError(f"model_card has unknown key(s) {', '.join(map(repr, unknown))}. Expected keys — {expected}.")


def _hub_base_model(configs: Any) -> str | None:
    """The base model recorded by peft, when it is a Hub id (a local path means nothing to readers)."""
    for cfg in configs:
        name = getattr(cfg, "base_model_name_or_path", None)
        if name and _HUB_ID.match(name) and not os.path.exists(name):
            return name
    return None


def _hyperparameters(config: PeftConfig) -> list[tuple[str, str]]:
    rows = []
    for name, value in sorted(config.to_dict().items()):
        if name in _CONFIG_NOISE or name == "inference_mode" or value is None:
            continue
        text = json.dumps(sorted(value) if isinstance(value, set) else value, default=str)
        rows.append((name, "`" + text.replace("|", "\\|").replace("`", "'") + "`"))
    return rows


def _metrics(metrics: Any) -> list[tuple[str, str]]:
    if metrics is None:
        return []
    if not isinstance(metrics, Mapping):
        raise ValueError(f"model_card['metrics'] must be a mapping {{name: value}}, got {type(metrics).__name__}.")
    return [(str(k).replace("|", "\\|"), str(v).replace("|", "\\|")) for k, v in metrics.items()]


def _as_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"model_card[{key!r}] must be a string or a list of strings, got {value!r}.")


def _public_name(cls: type) -> str:
    import musicpeft  # lazy: the package's __init__ must have finished (it reaches this module)

    if cls.__module__.startswith("musicpeft") and getattr(musicpeft, cls.__name__, None) is cls:
        return f"musicpeft.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"
