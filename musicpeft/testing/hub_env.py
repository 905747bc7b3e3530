"""Point huggingface_hub (and transformers, peft, datasets, evaluate, diffusers) at a local Hub, and back.

`huggingface_hub` reads `HF_ENDPOINT`, `HF_HOME` and `HF_HUB_OFFLINE` once, at import time, and
several libraries copy the results into their own module constants or cached clients. Setting the
environment variable inside a running test therefore changes nothing. `pointed_at()` patches every
copy we know of, for the duration of a `with` block:

- `huggingface_hub.constants`: `ENDPOINT`, the resolve-URL template, `HF_URL_HOSTS` (which hosts
  keep the auth header on redirects), the offline flag and every path derived from `HF_HOME`
  (hub cache, token, xet cache, update-check and agent-registry files);
- the module-level `HfApi` behind `huggingface_hub.create_repo`, `file_exists`, ... (`hf_api.api`);
- transformers' shared `HfApi` (`transformers.utils.hub._hf_api`), the `HfFileSystem` instance cache
  (peft's X-LoRA loader uses one) and the global HTTP client (its keep-alive connections);
- the endpoint and cache constants of datasets, evaluate and diffusers (and any module of those
  packages that imported them by value);
- the environment itself (peft reads `HF_HUB_OFFLINE` from it at call time; modules first imported
  inside the block read it at import), with tokens removed so a developer's real token is never sent.

On exit the original values come back; config modules first imported inside the block are reloaded
under the restored environment so they do not keep pointing at a server that is gone.

For a subprocess, prefer the clean way: `subprocess_env(endpoint, hf_home)` builds an environment in
which the child process imports everything with the local endpoint from the start.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DEFAULT_ENDPOINT = "https://huggingface.co"

# Environment variables that would send a real token or redirect caches away from the temporary HF_HOME.
_ENV_REMOVED = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ASSETS_CACHE",
    "HUGGINGFACE_ASSETS_CACHE",
    "HF_XET_CACHE",
    "HF_DATASETS_CACHE",
    "HF_EVALUATE_CACHE",
    "HF_METRICS_CACHE",
    "HF_MODULES_CACHE",
    "TRANSFORMERS_CACHE",
    "HUGGINGFACE_CO_STAGING",
    "HF_DATASETS_DOWNLOADED_EVALUATE_PATH",
    "HF_DATASETS_EXTRACTED_EVALUATE_PATH",
)

# Module constants holding the endpoint, by name: value derived from the endpoint `e`.
_ENDPOINT_ATTRS = {
    "ENDPOINT": lambda e: e,
    "HF_ENDPOINT": lambda e: e,
    "HUGGINGFACE_CO_RESOLVE_ENDPOINT": lambda e: e,
    "HUGGINGFACE_CO_URL_TEMPLATE": lambda e: e + "/{repo_id}/resolve/{revision}/{filename}",
    "HUB_DATASETS_URL": lambda e: e + "/datasets/{repo_id}/resolve/{revision}/{path}",
    "HUB_EVALUATE_URL": lambda e: e + "/spaces/{path}/resolve/{revision}/{name}",
    "HF_LIST_ENDPOINT": lambda e: e + "/api/spaces?filter={type}",
}
_PACKAGES = ("huggingface_hub", "transformers", "peft", "datasets", "evaluate", "diffusers", "accelerate")
# Config modules that compute their constants from the environment at import time.
_CONFIG_MODULES = ("datasets.config", "evaluate.config", "diffusers.utils.constants")


def subprocess_env(endpoint: str, hf_home: str | os.PathLike, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for a child process that talks to `endpoint` only and caches under `hf_home`."""
    env = dict(os.environ if base is None else base)
    for name in _ENV_REMOVED:
        env.pop(name, None)
    hf_home = os.fspath(hf_home)
    env.update(
        {
            "HF_ENDPOINT": endpoint,
            "HF_HOME": hf_home,
            "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_DATASETS_OFFLINE": "0",
            "HF_EVALUATE_OFFLINE": "0",
            "HF_UPDATE_DOWNLOAD_COUNTS": "0",  # evaluate would otherwise ping S3 on every load
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "NO_PROXY": _no_proxy(env.get("NO_PROXY")),
            "no_proxy": _no_proxy(env.get("no_proxy")),
        }
    )
    return env


