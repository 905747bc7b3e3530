"""The environment that points every Hugging Face client of a process at a local Hub, set before they are imported.

`huggingface_hub` reads `HF_ENDPOINT`, `HF_HOME`, the token and the offline flag once, at import time, and
transformers, peft, datasets, evaluate and diffusers copy what it read into their own constants. So the
only reliable switch is the environment a process starts with: `tests/conftest.py` applies `client_env` to
itself before anything imports huggingface_hub, and a child process gets it through `subprocess.run(env=...)`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Variables that would send a developer's real token, or put caches outside the temporary HF_HOME.
ENV_REMOVED = (
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
# The offline switches of huggingface_hub, transformers, datasets and evaluate.
OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE")


def client_env(
    endpoint: str, hf_home: str | os.PathLike, *, offline: bool = False, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """`base` (default: this process's environment) with `HF_ENDPOINT` = `endpoint`, caches under `hf_home`, no token.

    `offline=True` sets `HF_HUB_OFFLINE=1` (datasets follows it) and keeps the clients off the network even
    though the endpoint is local: the test suite runs that way, so loading code is tested as a user without
    network meets it, and the Hub tests turn it off for themselves. `offline=False` turns every library's
    offline switch off.
    """
    env = dict(os.environ if base is None else base)
    for name in ENV_REMOVED:
        env.pop(name, None)
    for flag in OFFLINE_FLAGS:
        env.pop(flag, None)
    env.update({"HF_HUB_OFFLINE": "1"} if offline else dict.fromkeys(OFFLINE_FLAGS, "0"))
    env.update(
        {
            "HF_ENDPOINT": endpoint.rstrip("/"),
            "HF_HOME": os.fspath(hf_home),
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
