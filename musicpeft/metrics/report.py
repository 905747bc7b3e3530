"""Evaluation reports: JSON, a Markdown summary and PNG plots comparing a base model with adapters.

Why here: ``musicpeft evaluate`` scores the same prompts with the base model and one or more
adapters; what a reader wants is the comparison (per prompt, per category, in feature space, by
ear and eye), not five raw result dicts. Plots use matplotlib's object API on an Agg canvas, so
writing a report never touches the global pyplot backend or needs a display.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import librosa
import numpy as np

from ..data.audio import mix_to_mono
from ..io import atomic_write, atomic_write_text
from .audio import resample
from .features import FeatureConfig, extract_features

PER_ITEM_METRICS = (
    ("clap_score_per_item", "CLAP score", "higher is better"),
    ("kld_per_item", "KLD", "lower is better"),
    ("audio_alignment_per_item", "Audio alignment", "higher is better"),
)
AGGREGATES = ("clap_score", "kld", "text_alignment", "audio_alignment", "delta_audio_alignment", "fd_clap")
OVERLAY_FEATURES = ("spectral_centroid", "spectral_bandwidth", "spectral_rolloff", "zcr", "mfcc_0", "mfcc_1")


def _fmt(v) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4f}"


def _cell(text) -> str:
    """Text safe inside a Markdown table cell: ``<concept>`` placeholders would otherwise render as HTML tags."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _figure(width: float, height: float):
    # lazy: matplotlib takes about a second to import and only reports with plots need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    """Write the PNG atomically: a reader never sees half a picture."""
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _check_inputs(results, prompts, categories, audio, baseline) -> tuple[list[str], int]:
    if not results:
        raise ValueError("write_report: results is empty; pass {model name: compute_clap_kld result}")
    names = list(results)
    if baseline is not None and baseline not in results:
        raise ValueError(f"write_report: baseline {baseline!r} is not one of the results' names {names}")
    sizes = {name: r.get("num_items") for name, r in results.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise ValueError(f"write_report: every result must score the same prompts; num_items per model: {sizes}")
    n = next(iter(sizes.values()))
    for label, seq in (("prompts", prompts), ("categories", categories)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"write_report: {label} has {len(seq)} entries but the results have {n} items")
    for name, clips in (audio or {}).items():
        if name not in results:
            raise ValueError(f"write_report: audio given for {name!r}, which has no result; results: {names}")
        if len(clips) != n:
            raise ValueError(f"write_report: audio[{name!r}] has {len(clips)} clips but the results have {n} items")
    if baseline is not None:
        names.remove(baseline)
        names.insert(0, baseline)
    return names, n


def _category_means(results, names, categories, key) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for cat in dict.fromkeys(categories):
        idx = [i for i, c in enumerate(categories) if c == cat]
        out[cat] = {}
        for name in names:
            values = results[name].get(key) or [None] * (max(idx) + 1)
            out[cat][name] = _mean([values[i] for i in idx])
    return out


def _markdown(results, names, prompts, categories, title) -> str:
    lines = [f"# {title}", "", f"Baseline: **{names[0]}**. Scores as defined in docs/evaluation.md.", ""]
    present = [a for a in AGGREGATES if any(results[n].get(a) is not None for n in names)]
    lines += ["## Summary", "", "| " + " | ".join(["model", *present, "scored / items"]) + " |",
              "|---" * (len(present) + 2) + "|"]
    for name in names:
        r = results[name]
        row = [_cell(name), *(_fmt(r.get(a)) for a in present), f"{r.get('num_scored')} / {r.get('num_items')}"]
        lines.append("| " + " | ".join(row) + " |")
    for name in names:
        for e in results[name].get("excluded") or []:
            lines.append(f"\n- {name}: item {e['index']} excluded: {e['reason']}")
    for key, label, direction in PER_ITEM_METRICS:
        if not any(results[n].get(key) for n in names):
            continue
        if categories is not None:
            lines += ["", f"## {label} by category ({direction})", "",
                      "| category | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
            for cat, means in _category_means(results, names, categories, key).items():
                lines.append(f"| {_cell(cat)} | " + " | ".join(_fmt(means[n]) for n in names) + " |")
        lines += ["", f"## {label} per prompt ({direction})", ""]
        head = ["#", "prompt"] + (["category"] if categories is not None else []) + names
        head += [f"{n} − {names[0]}" for n in names[1:]]
        lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        n_items = results[names[0]]["num_items"]
        for i in range(n_items):
            vals = [(results[n].get(key) or [None] * n_items)[i] for n in names]
            deltas = [None if v is None or vals[0] is None else v - vals[0] for v in vals[1:]]
            prompt = _cell(prompts[i]) if prompts is not None else ""
            cells = [str(i), prompt] + ([_cell(categories[i])] if categories is not None else [])
            lines.append("| " + " | ".join(cells + [_fmt(v) for v in vals] + [_fmt(d) for d in deltas]) + " |")
    return "\n".join(lines) + "\n"


def _per_prompt_plot(results, names, key, label, direction, path: Path) -> Path:
    n = results[names[0]]["num_items"]
    fig = _figure(max(6.0, 0.5 * n * len(names) + 2), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        vals = [v if v is not None else np.nan for v in (results[name].get(key) or [None] * n)]
        ax.bar(np.arange(n) + (j - (len(names) - 1) / 2) * width, vals, width, label=name)
    ax.set_xticks(np.arange(n))
    ax.set_xlabel("prompt #")
    ax.set_ylabel(label)
    ax.set_title(f"{label} per prompt ({direction})")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _category_plot(results, names, categories, path: Path) -> Path | None:
    keys = [(k, label) for k, label, _ in PER_ITEM_METRICS if any(results[n].get(k) for n in names)]
    if not keys:
        return None
    fig = _figure(5.0 * len(keys), 3.6)
    for p, (key, label) in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), p + 1)
        means = _category_means(results, names, categories, key)
        cats = list(means)
        width = 0.8 / len(names)
        for j, name in enumerate(names):
            vals = [means[c][name] if means[c][name] is not None else np.nan for c in cats]
            ax.bar(np.arange(len(cats)) + (j - (len(names) - 1) / 2) * width, vals, width, label=name)
        ax.set_xticks(np.arange(len(cats)))
        ax.set_xticklabels(cats, rotation=20, fontsize=8)
        ax.set_title(f"mean {label} by category")
        ax.legend(fontsize=8)
    return _save(fig, path)


def _usable(clips, sampling_rate, fc) -> list[np.ndarray]:
    out = []
    for clip in clips:
        x = np.asarray(clip, dtype=np.float64)
        x = mix_to_mono(x, "clip")
        if x.size and np.all(np.isfinite(x)) and np.ptp(x) > 0:
            y = resample(x, sampling_rate, fc.sample_rate)
            if len(y) >= fc.n_fft:
                out.append(y)
    return out


def _feature_plot(audio, reference_audio, sampling_rate, fc, path: Path) -> Path | None:
    sets = {name: _usable(clips, sampling_rate, fc) for name, clips in audio.items()}
    if reference_audio is not None:
        sets["reference"] = _usable(reference_audio, sampling_rate, fc)
    frames = {name: np.concatenate(extract_features(c, fc), axis=1) for name, c in sets.items() if c}
    if not frames:
        return None
    rows = [fc.feature_names.index(f) for f in OVERLAY_FEATURES]
    fig = _figure(12.0, 6.0)
    for p, (row, feat) in enumerate(zip(rows, OVERLAY_FEATURES, strict=True)):
        ax = fig.add_subplot(2, 3, p + 1)
        everything = np.concatenate([f[row] for f in frames.values()])
        lo, hi = np.quantile(everything, [0.005, 0.995])
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 41)
        for name, f in frames.items():
            ax.hist(np.clip(f[row], bins[0], bins[-1]), bins=bins, density=True, histtype="step",
                    linestyle="--" if name == "reference" else "-", label=name)
        ax.set_title(feat, fontsize=9)
    fig.axes[0].legend(fontsize=7)
    fig.suptitle("frame feature distributions")
    return _save(fig, path)


