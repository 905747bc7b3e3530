"""Session setup: one local Hub for the whole session, pointed at before any Hugging Face import; one torch thread.

huggingface_hub reads `HF_ENDPOINT`, `HF_HOME` and the token once, when it is imported, and the libraries
built on it copy what it read. So the server starts and the environment is set here, at the very top, before
anything imports them: every client of the session talks to 127.0.0.1 only, caches in a temporary HF_HOME
and never sends a developer's token. The suite runs offline (`HF_HUB_OFFLINE=1`); the `local_hub` fixture
lifts that for the tests that use the server.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

from hub import LocalHubServer, client_env  # standard library only: imports no Hugging Face library

if "huggingface_hub" in sys.modules:
    raise RuntimeError(
        "huggingface_hub was imported before tests/conftest.py pointed it at the local Hub "
        "(a pytest plugin imported it?); the suite would talk to the real Hub endpoint."
    )
_HF_HOME = Path(tempfile.mkdtemp(prefix="musicpeft-tests-hf-"))
_HUB = LocalHubServer(max_lifetime_s=6 * 3600).start()  # stopped at the end of the session
_ENV = client_env(_HUB.endpoint, _HF_HOME, offline=True)
for _name in set(os.environ) - set(_ENV):
    del os.environ[_name]
os.environ.update(_ENV)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from hub.fixtures import LocalHub, use_local_hub  # noqa: E402

# Tiny models run an order of magnitude faster on one thread than on two contended cores.
torch.set_num_threads(1)


@pytest.fixture
def local_hub(monkeypatch: pytest.MonkeyPatch) -> LocalHub:
    """The session's local Hub, empty, with this process online for the test."""
    return use_local_hub(_HUB, _HF_HOME, monkeypatch)


def pytest_unconfigure(config: pytest.Config) -> None:
    _HUB.stop()
    shutil.rmtree(_HF_HOME, ignore_errors=True)
