"""A local Hub-compatible server for the test suite, and the environment that points Hugging Face clients at it.

`LocalHubServer` serves the Hub API on 127.0.0.1 from a temporary folder (`server.py`, `routes.py`,
`store.py`); `client_env(endpoint, hf_home)` is the environment a process must start with to talk to it
(`env.py`). `tests/conftest.py` starts one server for the whole session and applies `client_env` to
itself before anything imports huggingface_hub; `fixtures.py` holds the `local_hub` fixture over it;
`python tests/hub/serve.py -- COMMAND` runs a command against a fresh server (scripts/check_wheel.sh,
or an example run without a Hub account). Standard library only, so importing it imports no HF library.
"""

from .env import ENV_REMOVED, OFFLINE_FLAGS, client_env
from .server import LocalHubServer

__all__ = ["ENV_REMOVED", "OFFLINE_FLAGS", "LocalHubServer", "client_env"]
