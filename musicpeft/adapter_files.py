"""Safe reading of adapter folders: safetensors only, clear errors for damaged files.

peft falls back to `adapter_model.bin` (a pickle) when no safetensors file exists. musicpeft refuses
pickles unless the caller opts in (`allow_pickle_adapters()` or `load_adapter(..., allow_pickle=True)`),
and names the file when a safetensors file is corrupted or truncated, instead of a deep traceback.
`install()` puts this check in front of peft's own loader so `PeftModel.from_pretrained` gets it too.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
from collections.abc import Iterator
from typing import Any

SAFETENSORS_NAME = "adapter_model.safetensors"
PICKLE_NAME = "adapter_model.bin"
CONFIG_NAME = "adapter_config.json"

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
    """Validate a safetensors file's header and size; returns {name: (dtype, shape)}."""
    from safetensors import safe_open

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
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    except Exception as err:  # safetensors raises its own error type
        raise AdapterFileError(f"{path}: not a valid safetensors file ({err}).") from None


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


def _checked_load_peft_weights(original):
    def load_peft_weights(model_id: str, device: str | None = None, **kwargs: Any):
        local = os.path.join(model_id, kwargs["subfolder"]) if kwargs.get("subfolder") else model_id
        if os.path.isdir(local):
            check_local_adapter_folder(local)
        elif not _allow_pickle.get():
            _refuse_remote_pickle(model_id, kwargs)
        try:
            return original(model_id, device=device, **kwargs)
        except Exception as err:
            if type(err).__name__ == "SafetensorError":
                raise AdapterFileError(f"{model_id}/{SAFETENSORS_NAME}: unreadable ({err}).") from None
            raise

    load_peft_weights.__wrapped__ = original
    return load_peft_weights


def _refuse_remote_pickle(repo_id: str, kwargs: dict[str, Any]) -> None:
    from huggingface_hub import file_exists

    filename = f"{kwargs['subfolder']}/{SAFETENSORS_NAME}" if kwargs.get("subfolder") else SAFETENSORS_NAME
    try:
        exists = file_exists(repo_id, filename, revision=kwargs.get("revision"), token=kwargs.get("token"))
    except Exception:
        return  # offline or unknown repo: peft's own loader reports it
    if not exists:
        raise AdapterFileError(
            f"{repo_id} has no {filename}; musicpeft does not load pickled adapters from the Hub unless you "
            "opt in with `musicpeft.allow_pickle_adapters()`."
        )


def install() -> None:
    """Put the checks in front of peft's `load_peft_weights` (idempotent)."""
    import peft.peft_model
    import peft.utils.save_and_load

    for module in (peft.peft_model, peft.utils.save_and_load):
        current = module.load_peft_weights
        if not hasattr(current, "__wrapped__"):
            module.load_peft_weights = _checked_load_peft_weights(current)
