#!/usr/bin/env bash
# Build musicpeft's wheel, install it into a fresh venv (no source tree on the path) and use it as a user would:
# the offline demo, an evaluation, and `musicpeft push` (model card template, results table, samples) against the
# test suite's local Hub server (tests/hub, standard library only, run by the fresh venv's Python). Catches files that work from a checkout but are missing
# from the wheel. Usage: bash scripts/check_wheel.sh [work folder, default: a temporary one, removed on success]
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
if [ -n "${1:-}" ]; then
  work="$1"
else
  # A temporary folder holds two venvs (about 2 GB): removed when the check passes, kept to inspect when it fails.
  work="$(mktemp -d -t musicpeft-wheel-XXXXXX)"
  trap 'code=$?; if [ "$code" -eq 0 ]; then rm -rf "$work"; else echo "check_wheel: failed; its files stay in $work" >&2; fi' EXIT
fi
mkdir -p "$work"
started=$(date +%s)

python3 -m venv "$work/build-venv"
"$work/build-venv/bin/pip" install --quiet build
"$work/build-venv/bin/python" -m build --wheel --outdir "$work/dist" "$repo" > "$work/build.log"
wheel="$(ls "$work"/dist/musicpeft-*.whl)"
echo "built $(basename "$wheel")"
for packaged in musicpeft/templates/adapter_card.md \
    musicpeft/tiny/weights/musicgen/model.safetensors musicpeft/tiny/weights/clap/model.safetensors; do
  python3 -c "import sys, zipfile; sys.exit(0 if sys.argv[2] in zipfile.ZipFile(sys.argv[1]).namelist() else 1)" \
    "$wheel" "$packaged" || { echo "the wheel lacks $packaged" >&2; exit 1; }
done
# Test helpers stay out of the product: the Hub test server lives in tests/hub.
python3 -c "import sys, zipfile; bad = [n for n in zipfile.ZipFile(sys.argv[1]).namelist() if '/testing/' in n or
n.startswith(('tests/', 'hub/'))]; sys.exit(f'the wheel ships test code: {bad}' if bad else 0)" "$wheel"

python3 -m venv "$work/venv"
# The CPU build of torch first, as scripts/install.sh does (a bare `pip install torch` pulls a CUDA build).
"$work/venv/bin/pip" install --quiet "torch==2.13.0"
"$work/venv/bin/pip" install --quiet "$wheel"

# Outside the checkout, so only the installed package can be imported.
cd "$work"
export HF_HUB_OFFLINE=1
"$work/venv/bin/python" -c "import musicpeft, sys; assert musicpeft.__file__.startswith(sys.prefix), musicpeft.__file__"
"$work/venv/bin/musicpeft" demo --output-dir "$work/demo" --steps 5 --train-clips 8 --heldout-clips 2
printf '{"folk": ["a folk melody on koto"], "dance": ["a cheerful jig"]}' > "$work/prompts.json"
"$work/venv/bin/musicpeft" evaluate --base tiny-musicgen-trained --adapters "koto=$work/demo/koto-prompt" \
  --prompts "$work/prompts.json" --reference rendered:107:2 --clap-model tiny-trained --seconds 1 --output-dir "$work/eval"

# The checks below talk to a local Hub: tests/hub/serve.py starts one and runs the check with HF_ENDPOINT set to it
# (online, a temporary HF_HOME, no token) before anything imports huggingface_hub.
"$work/venv/bin/python" "$repo/tests/hub/serve.py" --hf-home "$work/hf_home" -- \
  "$work/venv/bin/python" - "$work" <<'PY'
import os
import subprocess
import sys

from huggingface_hub import HfApi, ModelCard

work = sys.argv[1]
assert os.environ["HF_ENDPOINT"].startswith("http://127.0.0.1:"), os.environ["HF_ENDPOINT"]
subprocess.run([os.path.join(work, "venv", "bin", "musicpeft"), "push", "--folder",
                os.path.join(work, "demo", "koto-prompt"), "--repo-id", "user/wheel-check",
                "--results", os.path.join(work, "eval", "results.json")], check=True)
api = HfApi()
files = set(api.list_repo_files("user/wheel-check"))
expected = {"README.md", "adapter_config.json", "adapter_model.safetensors", "musicpeft_adapter.json",
            "samples/spectrograms.png"}
assert expected <= files, files
text = api.hf_hub_download("user/wheel-check", "README.md", cache_dir=os.path.join(work, "cache"))
card = ModelCard.load(text)
assert card.data.library_name == "peft" and card.data.pipeline_tag == "text-to-audio", card.data
assert "## How to load" in card.text and "| **koto** (this adapter) |" in card.text, card.text
print("push from the installed wheel: ok")
PY
echo "check_wheel: ok in $(( $(date +%s) - started )) s"
