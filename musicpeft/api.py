"""One way to attach, save and load adapters, whatever the model family.

`add_adapter`, `save_adapter` and `load_adapter` take a MusicGen model (or a PeftModel around one) or an
AudioLDM2 pipeline. They check everything they can before touching a weight, undo what they attached
when a load is refused, save a whole folder all or nothing, and read safetensors only.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from typing import Any

from peft import PeftConfig, PeftModel, get_peft_model, get_peft_model_state_dict

from . import concepts
from .adapter_files import (
    SAFETENSORS_NAME,
    AdapterFileError,
    check_local_adapter_folder,
    read_adapter_config,
    read_safetensors_header,
)
from .atomic_folder import write_folder_atomically
from .families import ModelFamily, family_of, pipeline_adapters
from .rollback import restore_on_error
from .tuners.strict_loading import check_checkpoint

MANIFEST_NAME = pipeline_adapters.MANIFEST_NAME


def _is_pipeline(family: ModelFamily) -> bool:
    """Pipeline families adapt components; model families are one nn.Module adapted as peft does."""
    return family.extra.get("adapted_component") is not None


def manifest_payload(family: str, components: dict[str, str]) -> str:
    """`musicpeft_adapter.json`: which family an adapter folder is for, which component each subfolder adapts."""
    return json.dumps({"family": family, "components": components}, indent=2) + "\n"


def write_manifest(directory: str, family: str, components: dict[str, str]) -> None:
    """Write `musicpeft_adapter.json` into an existing folder (atomically for that one file)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, MANIFEST_NAME)
    with open(path + ".tmp", "w") as handle:
        handle.write(manifest_payload(family, components))
    os.replace(path + ".tmp", path)


def read_manifest(folder: str, family: ModelFamily) -> dict | None:
    """The folder's manifest, validated (None for a plain peft folder); refuses an adapter made for another family.

    A pipeline manifest must name at least one component, each a subfolder inside `folder` (no absolute
    paths, no `..`, no links out of the folder) holding an adapter config. A model manifest names none.
    """
    path = os.path.join(folder, MANIFEST_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as handle:
            manifest = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AdapterFileError(f"{path}: unreadable manifest ({err}).") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("family"), str):
        raise AdapterFileError(f"{path}: expected a JSON object with a string 'family', got {manifest!r:.200}.")
    if manifest["family"] != family.name:
        raise AdapterFileError(
            f"{folder} holds an adapter for the {manifest.get('family')!r} family; this is a {family.name} "
            "model. Load it onto a model of its own family."
        )
    components = manifest.get("components", {})
    if not isinstance(components, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in components.items()
    ):
        raise AdapterFileError(f"{path}: 'components' must map component names to subfolder names, got "
                               f"{components!r:.200}.")
    if _is_pipeline(family) and not components:
        raise AdapterFileError(f"{path}: 'components' is empty; the manifest names no adapter to load.")
    if not _is_pipeline(family) and components:
        raise AdapterFileError(f"{path}: a {family.name} adapter lives at the folder's root; 'components' must be "
                               f"empty, got {components}.")
    root = os.path.realpath(folder)
    for component, subfolder in components.items():
        target = os.path.realpath(os.path.join(folder, subfolder))
        if os.path.isabs(subfolder) or ".." in subfolder.replace("\\", "/").split("/") or \
                os.path.commonpath([root, target]) != root:
            raise AdapterFileError(
                f"{path}: component {component!r} points to {subfolder!r}, outside the adapter folder; "
                "only subfolders of the folder are loaded."
            )
    return manifest


def _peft_model(obj: Any) -> PeftModel | None:
    return obj if isinstance(obj, PeftModel) else getattr(obj, "_musicpeft_peft_model", None)


def _remember(model: Any, peft_model: PeftModel) -> None:
    # object.__setattr__: nn.Module.__setattr__ would register the PeftModel as a child of its own base model.
    object.__setattr__(model, "_musicpeft_peft_model", peft_model)


def add_adapter(model_or_pipe: Any, config: PeftConfig, adapter_name: str = "default") -> PeftModel:
    """Attach a new, trainable adapter; the model is adapted in place and its PeftModel is returned."""
    family = family_of(model_or_pipe)
    if _is_pipeline(family) and concepts.is_concept_adapter(config):
        peft_model = concepts.add_pipeline_adapter(model_or_pipe, config, adapter_name)
        pipeline_adapters.freeze_unadapted(model_or_pipe)
        pipeline_adapters.protect_save_pretrained(model_or_pipe)
        return peft_model
    if _is_pipeline(family):
        return pipeline_adapters.add_adapter(model_or_pipe, config, adapter_name, family)
    peft_model = _peft_model(model_or_pipe)
    if peft_model is not None:
        if adapter_name in peft_model.peft_config:
            raise ValueError(f"An adapter named {adapter_name!r} already exists; pick another adapter_name.")
        peft_model.add_adapter(adapter_name, config)
        peft_model.set_adapter(adapter_name)
        return peft_model
    peft_model = get_peft_model(model_or_pipe, config, adapter_name=adapter_name)
    _remember(model_or_pipe, peft_model)
    return peft_model


