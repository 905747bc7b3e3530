"""The one attach path, the one save path and the one load path, for every host and every method.

`add_adapter`, `save_adapter` and `load_adapter` take a model (or a PeftModel around one) or a pipeline.
They check everything they can before touching a weight, undo what they attached when a load is refused
(`rollback`), save a whole folder all or nothing (`folder`), and read safetensors only (`files`). What
differs between a model and a pipeline is asked of its host (`hosts.py`).
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from typing import Any

import safetensors.torch
from huggingface_hub import HfApi, snapshot_download
from peft import PeftConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from peft.utils import save_and_load

from ..tuners.concept_identifier.binding import bind_processor
from .base import WHOLE
from .files import (
    SAFETENSORS_NAME,
    AdapterFileError,
    allow_pickle_adapters,
    check_local_adapter_folder,
    read_adapter_config,
    read_safetensors_header,
)
from .folder import write_folder_atomically
from .hosts import Host, host_of, subfolder
from .manifest import write_manifest
from .rollback import restore_on_error
from .strict import check_checkpoint

# -- attaching ---------------------------------------------------------------------------------------------
# peft 0.21 reads `model.is_gradient_checkpointing` for every new PeftModel, and transformers >= 5.23 answers with
# a FutureWarning about that attribute: noise naming an API the caller never used, so it is hidden here only.
_PEFT_READS_DEPRECATED = r"`is_gradient_checkpointing` is deprecated"


def attach(host: Host, target: str, config: PeftConfig, adapter_name: str) -> tuple[PeftModel, bool]:
    """Attach a new adapter to one target of a host; returns its PeftModel and whether that PeftModel is new.

    A target that already holds a PeftModel gets the adapter added beside its others (inactive); otherwise a
    new PeftModel wraps the target's module in place and is recorded on the host.
    """
    peft_model = host.peft_models().get(target)
    if peft_model is not None:
        if adapter_name in peft_model.peft_config:
            owner = "An adapter" if target == WHOLE else f"{target} already has an adapter; one"
            raise ValueError(f"{owner} named {adapter_name!r} already exists; pick another adapter_name.")
        peft_model.add_adapter(adapter_name, config)
        return peft_model, False
    with host.attaching(target), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PEFT_READS_DEPRECATED, category=FutureWarning)
        peft_model = get_peft_model(host.module(target), config, adapter_name=adapter_name)
    host.record(target, peft_model)
    return peft_model, True


def add_adapter(model_or_pipe: Any, config: PeftConfig, adapter_name: str = "default") -> PeftModel:
    """Attach a new, trainable adapter; the model or pipeline is adapted in place and the PeftModel returned."""
    host = host_of(model_or_pipe)
    target = host.target_for(config)
    host.before_attach()
    peft_model, new = attach(host, target, config, adapter_name)
    if not new:
        peft_model.set_adapter(adapter_name)
    host.after_attach(trainable=True)
    return peft_model


# -- saving ------------------------------------------------------------------------------------------------
def write_peft_adapter(peft_model: PeftModel, folder: str, adapter_name: str = "default") -> None:
    """Write one adapter of a PeftModel in peft's layout into `folder` (plain writes: `folder` is a staging folder)."""
    if adapter_name not in peft_model.peft_config:
        known = ", ".join(peft_model.peft_config)
        raise ValueError(f"No adapter named {adapter_name!r}; this model has: {known}.")
    state = get_peft_model_state_dict(peft_model, adapter_name=adapter_name)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    config = copy.deepcopy(peft_model.peft_config[adapter_name])
    config.inference_mode = True
    os.makedirs(folder, exist_ok=True)
    safetensors.torch.save_file(state, os.path.join(folder, SAFETENSORS_NAME), metadata={"format": "pt"})
    config.save_pretrained(folder)


def save_peft_adapter(peft_model: PeftModel, directory: str, adapter_name: str = "default") -> None:
    """Save one adapter of a PeftModel in peft's layout, at the root of `directory`, all or nothing."""
    if adapter_name not in peft_model.peft_config:
        known = ", ".join(peft_model.peft_config)
        raise ValueError(f"No adapter named {adapter_name!r}; this model has: {known}.")
    write_folder_atomically(directory, lambda folder: write_peft_adapter(peft_model, folder, adapter_name))


def save_adapter(model_or_pipe: Any, directory: str | os.PathLike, adapter_name: str = "default") -> str:
    """Write `adapter_config.json` + `adapter_model.safetensors` (per adapted component for pipelines).

    The folder is replaced all or nothing (`musicpeft.adapters.folder`): a crash mid-save leaves the
    previous adapter in place, never a mix of old and new files.
    """
    directory = os.fspath(directory)
    host = host_of(model_or_pipe)
    peft_models = host.peft_models()
    if not peft_models:
        raise ValueError(f"This {host.kind} has no adapter to save; attach one with musicpeft.add_adapter first.")
    targets = [target for target, peft_model in peft_models.items() if adapter_name in peft_model.peft_config]
    if not targets:
        known = ", ".join(dict.fromkeys(name for p in peft_models.values() for name in p.peft_config))
        raise ValueError(f"No adapter named {adapter_name!r}; this {host.kind} has: {known}.")
    if WHOLE in targets:  # an adapter over the whole object is saved alone, at the root
        targets = [WHOLE]
    components = host.manifest_components(targets)

    def write(folder: str) -> None:
        for target in targets:
            write_peft_adapter(peft_models[target], subfolder(folder, target), adapter_name)
        if components is not None:
            write_manifest(folder, host.family.name, components)

    write_folder_atomically(directory, write)
    return directory


