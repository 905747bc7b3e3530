#!/usr/bin/env bash
# Install what the browser test of `musicpeft app` (tests/test_app.py) needs, after scripts/install.sh:
# a system Chromium (Debian/Ubuntu package `chromium`) and the `app-test` extra (gradio, playwright) in .venv.
# Playwright drives the system Chromium through `executable_path`; it downloads no browser of its own.
# Usage: `bash scripts/install_browser.sh` (needs root or sudo for apt-get when Chromium is missing). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/pip ]; then
  echo "install_browser.sh: no .venv here; run 'bash scripts/install.sh test' first" >&2
  exit 1
fi
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: Chromium is missing and there is no apt-get; install Chromium and set" \
         "MUSICPEFT_CHROMIUM=/path/to/chromium" >&2
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium
fi
.venv/bin/pip install --quiet -e ".[test,app-test]"
echo "Chromium: $(command -v chromium || command -v chromium-browser); gradio and playwright in $(pwd)/.venv"