def _no_proxy(current: str | None) -> str:
    hosts = [h for h in (current or "").split(",") if h]
    return ",".join(hosts + [h for h in ("127.0.0.1", "localhost") if h not in hosts])


class _Patches:
    """Attribute and environment changes that can be undone in reverse order."""

    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []
        self._env: dict[str, str | None] = {}

    def set(self, obj: Any, name: str, value: Any) -> None:
        if not hasattr(obj, name):
            return  # an attribute this library version does not have
        self._undo.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def setenv(self, env: Mapping[str, str]) -> None:
        for name in set(os.environ) | set(env):
            if os.environ.get(name) != env.get(name):
                self._env.setdefault(name, os.environ.get(name))
                if name in env:
                    os.environ[name] = env[name]
                else:
                    del os.environ[name]

    def undo(self) -> None:
        for name, value in self._env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for obj, name, value in reversed(self._undo):
            setattr(obj, name, value)


@contextlib.contextmanager
def pointed_at(endpoint: str, hf_home: str | os.PathLike) -> Iterator[None]:
    """Inside the block, every Hub call of this process goes to `endpoint` and caches under `hf_home`."""
    import huggingface_hub.constants as constants
    import huggingface_hub.hf_api as hf_api

    endpoint = endpoint.rstrip("/")
    hf_home = Path(hf_home)
    loaded_before = set(sys.modules)
    original_endpoint = constants.ENDPOINT
    patches = _Patches()
    patches.setenv(subprocess_env(endpoint, hf_home))
    try:
        _patch_endpoint_copies(patches, original_endpoint, endpoint)
        _patch_constants(patches, constants, endpoint, hf_home)
        _patch_integrations(patches, hf_home)
        patches.set(hf_api.api, "endpoint", endpoint)
        _reset_clients()
        yield
    finally:
        patches.undo()
        _reset_clients()
        _reload_configs_imported_since(loaded_before)
        _repoint_leftovers(endpoint, original_endpoint)


