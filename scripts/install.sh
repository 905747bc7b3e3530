#!/usr/bin/env bash
# Create .venv and install musicpeft into it: `bash scripts/install.sh` (runtime) or
# `bash scripts/install.sh test` (runtime + test extras). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
python3 -m venv .venv
# The CPU build of torch first: with it in place, the torch>=2.6 requirement installs nothing more
# (a bare `pip install torch` would pull a multi-GB CUDA build). No system packages are needed:
# soundfile and symusic ship their native libraries in their wheels.
.venv/bin/pip install --quiet "torch==2.13.0"
if [ -n "$extra" ]; then
  .venv/bin/pip install --quiet -e ".[$extra]"
else
  .venv/bin/pip install --quiet -e .
fi
echo "musicpeft installed in $(pwd)/.venv"
