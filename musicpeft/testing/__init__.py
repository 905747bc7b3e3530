"""Test helpers that ship with musicpeft: a local Hub-compatible server and the switch that points clients at it.

`LocalHubServer` serves the Hub API on 127.0.0.1 from a temporary folder; `pointed_at(endpoint, hf_home)`
makes huggingface_hub (and the libraries built on it) talk to it inside a `with` block;
`subprocess_env(endpoint, hf_home)` is the same for a child process. The pytest fixtures built on these
live in `tests/hub_fixtures.py`.
"""

from .hub_env import pointed_at, subprocess_env
from .hub_server import LocalHubServer

__all__ = ["LocalHubServer", "pointed_at", "subprocess_env"]
