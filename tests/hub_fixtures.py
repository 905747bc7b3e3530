"""Pytest fixtures for tests that talk to the Hub: a local Hub-compatible server, with every client pointed at it.

The suite runs with `HF_HUB_OFFLINE=1` (see conftest.py) so no test reaches the real Hub by accident.
`local_hub` lifts that for one test only: it starts a `LocalHubServer` on 127.0.0.1, points
huggingface_hub, transformers, peft, datasets and evaluate at it with a temporary `HF_HOME`, and puts
everything back afterwards. `LocalHub.run_python` runs a child process the clean way, with
`HF_ENDPOINT` set in its environment before anything is imported.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from musicpeft.testing import LocalHubServer, pointed_at, subprocess_env

if TYPE_CHECKING:
    from huggingface_hub import HfApi


@dataclass
class LocalHub:
    """The running server of one test and the temporary HF_HOME its clients cache into."""

    server: LocalHubServer
    hf_home: Path

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def api(self) -> HfApi:
        """An `HfApi` bound to this server (the patched default endpoint works too)."""
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint)

    def env(self) -> dict[str, str]:
        """Environment for a child process: `HF_ENDPOINT` = this server, its own cache, online."""
        return subprocess_env(self.endpoint, self.hf_home / "subprocess")

    def run_python(self, code: str, args: Sequence[str] = (), timeout: float = 180) -> subprocess.CompletedProcess:
        """Run `python -c code args...` against this server; raises with the child's output if it fails."""
        result = subprocess.run(
            [sys.executable, "-c", code, *args], env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
            raise AssertionError(f"child process exited with {result.returncode}\n{output}")
        return result


@pytest.fixture
def local_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """A fresh local Hub for this test, with huggingface_hub & co. pointed at it (and back afterwards)."""
    hf_home = tmp_path_factory.mktemp("hf_home")
    with LocalHubServer(max_lifetime_s=600) as server, pointed_at(server.endpoint, hf_home):
        yield LocalHub(server, hf_home)