def write_peft_adapter(peft_model: PeftModel, folder: str, adapter_name: str = "default") -> None:
    """Write one adapter of a PeftModel in peft's layout into `folder` (plain writes: `folder` is a staging folder)."""
    from safetensors.torch import save_file

    if adapter_name not in peft_model.peft_config:
        known = ", ".join(peft_model.peft_config)
        raise ValueError(f"No adapter named {adapter_name!r}; this model has: {known}.")
    state = get_peft_model_state_dict(peft_model, adapter_name=adapter_name)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    config = copy.deepcopy(peft_model.peft_config[adapter_name])
    config.inference_mode = True
    os.makedirs(folder, exist_ok=True)
    save_file(state, os.path.join(folder, SAFETENSORS_NAME), metadata={"format": "pt"})
    config.save_pretrained(folder)


def save_peft_adapter(peft_model: PeftModel, directory: str, adapter_name: str = "default") -> None:
    """Save one adapter of a PeftModel in peft's layout, at the root of `directory`, all or nothing."""
    if adapter_name not in peft_model.peft_config:
        known = ", ".join(peft_model.peft_config)
        raise ValueError(f"No adapter named {adapter_name!r}; this model has: {known}.")
    write_folder_atomically(directory, lambda folder: write_peft_adapter(peft_model, folder, adapter_name))


def save_adapter(model_or_pipe: Any, directory: str | os.PathLike, adapter_name: str = "default") -> str:
    """Write `adapter_config.json` + `adapter_model.safetensors` (per adapted component for pipelines).

    The folder is replaced all or nothing (see `musicpeft.atomic_folder`): a crash mid-save leaves the
    previous adapter in place, never a mix of old and new files.
    """
    directory = os.fspath(directory)
    family = family_of(model_or_pipe)
    concept_model = concepts.pipeline_peft_model(model_or_pipe) if _is_pipeline(family) else None
    if concept_model is not None and adapter_name in concept_model.peft_config:
        return concepts.save_pipeline_adapter(model_or_pipe, directory, adapter_name)
    if _is_pipeline(family):
        pipeline_adapters.save_adapter(model_or_pipe, directory, adapter_name, family)
        return directory
    peft_model = _peft_model(model_or_pipe)
    if peft_model is None:
        raise ValueError("This model has no adapter to save; attach one with musicpeft.add_adapter first.")
    if adapter_name not in peft_model.peft_config:
        known = ", ".join(peft_model.peft_config)
        raise ValueError(f"No adapter named {adapter_name!r}; this model has: {known}.")

    def write(folder: str) -> None:
        write_peft_adapter(peft_model, folder, adapter_name)
        write_manifest(folder, family.name, {})

    write_folder_atomically(directory, write)
    return directory


def resolve_source(source: str | os.PathLike, allow_pickle: bool = False, **hub_kwargs: Any) -> str:
    """A local adapter folder for `source` (a folder, or a Hub repo id fetched with huggingface_hub)."""
    source = os.fspath(source)
    if os.path.isdir(source):
        return source
    if os.path.exists(source):
        raise AdapterFileError(f"{source} is a file; load_adapter expects an adapter folder or a Hub repo id.")
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.md", "*.txt"] + (["*.bin"] if allow_pickle else [])
    try:
        folder = snapshot_download(source, allow_patterns=patterns, **hub_kwargs)
    except Exception as err:
        raise AdapterFileError(
            f"{source!r} is neither a local adapter folder nor a reachable Hub repo ({err})."
        ) from None
    if not allow_pickle and not any(name.endswith(".safetensors") for _, _, names in os.walk(folder) for name in names):
        from huggingface_hub import HfApi

        files = HfApi().list_repo_files(source, revision=hub_kwargs.get("revision"), token=hub_kwargs.get("token"))
        pickles = [name for name in files if name.endswith(".bin")]
        if pickles:
            raise AdapterFileError(
                f"{source} holds only pickled weights ({', '.join(pickles)}); musicpeft loads safetensors only. "
                "If you trust this repo, pass allow_pickle=True."
            )
    return folder