def _spectrogram_plot(audio, prompts, sampling_rate, max_clips, path: Path) -> Path | None:
    names = list(audio)
    n = min(max_clips, min(len(c) for c in audio.values()))
    if n == 0:
        return None
    fig = _figure(4.0 * len(names), 2.6 * n)
    for i in range(n):
        for j, name in enumerate(names):
            ax = fig.add_subplot(n, len(names), i * len(names) + j + 1)
            x = np.asarray(audio[name][i], dtype=np.float64)
            x = mix_to_mono(x, "clip")
            x = np.nan_to_num(x)
            mel = librosa.feature.melspectrogram(y=x, sr=sampling_rate, n_fft=1024, hop_length=256, n_mels=64)
            ax.imshow(librosa.power_to_db(mel + 1e-12, ref=np.max), origin="lower", aspect="auto", cmap="magma")
            title = name if prompts is None else f"{name}: {prompts[i][:40]}"
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    return _save(fig, path)


def write_report(
    results: Mapping[str, Mapping],
    out_dir: str | os.PathLike,
    *,
    prompts: Sequence[str] | None = None,
    categories: Sequence[str] | None = None,
    audio: Mapping[str, Sequence[np.ndarray]] | None = None,
    sampling_rate: int | None = None,
    reference_audio: Sequence[np.ndarray] | None = None,
    baseline: str | None = None,
    feature_config=None,
    max_spectrograms: int = 3,
    title: str = "musicpeft evaluation",
) -> dict[str, Path]:
    """Write ``results.json``, ``report.md`` and PNG plots comparing models scored on the same prompts.

    Args:
        results: ``{model name: compute_clap_kld(...) result}``; every result scores the same
            prompts in the same order. The first name (or ``baseline``) is the baseline.
        out_dir: folder to write into (created if missing; files of the same names are replaced).
        prompts: the prompt of each item, for tables and plot titles.
        categories: a category label per item (e.g. "instrument", "genre"); adds per-category
            tables and ``per_category.png``.
        audio: ``{model name: clips}`` in item order; adds ``spectrograms.png`` and, with the
            reference, ``feature_distributions.png``. Needs ``sampling_rate``.
        sampling_rate: rate of ``audio`` and ``reference_audio`` clips (Hz).
        reference_audio: reference clips, drawn dashed in the feature overlays.
        baseline: which result is the baseline (default: the first).
        feature_config: :class:`~musicpeft.metrics.features.FeatureConfig` of the overlays.
        max_spectrograms: items shown in ``spectrograms.png``.
        title: the Markdown report's title.

    Returns:
        ``{"json", "markdown", "per_prompt_<metric>", "per_category", "feature_distributions",
        "spectrograms"}`` -> written paths (plots whose inputs were not given are absent).
    """
    names, _ = _check_inputs(results, prompts, categories, audio, baseline)
    if (audio or reference_audio is not None) and sampling_rate is None:
        raise ValueError("write_report: audio / reference_audio need sampling_rate")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    summary = {name: {a: results[name].get(a) for a in AGGREGATES} for name in names}
    payload = {"baseline": names[0], "prompts": list(prompts) if prompts is not None else None,
               "categories": list(categories) if categories is not None else None,
               "summary": summary, "results": {name: results[name] for name in names}}
    if categories is not None:
        payload["per_category"] = {key: _category_means(results, names, categories, key)
                                   for key, _, _ in PER_ITEM_METRICS if any(results[n].get(key) for n in names)}
    written["json"] = out / "results.json"
    atomic_write_text(written["json"], json.dumps(payload, indent=2, default=float) + "\n")
    written["markdown"] = out / "report.md"
    atomic_write_text(written["markdown"], _markdown(results, names, prompts, categories, title))

    for key, label, direction in PER_ITEM_METRICS:
        if any(results[n].get(key) for n in names):
            short = key.removesuffix("_per_item")
            written[f"per_prompt_{short}"] = _per_prompt_plot(
                results, names, key, label, direction, out / f"per_prompt_{short}.png")
    if categories is not None:
        path = _category_plot(results, names, categories, out / "per_category.png")
        if path is not None:
            written["per_category"] = path
    if audio:
        ordered = {name: audio[name] for name in names if name in audio}
        fc = feature_config or FeatureConfig()
        path = _feature_plot(ordered, reference_audio, sampling_rate, fc, out / "feature_distributions.png")
        if path is not None:
            written["feature_distributions"] = path
        path = _spectrogram_plot(ordered, prompts, sampling_rate, max_spectrograms, out / "spectrograms.png")
        if path is not None:
            written["spectrograms"] = path
    return written
