"""One way to attach, save and load adapters, whatever the model family.

`add_adapter`, `save_adapter` and `load_adapter` take a MusicGen model (or a PeftModel around one) or an
AudioLDM2 pipeline. They check everything they can before touching a weight, save atomically (each file
is written to a temporary name and renamed), and read safetensors only.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
from typing import Any

from peft import PeftConfig, PeftModel, get_peft_model, get_peft_model_state_dict

from . import concepts
from .adapter_files import CONFIG_NAME, SAFETENSORS_NAME, AdapterFileError, check_local_adapter_folder
from .families import ModelFamily, family_of, pipeline_adapters

MANIFEST_NAME = pipeline_adapters.MANIFEST_NAME


def _is_pipeline(family: ModelFamily) -> bool:
    """Pipeline families adapt components; model families are one nn.Module adapted as peft does."""
    return family.extra.get("adapted_component") is not None


def write_manifest(directory: str, family: str, components: dict[str, str]) -> None:
    """`musicpeft_adapter.json`: which family an adapter folder is for and which component each subfolder adapts."""
    import json

    payload = json.dumps({"family": family, "components": components}, indent=2)

    def write(path: str) -> None:
        with open(path, "w") as handle:
            handle.write(payload + "\n")

    _write_atomically(directory, {MANIFEST_NAME: write})


def read_manifest(folder: str, family: ModelFamily) -> dict | None:
    """The folder's manifest (None for a plain peft folder); refuses an adapter made for another family."""
    import json

    path = os.path.join(folder, MANIFEST_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as handle:
            manifest = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise AdapterFileError(f"{path}: unreadable manifest ({err}).") from None
    if manifest.get("family") != family.name:
        raise AdapterFileError(
            f"{folder} holds an adapter for the {manifest.get('family')!r} family; this is a {family.name} "
            "model. Load it onto a model of its own family."
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
        return concepts.add_pipeline_adapter(model_or_pipe, config, adapter_name)
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


def _write_atomically(directory: str, files: dict[str, Any]) -> None:
    """files: name -> callable(path) writing that file. Each lands under its final name only when complete."""
    os.makedirs(directory, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".musicpeft-", dir=directory)
    try:
        for name, write in files.items():
            write(os.path.join(staging, name))
        for name in files:
            os.replace(os.path.join(staging, name), os.path.join(directory, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_peft_adapter(peft_model: PeftModel, directory: str, adapter_name: str = "default") -> None:
    """Save one adapter of a PeftModel in peft's layout, at the root of `directory`."""
    from safetensors.torch import save_file

    if adapter_name not in peft_model.peft_config:
        known = ", ".join(peft_model.peft_config)
        raise ValueError(f"No adapter named {adapter_name!r}; this model has: {known}.")
    state = get_peft_model_state_dict(peft_model, adapter_name=adapter_name)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    config = copy.deepcopy(peft_model.peft_config[adapter_name])
    config.inference_mode = True

    def write_config(path: str) -> None:
        config.save_pretrained(os.path.dirname(path))
        produced = os.path.join(os.path.dirname(path), CONFIG_NAME)
        if produced != path:
            os.replace(produced, path)

    _write_atomically(
        directory,
        {
            SAFETENSORS_NAME: lambda path: save_file(state, path, metadata={"format": "pt"}),
            CONFIG_NAME: write_config,
        },
    )


def save_adapter(model_or_pipe: Any, directory: str | os.PathLike, adapter_name: str = "default") -> str:
    """Write `adapter_config.json` + `adapter_model.safetensors` (per adapted component for pipelines)."""
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
    save_peft_adapter(peft_model, directory, adapter_name)
    write_manifest(directory, family.name, {})
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


def _is_offloaded(model: Any) -> bool:
    """A base dispatched with parts on "cpu"/"disk", which peft's from_pretrained would re-dispatch."""
    return bool({"cpu", "disk"} & set((getattr(model, "hf_device_map", None) or {}).values()))


def _load_keeping_offload(model: Any, folder: str, adapter_name: str, is_trainable: bool) -> PeftModel:
    """Attach, then load the weights, keeping accelerate's offload hooks in place.

    `PeftModel.from_pretrained` removes the hooks of a CPU/disk-offloaded base and re-dispatches the whole
    model, which on a machine without an accelerator needs the device map again and loses adapter weights
    that sit inside disk-offloaded modules (the same holds for stock LoRA).
    """
    from peft import set_peft_model_state_dict
    from peft.utils import save_and_load

    config = PeftConfig.from_pretrained(folder)
    config.inference_mode = not is_trainable
    peft_model = get_peft_model(model, config, adapter_name=adapter_name)
    result = set_peft_model_state_dict(peft_model, save_and_load.load_peft_weights(folder), adapter_name=adapter_name)
    if result.unexpected_keys:
        raise AdapterFileError(f"{folder}: weights that match no adapter module: {result.unexpected_keys[:5]}.")
    if not is_trainable:
        peft_model.requires_grad_(False)
    return peft_model


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
    `adapter_model.bin` files are refused unless `allow_pickle=True`.
    """
    from .adapter_files import allow_pickle_adapters

    hub_keys = ("revision", "token", "cache_dir", "local_files_only", "subfolder")
    hub_kwargs = {k: kwargs.pop(k) for k in hub_keys if k in kwargs}
    folder = resolve_source(source, allow_pickle=allow_pickle, **hub_kwargs)
    family = family_of(model_or_pipe)
    if _is_pipeline(family) and not kwargs and concepts.is_concept_adapter(folder):
        return concepts.load_pipeline_adapter(
            model_or_pipe, folder, adapter_name, is_trainable=is_trainable, allow_pickle=allow_pickle
        )
    if _is_pipeline(family):
        if kwargs:
            raise TypeError(f"load_adapter got unexpected arguments for a {family.name} pipeline: {', '.join(kwargs)}.")
        return pipeline_adapters.load_adapter(
            model_or_pipe, folder, adapter_name, family, is_trainable=is_trainable, allow_pickle=allow_pickle
        )
    read_manifest(folder, family)
    processor = kwargs.pop("processor", None)
    if processor is not None:
        concepts.bind_processor(model_or_pipe, processor)
    if kwargs:
        raise TypeError(f"load_adapter got unexpected arguments for a {family.name} model: {', '.join(kwargs)}.")
    check_local_adapter_folder(folder, allow_pickle=allow_pickle)
    peft_model = _peft_model(model_or_pipe)
    with allow_pickle_adapters() if allow_pickle else contextlib.nullcontext():
        if peft_model is not None:
            peft_model.load_adapter(folder, adapter_name, is_trainable=is_trainable)
            peft_model.set_adapter(adapter_name)
        elif _is_offloaded(model_or_pipe):
            peft_model = _load_keeping_offload(model_or_pipe, folder, adapter_name, is_trainable)
            _remember(model_or_pipe, peft_model)
        else:
            peft_model = PeftModel.from_pretrained(
                model_or_pipe, folder, adapter_name=adapter_name, is_trainable=is_trainable
            )
            _remember(model_or_pipe, peft_model)
    return peft_model
