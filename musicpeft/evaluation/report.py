"""The ``musicpeft evaluate`` report: :func:`~musicpeft.metrics.report.write_report` plus what only a run knows.

Why a wrapper: ``write_report`` compares ``clap_kld`` results; a run also knows how they were made
(base, adapters, prompts file, seeds, CLAP model, reference) and, for MusicGen, each model's token
cross-entropy on held-out clips. Those go into ``results.json`` (keys ``setup``,
``token_cross_entropy``, ``timings_seconds``) and ``report.md`` (a setup section, a cross-entropy
table after the summary, links to the plots and wavs). Both files are rewritten atomically.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..io import atomic_write_text
from ..metrics.report import write_report

PLOT_TITLES = {
    "per_prompt_clap_score": "CLAP score per prompt",
    "per_prompt_kld": "KLD per prompt",
    "per_prompt_audio_alignment": "Audio alignment per prompt",
    "per_category": "Means per category",
    "feature_distributions": "Frame feature distributions (reference dashed)",
    "spectrograms": "Log-mel spectrograms of the first prompts",
}


def _fmt(value, digits: int = 4) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def summary_rows(results: Mapping[str, Mapping], cross_entropy: Mapping[str, Mapping]) -> dict[str, dict]:
    """Headline numbers per model: CLAP score, KLD, FD on CLAP, cross-entropy, perplexity, scored/items."""
    rows = {}
    for name, result in results.items():
        ce = cross_entropy.get(name) or {}
        rows[name] = {
            "clap_score": result.get("clap_score"),
            "kld": result.get("kld"),
            "fd_clap": result.get("fd_clap"),
            "cross_entropy": ce.get("cross_entropy"),
            "perplexity": ce.get("perplexity"),
            "scored": f"{result.get('num_scored')}/{result.get('num_items')}",
        }
    return rows


def _setup_section(setup: Mapping) -> list[str]:
    adapters = ", ".join(f"**{name}** (`{source}`)" for name, source in setup["adapters"].items())
    heldout = setup.get("heldout")
    lines = [
        "## Setup",
        "",
        f"- Base ({setup['family']}): `{setup['base']}`; adapters: {adapters}.",
        f"- Prompts: `{setup['prompts_file']}`, {len(setup['seeds'])} prompts; prompt *i* generated with seed "
        f"{setup['seeds'][0]} + *i* by every model; guidance scale {setup['guidance_scale']}; "
        f"{setup['arguments']['seconds']} s at {setup['sampling_rate']} Hz.",
        f"- Reference: `{setup['reference']['source']}` ({setup['reference']['clips']} clips). "
        f"CLAP: `{setup['clap_model']}`.",
    ]
    if heldout:
        lines.append(f"- Held-out clips for token cross-entropy: `{heldout['source']}` ({heldout['clips']} clips).")
    return lines + [""]


def _cross_entropy_section(cross_entropy: Mapping[str, Mapping], baseline: str) -> list[str]:
    base = cross_entropy[baseline]["cross_entropy"]
    lines = [
        "## Token cross-entropy on held-out clips (lower is better)",
        "",
        "Nats per audio token over every codebook, delay filler and padding excluded; perplexity = exp(cross-entropy).",
        "",
        f"| model | cross-entropy | perplexity | tokens | − {baseline} |",
        "|---|---|---|---|---|",
    ]
    for name, ce in cross_entropy.items():
        delta = "" if name == baseline else _fmt(ce["cross_entropy"] - base)
        cells = [name, _fmt(ce["cross_entropy"]), _fmt(ce["perplexity"], 3), str(ce["tokens"]), delta]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _extra_section(results: Mapping[str, Mapping], reference: Mapping | None) -> list[str]:
    """A table of the numeric ``extra_scores`` per model (and for the reference clips when scored)."""
    rows = {name: r.get("extra_scores") or {} for name, r in results.items()}
    if reference is not None:
        rows["reference clips"] = reference.get("extra_scores") or {}
    keys = [k for k in dict.fromkeys(k for extra in rows.values() for k in extra)
            if all(isinstance(extra.get(k), (int, float)) for extra in rows.values() if k in extra)]
    if not keys:
        return []
    lines = ["## Other scores", "", "| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, extra in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(extra.get(k)) if k in extra else "—" for k in keys) + " |")
    return lines + [""]


def _reference_section(reference: Mapping) -> list[str]:
    """The reference clips scored like a model's clips: the scale the models' numbers sit on."""
    against = "their captions" if reference.get("texts") == "captions" else "the prompts in turn"
    return [
        "## The reference clips themselves",
        "",
        f"Scored like a model's clips, against {against} (their KLD to themselves is 0): real audio's scores.",
        "",
        "| clips | CLAP score | audio alignment | KLD |",
        "|---|---|---|---|",
        f"| {reference.get('num_scored')}/{reference.get('num_items')} | {_fmt(reference.get('clap_score'))} | "
        f"{_fmt(reference.get('audio_alignment'))} | {_fmt(reference.get('kld'))} |",
        "",
    ]


def _links_section(files: Mapping[str, Path], clips: Mapping[str, Sequence[str]]) -> list[str]:
    lines = ["## Plots", ""]
    for key, title in PLOT_TITLES.items():
        if key in files:
            lines += [f"### {title}", "", f"![{title}]({files[key].name})", ""]
    lines += ["## Audio", "", "Generated clips (32-bit float wav), one folder per model:", ""]
    for name, paths in clips.items():
        if paths:
            lines.append(f"- {name}: `{os.path.dirname(paths[0])}/` ({len(paths)} clips)")
    return lines + [""]


def _insert_after_summary(markdown: str, sections: list[str]) -> str:
    """Put ``sections`` right after the summary table (before the next ``## `` heading)."""
    start = markdown.find("## Summary")
    cut = markdown.find("\n## ", start + 1) if start >= 0 else -1
    block = "\n".join(sections).rstrip("\n") + "\n\n"
    if cut < 0:
        return markdown.rstrip("\n") + "\n\n" + block
    return markdown[: cut + 1].rstrip("\n") + "\n\n" + block + markdown[cut + 1:]


def write_evaluation_report(
    results: Mapping[str, Mapping],
    out_dir: str | os.PathLike,
    *,
    prompts: Sequence[str],
    categories: Sequence[str],
    audio: Mapping[str, Sequence[np.ndarray]],
    sampling_rate: int,
    reference_audio: Sequence[np.ndarray],
    cross_entropy: Mapping[str, Mapping],
    setup: Mapping,
    timings: Mapping[str, float],
    baseline: str = "base",
    reference_scores: Mapping | None = None,
) -> dict[str, Path]:
    """``write_report`` (JSON, Markdown, PNGs) extended with the run's setup and token cross-entropy, each
    model's ``extra_scores`` and, when given, the scores of the reference clips themselves.

    Returns ``write_report``'s ``{kind: path}`` dict.
    """
    adapters = [name for name in results if name != baseline]
    files = write_report(results, out_dir, prompts=prompts, categories=categories, audio=audio,
                         sampling_rate=sampling_rate, reference_audio=reference_audio, baseline=baseline,
                         title=f"musicpeft evaluate: {baseline} vs {', '.join(adapters)}")
    payload = json.loads(files["json"].read_text(encoding="utf-8"))
    payload["setup"] = dict(setup)
    payload["token_cross_entropy"] = dict(cross_entropy) or None
    payload["timings_seconds"] = {k: round(v, 3) for k, v in timings.items()}
    if reference_scores is not None:
        payload["reference_scores"] = dict(reference_scores)
    atomic_write_text(files["json"], json.dumps(payload, indent=2, default=float) + "\n")

    markdown = files["markdown"].read_text(encoding="utf-8")
    title, _, rest = markdown.partition("\n")
    markdown = title + "\n\n" + "\n".join(_setup_section(setup)) + "\n" + rest.lstrip("\n")
    if cross_entropy:
        markdown = _insert_after_summary(markdown, _cross_entropy_section(cross_entropy, baseline))
    extra = _extra_section(results, reference_scores)
    if reference_scores is not None:
        extra = _reference_section(reference_scores) + extra
    if extra:
        markdown = _insert_after_summary(markdown, extra)
    markdown = markdown.rstrip("\n") + "\n\n" + "\n".join(_links_section(files, setup["clips"]))
    atomic_write_text(files["markdown"], markdown)
    return files