def _patch_constants(patches: _Patches, constants: Any, endpoint: str, hf_home: Path) -> None:
    from urllib.parse import urlsplit

    old_home = constants.HF_HOME
    patches.set(constants, "ENDPOINT", endpoint)
    patches.set(constants, "HUGGINGFACE_CO_URL_TEMPLATE", _ENDPOINT_ATTRS["HUGGINGFACE_CO_URL_TEMPLATE"](endpoint))
    patches.set(constants, "HF_URL_HOSTS", frozenset(constants.HF_URL_HOSTS | {urlsplit(endpoint).hostname}))
    patches.set(constants, "HF_HUB_OFFLINE", False)
    patches.set(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    patches.set(constants, "HF_HUB_DISABLE_UPDATE_CHECK", True)
    paths = {
        "HF_HOME": "",
        "default_cache_path": "hub",
        "HUGGINGFACE_HUB_CACHE": "hub",
        "HF_HUB_CACHE": "hub",
        "default_assets_cache_path": "assets",
        "HUGGINGFACE_ASSETS_CACHE": "assets",
        "HF_ASSETS_CACHE": "assets",
        "HF_TOKEN_PATH": "token",
        "HF_STORED_TOKENS_PATH": "stored_tokens",
        "default_xet_cache_path": "xet",
        "HF_XET_CACHE": "xet",
    }
    for name, sub in paths.items():
        patches.set(constants, name, str(hf_home / sub) if sub else str(hf_home))
    # Anything else derived from HF_HOME (update-check markers, agent registry, ...), whatever its name.
    for name, value in list(vars(constants).items()):
        if name not in paths and isinstance(value, str) and value.startswith(old_home + os.sep):
            patches.set(constants, name, str(hf_home) + value[len(old_home) :])


def _endpoint_modules() -> list[Any]:
    return [m for name, m in list(sys.modules.items()) if m is not None and name.split(".")[0] in _PACKAGES]


def _patch_endpoint_copies(patches: _Patches, original_endpoint: str, endpoint: str) -> None:
    """Module constants that copied the endpoint (`from .constants import ENDPOINT`, config modules)."""
    for module in _endpoint_modules():
        for name, derive in _ENDPOINT_ATTRS.items():
            value = vars(module).get(name)
            if isinstance(value, str) and value.startswith(original_endpoint):
                patches.set(module, name, derive(endpoint))


def _patch_integrations(patches: _Patches, hf_home: Path) -> None:
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        patches.set(datasets_config, "HF_HUB_OFFLINE", False)
        patches.set(datasets_config, "HF_DATASETS_OFFLINE", False)
        patches.set(datasets_config, "HF_CACHE_HOME", str(hf_home))
        patches.set(datasets_config, "HF_DATASETS_CACHE", hf_home / "datasets")
        patches.set(datasets_config, "HF_MODULES_CACHE", hf_home / "modules")
        patches.set(datasets_config, "DOWNLOADED_DATASETS_PATH", hf_home / "datasets" / "downloads")
        patches.set(datasets_config, "EXTRACTED_DATASETS_PATH", hf_home / "datasets" / "downloads" / "extracted")
    evaluate_config = sys.modules.get("evaluate.config")
    if evaluate_config is not None:
        patches.set(evaluate_config, "HF_EVALUATE_OFFLINE", False)
        patches.set(evaluate_config, "HF_UPDATE_DOWNLOAD_COUNTS", False)
        patches.set(evaluate_config, "HF_CACHE_HOME", str(hf_home))
        patches.set(evaluate_config, "HF_EVALUATE_CACHE", hf_home / "evaluate")
        patches.set(evaluate_config, "HF_METRICS_CACHE", hf_home / "metrics")
        patches.set(evaluate_config, "HF_MODULES_CACHE", hf_home / "modules")
        patches.set(evaluate_config, "DOWNLOADED_EVALUATE_PATH", hf_home / "evaluate" / "downloads")
        patches.set(evaluate_config, "EXTRACTED_EVALUATE_PATH", hf_home / "evaluate" / "downloads" / "extracted")
    transformers_hub = sys.modules.get("transformers.utils.hub")
    if transformers_hub is not None:
        patches.set(transformers_hub, "_hf_api", None)  # recreated on first use with the patched endpoint
        patches.set(transformers_hub, "HF_MODULES_CACHE", str(hf_home / "modules"))


def _reset_clients() -> None:
    """Drop objects that captured the endpoint or hold connections: the HTTP client and HfFileSystem instances."""
    from huggingface_hub.utils import _http

    _http.close_session()
    hf_file_system = sys.modules.get("huggingface_hub.hf_file_system")
    if hf_file_system is not None:
        hf_file_system.HfFileSystem.clear_instance_cache()


def _reload_configs_imported_since(loaded_before: set[str]) -> None:
    for name in _CONFIG_MODULES:
        module = sys.modules.get(name)
        if module is not None and name not in loaded_before:
            importlib.reload(module)


def _repoint_leftovers(test_endpoint: str, original_endpoint: str) -> None:
    """Modules imported inside the block that copied the test endpoint by value get the original back."""
    for module in _endpoint_modules():
        for name in _ENDPOINT_ATTRS:
            value = vars(module).get(name)
            if isinstance(value, str) and value.startswith(test_endpoint):
                setattr(module, name, original_endpoint + value[len(test_endpoint) :])
