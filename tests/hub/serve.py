"""Run a command against a fresh local Hub: `python tests/hub/serve.py [--hf-home DIR] [-- COMMAND ...]`.

With a command, the server starts, the command runs with `HF_ENDPOINT` pointing at it (and its own
`HF_HOME`, online, no token: see `env.py`), and the server stops when the command ends; the exit status
is the command's. Without one, it prints the endpoint and serves until interrupted or `--lifetime` runs out.
For example, the push example without a Hub account:

    python tests/hub/serve.py -- python examples/push_and_load.py --repo_id user/tiny-koto-prompt
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, Python puts tests/hub/ on the path; the package is imported from its parent folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub import LocalHubServer, client_env  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hf-home", default=None, help="HF_HOME of the command (default: a temporary folder).")
    parser.add_argument("--lifetime", type=float, default=3600.0, help="Seconds after which the server stops.")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="The command to run (after `--`).")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    with tempfile.TemporaryDirectory(prefix="musicpeft-hub-home-") as scratch:
        hf_home = args.hf_home or scratch
        with LocalHubServer(max_lifetime_s=args.lifetime) as server:
            print(f"HF_ENDPOINT={server.endpoint}", file=sys.stderr, flush=True)
            if command:
                return subprocess.run(command, env=client_env(server.endpoint, hf_home)).returncode
            try:
                while server.running:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
