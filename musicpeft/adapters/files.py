"""Safe reading of adapter folders: safetensors only, clear errors for damaged files.

peft falls back to `adapter_model.bin` (a pickle) when no safetensors file exists. musicpeft refuses
pickles unless the caller opts in (`allow_pickle_adapters()` or `load_adapter(..., allow_pickle=True)`),
and names the file when a safetensors file is corrupted or truncated, instead of a deep traceback.
`checked_load_peft_weights` wraps peft's own loader so that `PeftModel.from_pretrained` gets the same checks
(`musicpeft.adapters.peft_guards` installs it).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import os
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from huggingface_hub import file_exists, try_to_load_from_cache
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from safetensors import safe_open

SAFETENSORS_NAME = "adapter_model.safetensors"
PICKLE_NAME = "adapter_model.bin"
CONFIG_NAME = "adapter_config.json"
# What someone loading a musicpeft adapter with plain peft is missing (written into each config, too).
LOAD_HINT = "pip install musicpeft; import musicpeft"

_allow_pickle: contextvars.ContextVar[bool] = contextvars.ContextVar("musicpeft_allow_pickle", default=False)


class AdapterFileError(ValueError):
    """An adapter folder or file that cannot be used, with the file and the reason in the message."""


@contextlib.contextmanager
def allow_pickle_adapters() -> Iterator[None]:
    """Explicit opt-in to loading `adapter_model.bin` pickles from sources you trust."""
    token = _allow_pickle.set(True)
    try:
        yield
    finally:
        _allow_pickle.reset(token)


def check_safetensors_file(path: str) -> dict[str, Any]:
    """Validate a safetensors file's header and size; returns {name: shape}."""
    return {key: shape for key, (_, shape) in read_safetensors_header(path).items()}


