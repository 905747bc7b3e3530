"""Gradio app of the ``clap_kld`` Space: upload generated clips, their prompts and reference clips, get the scores.

The scoring is :func:`score_files`, which needs no gradio, so it can be used and tested without a UI.
"""

from __future__ import annotations

import json
import os

import soundfile as sf

HERE = os.path.dirname(os.path.abspath(__file__))
_BACKENDS: dict = {}


def _read(path: str) -> dict:
    """An audio file as ``{"array", "sampling_rate"}``, channels averaged to mono."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return {"array": data.mean(axis=1), "sampling_rate": rate}


def _backend(clap_model):
    """A CLAP backend, loaded once per model name for the life of the app."""
    from musicpeft.metrics import load_clap_backend

    if clap_model is not None and not isinstance(clap_model, str):
        return load_clap_backend(clap_model)
    if clap_model not in _BACKENDS:
        _BACKENDS[clap_model] = load_clap_backend(clap_model)
    return _BACKENDS[clap_model]


def score_files(generated: list[str], prompts_text: str, reference: list[str] | None = None,
                clap_model=None) -> dict:
    """Scores of generated audio files against their prompts (one line each) and optional reference files."""
    from musicpeft.metrics import compute_clap_kld

    prompts = [line.strip() for line in prompts_text.splitlines() if line.strip()]
    if len(prompts) != len(generated):
        raise ValueError(f"{len(generated)} generated files but {len(prompts)} prompt lines: give one prompt per file")
    clips = [_read(p) for p in generated]
    refs = [_read(p) for p in reference] if reference else None
    return compute_clap_kld(clips, prompts, refs, clap_model=_backend(clap_model))


def main() -> None:
    import gradio as gr

    def run(generated, prompts_text, reference, clap_model):
        paths = [f if isinstance(f, str) else f.name for f in (generated or [])]
        refs = [f if isinstance(f, str) else f.name for f in (reference or [])] or None
        return json.dumps(score_files(paths, prompts_text, refs, clap_model or None), indent=2)

    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
        card = f.read().split("---", 2)[-1]
    with gr.Blocks(title="clap_kld") as demo:
        gr.Markdown(card)
        generated = gr.File(label="generated audio", file_count="multiple")
        prompts = gr.Textbox(label="prompts, one line per generated file", lines=4)
        reference = gr.File(label="reference audio (optional: KLD, audio alignment)", file_count="multiple")
        clap = gr.Textbox(label="CLAP model (local path or Hub id; empty = laion/larger_clap_music)")
        output = gr.Code(label="scores", language="json")
        gr.Button("Score").click(run, [generated, prompts, reference, clap], output)
    demo.launch()


if __name__ == "__main__":
    main()