def attach_from_folder(
    model: Any, folder: str, adapter_name: str, *, is_trainable: bool, peft_model: PeftModel | None = None
) -> PeftModel:
    """Attach the adapter saved in `folder` to `model` (or add it to `peft_model`), checking before copying.

    Unlike `PeftModel.from_pretrained`, the file is compared with what the config creates before any
    value is copied: keys the config does not create (which peft would write into the base model),
    missing keys, float/integer mix-ups, shapes and NaN/Inf are refused, naming the file. It also keeps
    accelerate's offload hooks of a CPU/disk-offloaded base (peft would re-dispatch the whole model, which
    needs the device map again and loses adapter weights inside disk-offloaded modules).
    Callers wrap it in `rollback.restore_on_error`: a refusal after attaching then undoes the attaching.
    """
    from peft import set_peft_model_state_dict
    from peft.utils import save_and_load

    config = read_adapter_config(folder)
    weights_path = check_local_adapter_folder(folder)
    if weights_path.endswith(".safetensors"):
        header = read_safetensors_header(weights_path)
        config = _bind_source(config, folder, header)
    config.inference_mode = not is_trainable
    if peft_model is None:
        peft_model = get_peft_model(model, config, adapter_name=adapter_name)
    else:
        if adapter_name in peft_model.peft_config:
            raise ValueError(f"An adapter named {adapter_name!r} already exists; pick another adapter_name.")
        peft_model.add_adapter(adapter_name, config)
    expected = get_peft_model_state_dict(peft_model, adapter_name=adapter_name)
    key_mapping = None if config.is_prompt_learning else getattr(model, "_checkpoint_conversion_mapping", None)
    weights = save_and_load.load_peft_weights(folder, device="cpu", key_mapping=key_mapping or None)
    try:
        check_checkpoint(expected, weights, weights_path)
    except ValueError as err:
        raise AdapterFileError(str(err)) from None
    try:
        set_peft_model_state_dict(peft_model, weights, adapter_name=adapter_name)
    except RuntimeError as err:  # torch's size-mismatch report
        raise AdapterFileError(f"{weights_path}: does not fit this model ({err}).") from None
    if is_trainable and peft_model.active_adapter != adapter_name:
        peft_model.set_requires_grad(adapter_name)  # add_adapter leaves a new, inactive adapter frozen
    if not is_trainable:
        peft_model.eval()
    return peft_model


def _bind_source(config: PeftConfig, folder: str, header: dict) -> PeftConfig:
    """Let a musicpeft tuner check its config against the file's shapes before it allocates anything."""
    from .tuners.soft_prompt.config import SoftMusicPromptConfig

    if isinstance(config, SoftMusicPromptConfig):
        config.bind_weights_header(os.path.join(folder, SAFETENSORS_NAME), header)
    return config


def load_adapter(
    model_or_pipe: Any,
    source: str | os.PathLike,
    adapter_name: str = "default",
    *,
    is_trainable: bool = False,
    allow_pickle: bool = False,
    **kwargs: Any,
) -> Any:
    """Load a saved adapter (local folder or Hub id) onto a model or pipeline; returns the adapted object.

    For MusicGen the return value is a PeftModel (the model is also adapted in place). Pickled
    `adapter_model.bin` files are refused unless `allow_pickle=True`. Every check is made before a
    weight is copied, and a refused load leaves the model or pipeline exactly as it was.
    """
    from .adapter_files import allow_pickle_adapters

    hub_keys = ("revision", "token", "cache_dir", "local_files_only", "subfolder")
    hub_kwargs = {k: kwargs.pop(k) for k in hub_keys if k in kwargs}
    folder = resolve_source(source, allow_pickle=allow_pickle, **hub_kwargs)
    family = family_of(model_or_pipe)
    with restore_on_error(model_or_pipe, _peft_model(model_or_pipe), kwargs.get("processor")):
        with allow_pickle_adapters() if allow_pickle else contextlib.nullcontext():
            return _load(model_or_pipe, folder, adapter_name, family, is_trainable, allow_pickle, kwargs)


def _load(model_or_pipe: Any, folder: str, adapter_name: str, family: ModelFamily, is_trainable: bool,
          allow_pickle: bool, kwargs: dict[str, Any]) -> Any:
    if _is_pipeline(family) and not kwargs and concepts.is_concept_adapter(folder):
        loaded = concepts.load_pipeline_adapter(
            model_or_pipe, folder, adapter_name, is_trainable=is_trainable, allow_pickle=allow_pickle
        )
        pipeline_adapters.protect_save_pretrained(model_or_pipe)
        return loaded
    if _is_pipeline(family):
        if kwargs:
            raise TypeError(f"load_adapter got unexpected arguments for a {family.name} pipeline: {', '.join(kwargs)}.")
        return pipeline_adapters.load_adapter(
            model_or_pipe, folder, adapter_name, family, is_trainable=is_trainable, allow_pickle=allow_pickle
        )
    read_manifest(folder, family)
    processor = kwargs.pop("processor", None)
    if kwargs:
        raise TypeError(f"load_adapter got unexpected arguments for a {family.name} model: {', '.join(kwargs)}.")
    check_local_adapter_folder(folder, allow_pickle=allow_pickle)
    if processor is not None:
        concepts.bind_processor(model_or_pipe, processor)
    peft_model = _peft_model(model_or_pipe)
    if peft_model is not None:
        attach_from_folder(model_or_pipe, folder, adapter_name, is_trainable=is_trainable, peft_model=peft_model)
        peft_model.set_adapter(adapter_name, inference_mode=not is_trainable)
        return peft_model
    peft_model = attach_from_folder(model_or_pipe, folder, adapter_name, is_trainable=is_trainable)
    _remember(model_or_pipe, peft_model)
    return peft_model