# -- loading -----------------------------------------------------------------------------------------------
def resolve_source(source: str | os.PathLike, allow_pickle: bool = False, **hub_kwargs: Any) -> str:
    """A local adapter folder for `source` (a folder, or a Hub repo id fetched with huggingface_hub)."""
    source = os.fspath(source)
    if os.path.isdir(source):
        return source
    if os.path.exists(source):
        raise AdapterFileError(f"{source} is a file; load_adapter expects an adapter folder or a Hub repo id.")
    patterns = ["*.json", "*.safetensors", "*.md", "*.txt"] + (["*.bin"] if allow_pickle else [])
    try:
        folder = snapshot_download(source, allow_patterns=patterns, **hub_kwargs)
    except Exception as err:
        raise AdapterFileError(
            f"{source!r} is neither a local adapter folder nor a reachable Hub repo ({err})."
        ) from None
    if not allow_pickle and not any(name.endswith(".safetensors") for _, _, names in os.walk(folder) for name in names):
        files = HfApi().list_repo_files(source, revision=hub_kwargs.get("revision"), token=hub_kwargs.get("token"))
        pickles = [name for name in files if name.endswith(".bin")]
        if pickles:
            raise AdapterFileError(
                f"{source} holds only pickled weights ({', '.join(pickles)}); musicpeft loads safetensors only. "
                "If you trust this repo, pass allow_pickle=True."
            )
    return folder


def attach_from_folder(host: Host, target: str, folder: str, adapter_name: str, *, is_trainable: bool) -> PeftModel:
    """Attach the adapter saved in `folder` to one target of `host`, checking the file before copying anything.

    Unlike `PeftModel.from_pretrained`, the file is compared with what the config creates before any
    value is copied: keys the config does not create (which peft would write into the base model),
    missing keys, float/integer mix-ups, shapes and NaN/Inf are refused, naming the file. It also keeps
    accelerate's offload hooks of a CPU/disk-offloaded base (peft would re-dispatch the whole model, which
    needs the device map again and loses adapter weights inside disk-offloaded modules).
    Callers run it inside `rollback.restore_on_error`: a refusal after attaching then undoes the attaching.
    """
    config = read_adapter_config(folder)
    weights_path = check_local_adapter_folder(folder)
    if weights_path.endswith(".safetensors") and hasattr(config, "bind_weights_header"):
        # The method checks its config against the file's shapes before it allocates anything.
        config.bind_weights_header(weights_path, read_safetensors_header(weights_path))
    config.inference_mode = not is_trainable
    peft_model, new = attach(host, target, config, adapter_name)
    expected = get_peft_model_state_dict(peft_model, adapter_name=adapter_name)
    module = host.module(target)
    key_mapping = None if config.is_prompt_learning else getattr(module, "_checkpoint_conversion_mapping", None)
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
    if not new:
        peft_model.set_adapter(adapter_name, inference_mode=not is_trainable)
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

    For a model the return value is its PeftModel (the model is also adapted in place); for a pipeline, the
    pipeline. Pickled `adapter_model.bin` files are refused unless `allow_pickle=True`. Every check is made
    before a weight is copied, and a refused load leaves the model or pipeline exactly as it was.
    """
    hub_keys = ("revision", "token", "cache_dir", "local_files_only", "subfolder")
    hub_kwargs = {k: kwargs.pop(k) for k in hub_keys if k in kwargs}
    folder = resolve_source(source, allow_pickle=allow_pickle, **hub_kwargs)
    host = host_of(model_or_pipe)
    processor = host.check_kwargs(kwargs)
    targets = host.folder_targets(folder)
    for name in targets.values():
        check_local_adapter_folder(subfolder(folder, name), allow_pickle=allow_pickle)
    snapshot = [model_or_pipe, *host.peft_models().values(), processor]
    with restore_on_error(*snapshot), allow_pickle_adapters() if allow_pickle else contextlib.nullcontext():
        if processor is not None:
            bind_processor(model_or_pipe, processor)
        host.before_attach()
        loaded = [
            attach_from_folder(host, target, subfolder(folder, name), adapter_name, is_trainable=is_trainable)
            for target, name in targets.items()
        ]
        host.after_attach(trainable=is_trainable)
    return model_or_pipe if host.kind == "pipeline" else loaded[0]


def set_active_adapter(model_or_pipe: Any, adapter_name: str) -> Any:
    """Make `adapter_name` the active adapter everywhere it was loaded; returns what generates with it
    (the model's PeftModel, or the pipeline)."""
    host = host_of(model_or_pipe)
    peft_models = host.peft_models()
    if not peft_models:
        raise ValueError(f"adapter_name: {adapter_name!r} cannot be activated: no adapter is loaded on "
                         f"this {type(model_or_pipe).__name__}")
    for peft_model in peft_models.values():
        peft_model.set_adapter(adapter_name)
    return model_or_pipe if host.kind == "pipeline" else next(iter(peft_models.values()))


def unload_adapters(model_or_pipe: Any) -> None:
    """Remove every adapter (nothing merged), leaving the base weights as loaded and musicpeft's hooks gone."""
    host_of(model_or_pipe).unload()
