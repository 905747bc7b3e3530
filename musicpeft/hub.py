"""Publish an adapter on the Hugging Face Hub with a model card that says how to load it.

`push_adapter_to_hub` saves the adapter exactly as `musicpeft.save_adapter` does (safetensors only),
adds a `README.md` rendered by `render_model_card`, and uploads the folder in one commit with
`HfApi.upload_folder`. The card's YAML header (`library_name: peft`, tags, `base_model`,
`pipeline_tag`) is what makes the adapter findable on the Hub and lets the Hub link it to its base
model; its body documents the method, the hyper-parameters and both ways to load it (musicpeft and
plain peft), since a peft plugin's adapters load with `PeftModel.from_pretrained` only after
`import musicpeft`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peft import PeftConfig

from .families import ModelFamily, family_of, get_family

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "model_cards" / "adapter.md"

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

# How the card's snippets build the base object, per family: (import line, variable, loader call).
_BASE_LOADERS = {
    "musicgen": (
        "from transformers import MusicgenForConditionalGeneration",
        "model",
        "MusicgenForConditionalGeneration.from_pretrained({base})",
    ),
    "audioldm2": ("from diffusers import AudioLDM2Pipeline", "pipe", "AudioLDM2Pipeline.from_pretrained({base})"),
}
_CONFIG_NOISE = {"task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def push_adapter_to_hub(
    model_or_pipe: Any,
    repo_id: str,
    adapter_name: str = "default",
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    model_card: dict[str, Any] | None = None,
) -> str:
    """Upload one adapter (weights, config, model card) to the Hub repo `repo_id`; returns the commit URL.

    The repo is created if needed (`private` applies only then). `model_card` fills the card's optional
    parts; see `CARD_KEYS`. Nothing is uploaded if the model card cannot be rendered.
    """
    from .api import save_adapter

    _check_card_keys(model_card or {})
    family = family_of(model_or_pipe)
    with tempfile.TemporaryDirectory(prefix="musicpeft-push-") as folder:
        save_adapter(model_or_pipe, folder, adapter_name)
        return _upload(folder, repo_id, family, private, token, commit_message, model_card)


def push_adapter_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    model_card: dict[str, Any] | None = None,
) -> str:
    """Upload an adapter folder written by `musicpeft.save_adapter` (what `musicpeft push` does)."""
    import shutil

    from .adapter_files import AdapterFileError, check_local_adapter_folder
    from .api import MANIFEST_NAME

    folder = os.fspath(folder)
    manifest, config = os.path.join(folder, MANIFEST_NAME), os.path.join(folder, "adapter_config.json")
    source = manifest if os.path.isfile(manifest) else config
    if not os.path.isfile(source):
        raise AdapterFileError(f"{folder}: neither {MANIFEST_NAME} nor adapter_config.json; not an adapter folder.")
    with open(source) as handle:
        record = json.load(handle)
    family_name = record.get("family", record.get("base_family"))
    if family_name is None:
        raise AdapterFileError(f"{source}: names no model family; save the adapter with musicpeft.save_adapter.")
    family = get_family(family_name)
    for subfolder in record.get("components", {}).values() or ["."]:
        check_local_adapter_folder(os.path.join(folder, subfolder))
    _check_card_keys(model_card or {})
    with tempfile.TemporaryDirectory(prefix="musicpeft-push-") as staging:
        # A copy, so that the README written for the Hub never lands in the user's folder.
        staged = os.path.join(staging, "adapter")
        shutil.copytree(folder, staged, ignore=shutil.ignore_patterns("README.md", ".*"))
        return _upload(staged, repo_id, family, private, token, commit_message, model_card)


def _upload(folder, repo_id, family, private, token, commit_message, model_card) -> str:
    from huggingface_hub import HfApi

    configs = _saved_configs(folder)
    card_config = configs[None] if list(configs) == [None] else configs
    num_parameters = _count_parameters(folder)
    card = render_model_card(card_config, family, model_card, repo_id=repo_id, num_parameters=num_parameters)
    api = HfApi(token=token)
    repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if repo.repo_id != repo_id:  # "name" alone: the Hub put it in the token owner's namespace
        card = render_model_card(card_config, family, model_card, repo_id=repo.repo_id, num_parameters=num_parameters)
    Path(folder, "README.md").write_text(card, encoding="utf-8")
    method = _method_name(next(iter(configs.values())))
    info = api.upload_folder(
        folder_path=folder,
        repo_id=repo.repo_id,
        repo_type="model",
        commit_message=commit_message or f"Upload {method} adapter with musicpeft",
    )
    return str(info.commit_url)


def render_model_card(
    config: PeftConfig | Mapping[str, PeftConfig],
    family: ModelFamily | str,
    extra: Mapping[str, Any] | None = None,
    *,
    repo_id: str | None = None,
    num_parameters: int | None = None,
) -> str:
    """The README.md (YAML metadata + body) for an adapter.

    `config` is the adapter's config, or {component: config} for a pipeline adapter with one peft
    adapter per component (as `save_adapter` lays it out in subfolders). `extra` holds the optional
    parts listed in `CARD_KEYS`.
    """
    import peft
    from huggingface_hub import ModelCard, ModelCardData

    from . import __version__

    extra = dict(extra or {})
    _check_card_keys(extra)
    family = get_family(family) if isinstance(family, str) else family
    components = dict(config) if isinstance(config, Mapping) else {None: config}
    if not components:
        raise ValueError("render_model_card needs at least one adapter config; got an empty mapping.")
    first = next(iter(components.values()))
    method = _method_name(first)
    base_model = extra.get("base_model") or _hub_base_model(components.values())
    tags = ["musicpeft", "text-to-music", method.lower().replace("_", "-"), family.name]
    tags += [t for t in _as_list(extra.get("tags"), "tags") if t not in tags]
    card_data = ModelCardData(
        library_name="peft",
        pipeline_tag="text-to-audio",
        tags=tags,
        base_model=base_model,
        license=extra.get("license"),
        language=extra.get("language"),
        datasets=_as_list(extra.get("datasets"), "datasets") or None,
    )
    base_import, base_var, base_load = _BASE_LOADERS.get(
        family.name, (f"# build the {family.name} base model or pipeline", "model", "...")
    )
    config_cls = type(first)
    doc = (config_cls.__doc__ or "").strip().splitlines()
    card = ModelCard.from_template(
        card_data,
        template_path=str(_template_path()),
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
        base_import=base_import,
        base_var=base_var,
        base_load=base_load.format(base=json.dumps(base_model or "<base model id>")),
        repo_id=repo_id or "<user>/<repo>",
        training_data=extra.get("training_data"),
        metrics=_metrics(extra.get("metrics")),
        musicpeft_version=__version__,
        peft_version=peft.__version__,
    )
    return str(card)


def _method_name(config: PeftConfig) -> str:
    # peft_type is a str Enum (whose f-string is "PeftType.X") once registered, or a plain str.
    return str(getattr(config.peft_type, "value", config.peft_type))


def _check_card_keys(extra: Mapping[str, Any]) -> None:
    unknown = sorted(set(extra) - set(CARD_KEYS))
    if unknown:
        expected = "; ".join(f"{k}: {v}" for k, v in CARD_KEYS.items())
        raise ValueError(f"model_card has unknown key(s) {', '.join(map(repr, unknown))}. Expected keys — {expected}.")


def _template_path() -> Path:
    if not TEMPLATE_PATH.is_file():
        raise FileNotFoundError(
            f"Model card template {TEMPLATE_PATH} is missing; musicpeft reads it from its source tree "
            "(install musicpeft from a checkout, e.g. `pip install -e .`)."
        )
    return TEMPLATE_PATH


def _saved_configs(folder: str) -> dict[str | None, PeftConfig]:
    """The adapter configs `save_adapter` wrote: at the root (None) or one per component subfolder."""
    configs: dict[str | None, PeftConfig] = {}
    for config_file in sorted(Path(folder).rglob("adapter_config.json")):
        sub = config_file.parent.relative_to(folder)
        configs[None if sub == Path(".") else sub.as_posix()] = PeftConfig.from_pretrained(str(config_file.parent))
    if not configs:
        raise ValueError(f"save_adapter wrote no adapter_config.json under {folder}; nothing to push.")
    return configs


def _count_parameters(folder: str) -> int:
    from safetensors import safe_open

    total = 0
    for weights in Path(folder).rglob("adapter_model.safetensors"):
        with safe_open(str(weights), framework="pt") as handle:
            for key in handle.keys():
                n = 1
                for dim in handle.get_slice(key).get_shape():
                    n *= dim
                total += n
    return total


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
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"model_card[{key!r}] must be a string or a list of strings, got {value!r}.")


def _public_name(cls: type) -> str:
    import musicpeft

    if cls.__module__.startswith("musicpeft") and getattr(musicpeft, cls.__name__, None) is cls:
        return f"musicpeft.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"
