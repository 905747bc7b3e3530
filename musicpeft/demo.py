"""The offline demo: teach the shipped tiny MusicGen an instrument it never heard (koto) with a soft prompt.

The base (``tiny-musicgen-trained``, :func:`musicpeft.tiny.load_trained_musicgen`) was trained on rendered
music of the base instruments only; koto clips never reached it. The demo renders koto clips of training
and held-out pieces into audio folders (``data/``), then runs exactly what a user would type:

* ``musicpeft train`` (:func:`musicpeft.training.runner.run_training`): a ``SoftMusicPromptConfig`` on the training
  folder, saved as an adapter folder;
* ``musicpeft evaluate`` (:func:`musicpeft.evaluation.run_evaluation`): the base without and with the prompt,
  loaded from disk, on the same koto prompts and seeds, scored with tools trained independently of the
  generator: CLAP score against the prompts and audio alignment with the held-out clips (the shipped tiny
  CLAP), KLD of audio features against the held-out clips, token cross-entropy of the held-out clips, and
  (through ``extra_scores``) how often the shipped instrument classifier hears koto.

The held-out clips scored like generated ones (``--score-reference``) are the ceiling. The demo's own
report (``report.md`` / ``report.json``, ``spectrograms.png``, ``before.wav`` / ``after.wav`` /
``reference.wav``) puts the before/after numbers side by side and lists the commands that reproduce them.
Nothing is downloaded; a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

import numpy as np
import soundfile as sf
import torch
from transformers import MusicgenConfig

from .evaluation.generation import TINY_MUSICGEN_TRAINED
from .evaluation.micro_world import classifier_scores, trained_models_available
from .evaluation.runner import TINY_CLAP_TRAINED, EvaluateArguments, run_evaluation
from .io import atomic_write, atomic_write_json, atomic_write_text
from .tiny import load_instrument_classifier, trained_musicgen_path
from .tiny.world import world_clips
from .training.runner import TrainArguments, run_training

METRICS = (
    ("clap_score", "CLAP score vs. the koto prompt", "higher"),
    ("audio_alignment", "CLAP audio alignment with held-out koto", "higher"),
    ("classifier_rate", "classifier says the concept (fraction of clips)", "higher"),
    ("classifier_probability", "classifier probability of the concept (mean)", "higher"),
    ("kld", "KLD of audio features to held-out clips (nats)", "lower"),
)
BEFORE = "base"  # musicpeft evaluate's name of the base model


@dataclass
class DemoArguments:
    output_dir: str = field(default="demo-output", metadata={"help": "Folder for the adapter, wavs and report."})
    instrument: str = field(default="koto", metadata={"help": "Concept instrument the base never saw."})
    steps: int = field(default=200, metadata={"help": "Training steps of the soft prompt."})
    num_virtual_tokens: int = field(default=30, metadata={"help": "Soft prompt length (paper: 30)."})
    learning_rate: float = field(default=3e-2, metadata={"help": "Learning rate of the prompt."})
    batch_size: int = field(default=8, metadata={"help": "Training batch size."})
    train_clips: int = field(default=32, metadata={"help": "Rendered clips of the training pieces."})
    heldout_clips: int = field(default=16, metadata={"help": "Rendered clips of held-out pieces (scores, CE)."})
    seconds: float = field(default=2.0, metadata={"help": "Length of each clip in seconds (training and generated)."})
    generations: int = field(default=16, metadata={"help": "Clips generated before and after (one per prompt)."})
    guidance_scale: float = field(default=3.0, metadata={"help": "Classifier-free guidance scale."})
    seed: int = field(default=0, metadata={"help": "Seed for the data, the prompt's initialisation and sampling."})
    threads: int = field(default=1, metadata={"help": "Torch CPU threads (tiny models run fastest on one)."})


def _write_wav(path: str, audio: np.ndarray, sample_rate: int) -> None:
    samples = np.asarray(audio, dtype=np.float32).reshape(-1)
    atomic_write(path, lambda tmp: sf.write(tmp, samples, sample_rate, subtype="FLOAT"))


def _figure(path: str, clips: dict[str, np.ndarray], rate: int, losses: list[tuple[int, float]], title: str) -> None:
    """Log-mel spectrograms of before / after / reference, and the training loss curve."""
    import librosa
    import librosa.display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(clips) + 1, figsize=(4 * (len(clips) + 1), 3.4))
    for ax, (name, clip) in zip(axes, clips.items(), strict=False):
        mel = librosa.feature.melspectrogram(y=np.asarray(clip, np.float32), sr=rate, n_fft=1024, hop_length=256,
                                             n_mels=64)
        librosa.display.specshow(librosa.power_to_db(mel, ref=np.max), sr=rate, hop_length=256, x_axis="time",
                                 y_axis="mel", ax=ax)
        ax.set_title(name)
    ax = axes[-1]
    if losses:
        ax.plot([s for s, _ in losses], [v for _, v in losses], marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("token cross-entropy (train)")
    ax.set_title("soft prompt training")
    ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)


def _koto_data(args: DemoArguments, rate: int) -> tuple[list[dict], list[dict]]:
    train = world_clips(args.instrument, "train", args.train_clips, args.seconds, rate, seed=args.seed)
    heldout = world_clips(args.instrument, "heldout", args.heldout_clips, args.seconds, rate, seed=args.seed)
    if not train or not heldout:
        raise RuntimeError(f"world_clips returned {len(train)} training and {len(heldout)} held-out clips")
    return train, heldout


def write_audio_folder(folder: str, rows: list[dict], rate: int) -> str:
    """``rows`` (``audio`` + ``text``) as 32-bit float wavs plus ``metadata.jsonl``: the folder layout that
    ``musicpeft train --data`` and ``musicpeft evaluate --reference/--heldout`` read."""
    records = []
    for i, row in enumerate(rows):
        name = f"{i:03d}.wav"
        _write_wav(os.path.join(folder, name), row["audio"], rate)
        records.append(json.dumps({"file_name": name, "text": row["text"]}, ensure_ascii=False))
    atomic_write_text(os.path.join(folder, "metadata.jsonl"), "\n".join(records) + "\n")
    return folder


def _command(name: str, args: Any, defaults: Any) -> str:
    """``musicpeft <name> ...`` with the flags that give the dataclass ``args`` its values (flags left at the
    ``defaults`` instance's values are left out, required ones never)."""
    parts = ["musicpeft", name]
    for f in fields(args):
        value = getattr(args, f.name)
        required = f.default is MISSING and f.default_factory is MISSING
        if not required and value == getattr(defaults, f.name):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parts += [flag] if value else []
        else:
            parts += [flag, *(map(str, value) if isinstance(value, list) else [str(value)])]
    return shlex.join(parts)


def _side(result: dict, cross_entropy: dict | None) -> dict[str, Any]:
    """One column of the demo's table from a ``musicpeft evaluate`` result (plus the classifier's extras)."""
    extra = result.get("extra_scores") or {}
    side = {
        "clap_score": result["clap_score"],
        "audio_alignment": result["audio_alignment"],
        "kld": result["kld"],
        "kld_per_feature": {k: v for k, v in (result.get("kld_per_feature") or {}).items()
                            if k in ("mfcc", "chroma", "spectral", "zcr")},
        "classifier_rate": extra["classifier_rate"],
        "classifier_probability": extra["classifier_probability"],
        "classifier_labels": extra["classifier_labels"],
        "num_clips": result["num_items"],
        "num_scored": result["num_scored"],
    }
    if cross_entropy is not None:
        side.update(heldout_cross_entropy=cross_entropy["cross_entropy"],
                    heldout_perplexity=cross_entropy["perplexity"])
    return side


def _first_clip(evaluation_dir: str, clips: dict[str, list[str]], name: str) -> np.ndarray:
    audio, _ = sf.read(os.path.join(evaluation_dir, clips[name][0]), dtype="float32")
    return audio


def run_demo(args: DemoArguments) -> dict:
    """Run the demo and return the report dict (also written to ``output_dir/report.json``)."""
    started = time.time()
    os.makedirs(args.output_dir, exist_ok=True)
    torch.set_num_threads(args.threads)
    if not trained_models_available():
        raise RuntimeError("the demo needs the trained tiny models shipped in musicpeft.tiny, which this "
                           "installation lacks")
    print("musicpeft demo: the shipped tiny MusicGen (trained offline) learns koto; its instrument classifier judges")
    classifier = load_instrument_classifier()
    rate = int(MusicgenConfig.from_pretrained(trained_musicgen_path()).audio_encoder.sampling_rate)
    print(f"Rendering {args.train_clips} training and {args.heldout_clips} held-out {args.instrument} clips")
    train_rows, heldout_rows = _koto_data(args, rate)
    data_dir = os.path.join(args.output_dir, "data")
    train_dir = write_audio_folder(os.path.join(data_dir, "train"), train_rows, rate)
    heldout_dir = write_audio_folder(os.path.join(data_dir, "heldout"), heldout_rows, rate)
    prompts = [heldout_rows[i % len(heldout_rows)]["text"] for i in range(args.generations)]
    prompts_file = os.path.join(data_dir, "prompts.json")
    atomic_write_json(prompts_file, {args.instrument: prompts})
    adapter_dir = os.path.join(args.output_dir, f"{args.instrument}-prompt")
    after = os.path.basename(adapter_dir)  # musicpeft evaluate names the adapter after its folder

    print(f"\n== musicpeft train: a soft prompt ({args.num_virtual_tokens} vectors), {args.steps} steps")
    train_args = TrainArguments(
        base=TINY_MUSICGEN_TRAINED, data=train_dir, output_dir=adapter_dir, method="soft_prompt",
        num_virtual_tokens=args.num_virtual_tokens, clip_seconds=args.seconds, eval_fraction=0.0,
        max_steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
        lr_scheduler_type="constant", seed=args.seed, overwrite=True,
    )
    summary = run_training(train_args)

    print("\n== musicpeft evaluate: the base before and after (the prompt reloaded from disk)")
    evaluation_dir = os.path.join(args.output_dir, "evaluation")
    eval_args = EvaluateArguments(
        base=TINY_MUSICGEN_TRAINED, adapters=[adapter_dir], prompts=prompts_file, reference=heldout_dir,
        heldout=heldout_dir, clap_model=TINY_CLAP_TRAINED, seconds=args.seconds, seed=args.seed,
        guidance_scale=args.guidance_scale, output_dir=evaluation_dir, batch_size=min(16, args.generations),
        score_reference=True,
    )
    evaluated = run_evaluation(
        eval_args, extra_scores=lambda clips, _: classifier_scores(classifier, args.instrument, clips, rate))
    payload = json.loads(open(evaluated["results_json"], encoding="utf-8").read())
    results, cross_entropy = payload["results"], payload["token_cross_entropy"]
    before_scores = _side(results[BEFORE], cross_entropy[BEFORE])
    after_scores = _side(results[after], cross_entropy[after])
    ceiling = _side(payload["reference_scores"], None)

    wavs = {name: os.path.join(args.output_dir, f"{name}.wav") for name in ("before", "after", "reference")}
    clips = payload["setup"]["clips"]
    before_clip, after_clip = _first_clip(evaluation_dir, clips, BEFORE), _first_clip(evaluation_dir, clips, after)
    _write_wav(wavs["before"], before_clip, rate)
    _write_wav(wavs["after"], after_clip, rate)
    _write_wav(wavs["reference"], heldout_rows[0]["audio"], rate)
    losses = [(e["step"], e["loss"]) for e in summary["train_loss_history"]]
    figure = os.path.join(args.output_dir, "spectrograms.png")
    _figure(figure, {f"before: base, '{prompts[0]}'": before_clip, "after: base + soft prompt": after_clip,
                     f"reference: held-out {args.instrument}": heldout_rows[0]["audio"]}, rate, losses,
            f"Teaching the tiny MusicGen {args.instrument} with a soft prompt")
    report = {
        "base_model": "musicpeft tiny MusicGen, trained on the base instruments (musicpeft.tiny.load_trained_musicgen)",
        "method": "SoftMusicPromptConfig",
        "instrument": args.instrument,
        "arguments": asdict(args),
        "prompts": prompts,
        "before": before_scores,
        "after": after_scores,
        "heldout_clips": ceiling,
        "improved": _improved(before_scores, after_scores),
        "adapter_dir": adapter_dir,
        "adapter_bytes": os.path.getsize(os.path.join(adapter_dir, "adapter_model.safetensors")),
        "trainable_parameters": summary["trainable_parameters"],
        "first_logged_loss": losses[0][1] if losses else math.nan,
        "last_logged_loss": losses[-1][1] if losses else math.nan,
        "wavs": wavs,
        "figure": figure,
        "data_dir": data_dir,
        "evaluation_dir": evaluation_dir,
        "train_summary": summary["summary_file"],
        "commands": {"train": _command("train", train_args, TrainArguments(base="-", data="-")),
                     "evaluate": _command("evaluate", eval_args,
                                          EvaluateArguments(base="-", adapters=["-"], prompts="-", reference="-"))},
        "seconds": round(time.time() - started, 1),
    }
    _write_report(args.output_dir, report)
    return report


def _improved(before: dict, after: dict) -> dict[str, bool]:
    keys = [(k, d) for k, _, d in METRICS] + [("heldout_cross_entropy", "lower")]
    return {k: (after[k] > before[k]) if d == "higher" else (after[k] < before[k]) for k, d in keys}


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def report_table(report: dict) -> list[str]:
    """Markdown rows: each score before, after, the change, the held-out clips' own score, and whether it improved."""
    b, a, c, ok = report["before"], report["after"], report["heldout_clips"], report["improved"]
    rows = ["| score | better | before (base) | after (+ soft prompt) | change | held-out koto clips | improved |",
            "|---|---|---:|---:|---:|---:|---|"]
    for key, label, direction in METRICS:
        rows.append(f"| {label} | {direction} | {_fmt(b[key])} | {_fmt(a[key])} | {a[key] - b[key]:+.4f} | "
                    f"{_fmt(c[key])} | {'yes' if ok[key] else 'NO'} |")
    ce_b, ce_a = b["heldout_cross_entropy"], a["heldout_cross_entropy"]
    rows.append(f"| held-out token cross-entropy (nats) | lower | {ce_b:.4f} | {ce_a:.4f} | {ce_a - ce_b:+.4f} | — | "
                f"{'yes' if ok['heldout_cross_entropy'] else 'NO'} |")
    rows.append(f"| held-out perplexity | lower | {b['heldout_perplexity']:.2f} | {a['heldout_perplexity']:.2f} | "
                f"{a['heldout_perplexity'] - b['heldout_perplexity']:+.2f} | — | "
                f"{'yes' if ok['heldout_cross_entropy'] else 'NO'} |")
    return [r.replace("koto", report["instrument"]) for r in rows]


def format_summary(report: dict) -> str:
    """The lines the CLI prints after the demo."""
    lines = report_table(report)
    worse = [k for k, v in report["improved"].items() if not v]
    lines.append("")
    lines.append("Not improved: " + ", ".join(worse) if worse else "Every score moved towards the concept.")
    lines.append(f"Adapter: {report['adapter_dir']} ({report['adapter_bytes']} bytes). Report: "
                 f"{os.path.join(report['arguments']['output_dir'], 'report.md')}. Took {report['seconds']} s.")
    return "\n".join(lines)


def _write_report(output_dir: str, report: dict) -> None:
    atomic_write_json(os.path.join(output_dir, "report.json"), report)
    args = report["arguments"]
    worse = [k for k, v in report["improved"].items() if not v]

    def rel(path: str) -> str:
        return os.path.relpath(path, output_dir)

    lines = [
        "# musicpeft demo report",
        "",
        f"Base: {report['base_model']}. It never heard {report['instrument']}. Method: {report['method']} "
        f"({report['trainable_parameters']} trainable parameters, adapter file {report['adapter_bytes']} bytes), "
        f"{args['steps']} steps on {args['train_clips']} clips of training pieces; scored on "
        f"{args['generations']} generations ({args['seconds']} s each, seed {args['seed']}, same prompts before and "
        f"after) and {args['heldout_clips']} clips of held-out pieces.",
        "",
        *report_table(report),
        "",
        ("Scores that did not improve: " + ", ".join(worse) + ".") if worse else "Every score improved.",
        "",
        f"Training loss: {report['first_logged_loss']:.4f} (first log) -> {report['last_logged_loss']:.4f} "
        "(last log).",
        "",
        "![spectrograms](spectrograms.png)",
        "",
        "Audio: `before.wav` (base), `after.wav` (base + soft prompt, same prompt and seed), `reference.wav` "
        f"(a held-out {report['instrument']} clip). Prompts: " + "; ".join(sorted(set(report["prompts"]))) + ".",
        "",
        "## What ran, and the files it left",
        "",
        "The demo runs the package's own commands; these reproduce it (the instrument classifier's scores are the "
        "demo's addition, through `run_evaluation(..., extra_scores=...)`):",
        "",
        "```",
        report["commands"]["train"],
        report["commands"]["evaluate"],
        "```",
        "",
        f"- `{rel(report['data_dir'])}/`: the rendered clips (`train/`, `heldout/`: wavs + metadata.jsonl) and "
        "`prompts.json`;",
        f"- `{rel(report['adapter_dir'])}/`: the trained adapter and `train_summary.json` (musicpeft train);",
        f"- `{rel(report['evaluation_dir'])}/`: musicpeft evaluate's report (report.md, results.json, plots, "
        "every generated clip under audio/);",
        "- `report.md`, `report.json`, `spectrograms.png`, `before.wav`, `after.wav`, `reference.wav`: this report.",
        "",
        f"Run time: {report['seconds']} s.",
    ]
    atomic_write_text(os.path.join(output_dir, "report.md"), "\n".join(lines) + "\n")
