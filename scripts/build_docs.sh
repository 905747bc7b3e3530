#!/usr/bin/env bash
# Build the documentation site from docs/ into site/ (not committed), strictly: any warning -- a broken link
# or anchor, a page missing from the files, a docstring that does not match its signature -- fails the build.
# `bash scripts/build_docs.sh` uses the project's .venv and installs the `docs` extra there when it is missing;
# PYTHON=/path/to/python picks another interpreter (which must already have the `docs` extra).
# Extra arguments go to `mkdocs build` (e.g. `--site-dir /tmp/site`).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
if ! "$python" -c "import mkdocs, mkdocstrings_handlers.python" 2>/dev/null; then
  if [ -n "${PYTHON:-}" ]; then
    echo "build_docs.sh: $python lacks mkdocs / mkdocstrings-python; install the docs extra: pip install -e '.[docs]'" >&2
    exit 1
  fi
  .venv/bin/pip install --quiet -e ".[docs]"
fi
"$python" -m mkdocs build --strict --clean "$@"
