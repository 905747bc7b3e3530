"""The `local_hub` fixture: the session's local Hub server, emptied for the test, with this process online.

`tests/conftest.py` starts one `LocalHubServer` for the session and points every client at it through the
environment, before anything imports huggingface_hub; the suite still runs offline (`HF_HUB_OFFLINE=1`)
so loading code is tested the way a user without network meets it. `use_local_hub` lifts the offline flag
for one test and gives it an empty Hub. `LocalHub.run_python` runs a child process online against it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub.constants
import pytest
from huggingface_hub import HfApi

from .env import OFFLINE_FLAGS, client_env
from .server import LocalHubServer


@dataclass
class LocalHub:
    """The session's server, and the HF_HOME its clients cache into."""

    server: LocalHubServer
    hf_home: Path

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def api(self) -> HfApi:
        """An `HfApi` of this server (the default endpoint of the session is this server too)."""
        return HfApi(endpoint=self.endpoint)

    def require_token(self, token: str | None) -> None:
        """From now on (until the next test) writes and private reads need `token`."""
        self.server.reset(token=token)

    def env(self) -> dict[str, str]:
        """Environment for a child process: `HF_ENDPOINT` = this server, its own cache, online."""
        return client_env(self.endpoint, self.hf_home / "subprocess")

    def run_python(self, code: str, args: Sequence[str] = (), timeout: float = 180) -> subprocess.CompletedProcess:
        """Run `python -c code args...` against this server; raises with the child's output if it fails."""
        result = subprocess.run(
            [sys.executable, "-c", code, *args], env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
            raise AssertionError(f"child process exited with {result.returncode}\n{output}")
        return result


def use_local_hub(server: LocalHubServer, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> LocalHub:
    """Empty `server` and lift offline mode for this test (monkeypatch puts it back afterwards).

    The endpoint needs no patching: it came from the environment at import. The offline flag does, because
    the suite runs offline: huggingface_hub read `HF_HUB_OFFLINE` once into `constants.HF_HUB_OFFLINE`,
    which every client asks (transformers through `is_offline_mode()`); peft, child processes and modules
    first imported during the test read the environment.
    """
    server.reset()
    for flag in OFFLINE_FLAGS:
        monkeypatch.setenv(flag, "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return LocalHub(server, hf_home)