def read_safetensors_header(path: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Validate a safetensors file's header and size without reading its tensors; returns {name: (dtype, shape)}.

    dtype is safetensors' name (`F32`, `BF16`, `I64`, ...). Checking shapes here lets a loader refuse a
    config that does not fit its file before it allocates anything the config asks for.
    """
    size = os.path.getsize(path)
    if size < 8:
        raise AdapterFileError(f"{path}: {size} bytes; a safetensors file is at least 8 bytes (truncated?).")
    with open(path, "rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        if header_len <= 0 or 8 + header_len > size:
            raise AdapterFileError(
                f"{path}: header claims {header_len} bytes but the file has {size}; the file is truncated or "
                "not a safetensors file."
            )
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise AdapterFileError(f"{path}: unreadable safetensors header ({err}); the file is corrupted.") from None
    end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    if 8 + header_len + end != size:
        raise AdapterFileError(
            f"{path}: tensors need {8 + header_len + end} bytes but the file has {size}; it is truncated or corrupted."
        )
    try:
        with safe_open(path, framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as err:  # safetensors raises its own error type
        raise AdapterFileError(f"{path}: not a valid safetensors file ({err}).") from None
    return {k: (str(header[k]["dtype"]), tuple(header[k]["shape"])) for k in keys}


FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})


def check_tensor_values(tensors: dict[str, Any], source: str) -> None:
    """Refuse NaN/Inf in floating-point adapter tensors, naming the file and the key.

    A non-finite weight makes every generation silent or noise, with no error anywhere later.
    """
    for key, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise AdapterFileError(f"{source}: {key} is a {type(value).__name__}, not a tensor.")
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise AdapterFileError(
                f"{source}: {key} holds {bad} NaN/Inf value(s); the adapter is broken (diverged training?)."
            )


def read_adapter_config(folder: str) -> Any:
    """The PeftConfig of an adapter folder, with every failure named by file (no raw JSON/Key/TypeErrors)."""
    path = os.path.join(folder, CONFIG_NAME)
    try:
        with open(path) as handle:
            loaded = json.load(handle)
    except FileNotFoundError:
        raise AdapterFileError(f"{folder}: no {CONFIG_NAME}; this is not an adapter folder.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AdapterFileError(f"{path}: not readable JSON ({err}).") from None
    if not isinstance(loaded, dict):
        raise AdapterFileError(f"{path}: expected a JSON object, got {type(loaded).__name__}.")
    peft_type = loaded.get("peft_type")
    if not isinstance(peft_type, str) or peft_type not in PEFT_TYPE_TO_CONFIG_MAPPING:
        raise AdapterFileError(
            f"{path}: peft_type {peft_type!r} is not a method peft knows here. If it is a musicpeft method, "
            f"{LOAD_HINT} before loading; otherwise upgrade peft."
        )
    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
    loaded = config_cls.check_kwargs(**loaded)
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(loaded) - known)
    if unknown:  # as peft does: configs written by newer versions may carry fields this one lacks
        warnings.warn(f"{path}: ignoring fields {unknown}, which {config_cls.__name__} does not have.", stacklevel=2)
        loaded = {k: v for k, v in loaded.items() if k in known}
    try:
        return config_cls(**loaded)
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise AdapterFileError(f"{path}: invalid {config_cls.__name__} ({err}).") from None


def check_local_adapter_folder(folder: str, allow_pickle: bool | None = None) -> str:
    """Check a local adapter folder before anything is loaded; returns the weights file to read."""
    allow = _allow_pickle.get() if allow_pickle is None else allow_pickle
    if not os.path.isfile(os.path.join(folder, CONFIG_NAME)):
        raise AdapterFileError(f"{folder}: no {CONFIG_NAME}; this is not an adapter folder.")
    safetensors_path = os.path.join(folder, SAFETENSORS_NAME)
    if os.path.isfile(safetensors_path):
        check_safetensors_file(safetensors_path)
        return safetensors_path
    pickle_path = os.path.join(folder, PICKLE_NAME)
    if os.path.isfile(pickle_path):
        if not allow:
            raise AdapterFileError(
                f"{pickle_path} is a pickle; musicpeft loads safetensors only. If you trust its source, load it "
                "inside `with musicpeft.allow_pickle_adapters():` or pass allow_pickle=True to "
                "musicpeft.load_adapter, then save it again to get a safetensors file."
            )
        return pickle_path
    raise AdapterFileError(f"{folder}: no {SAFETENSORS_NAME}; the adapter weights are missing.")


def checked_load_peft_weights(original):
    """peft's `load_peft_weights` behind musicpeft's checks: local folders checked first, NaN/Inf refused."""

    def load_peft_weights(model_id: str, device: str | None = None, **kwargs: Any):
        local = os.path.join(model_id, kwargs["subfolder"]) if kwargs.get("subfolder") else model_id
        source = f"{model_id}/{SAFETENSORS_NAME}"
        if os.path.isdir(local):
            source = check_local_adapter_folder(local)
        elif not _allow_pickle.get():
            _refuse_remote_pickle(model_id, kwargs)
        try:
            weights = original(model_id, device=device, **kwargs)
        except Exception as err:
            if type(err).__name__ == "SafetensorError":
                raise AdapterFileError(f"{source}: unreadable ({err}).") from None
            raise
        check_tensor_values(weights, source)
        return weights

    load_peft_weights.__wrapped__ = original
    return load_peft_weights


def _refuse_remote_pickle(repo_id: str, kwargs: dict[str, Any]) -> None:
    filename = f"{kwargs['subfolder']}/{SAFETENSORS_NAME}" if kwargs.get("subfolder") else SAFETENSORS_NAME
    try:
        exists = file_exists(repo_id, filename, revision=kwargs.get("revision"), token=kwargs.get("token"))
    except Exception:
        # Offline (or the Hub unreachable): peft then reads the local cache and falls back to a cached
        # pickle when no safetensors file is cached, so decide from the cache.
        pickle_name = filename[: -len(SAFETENSORS_NAME)] + PICKLE_NAME
        exists = _cached(repo_id, filename, kwargs) or not _cached(repo_id, pickle_name, kwargs)
    if not exists:
        raise AdapterFileError(
            f"{repo_id} has no {filename}; musicpeft does not load pickled adapters from the Hub unless you "
            "opt in with `musicpeft.allow_pickle_adapters()`."
        )


def _cached(repo_id: str, filename: str, kwargs: dict[str, Any]) -> bool:
    try:
        found = try_to_load_from_cache(
            repo_id, filename, cache_dir=kwargs.get("cache_dir"), revision=kwargs.get("revision"),
            repo_type=kwargs.get("repo_type"),
        )
    except Exception:
        return False
    return isinstance(found, str)
