"""The offline demo: teach the shipped tiny MusicGen an instrument it never heard (koto) with a soft prompt.

The base (``musicpeft.tiny.load_trained_musicgen``) was trained on rendered music of the base instruments
only; koto clips never reached it. The demo renders koto clips of the training pieces, encodes them once
with the base's own codec, trains a ``SoftMusicPromptConfig`` with the library's Trainer recipe, saves it,
reloads it with ``PeftModel.from_pretrained`` and compares the base with and without the prompt on the
same koto prompts, seed and held-out pieces, using tools trained independently of the generator:

* CLAP score of the generated clips against their koto prompts (the shipped tiny CLAP);
* how often the instrument classifier labels a generated clip "koto", and its mean koto probability;
* KLD of audio features against held-out koto clips (lower = closer);
* token cross-entropy of held-out koto clips (lower = the model predicts real koto better).

The same scores of the held-out koto clips themselves are reported as the ceiling. Nothing is
downloaded; a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

METRICS = (
    ("clap_score", "CLAP score vs. the koto prompt", "higher"),
    ("audio_alignment", "CLAP audio alignment with held-out koto", "higher"),
    ("classifier_rate", "classifier says the concept (fraction of clips)", "higher"),
    ("classifier_probability", "classifier probability of the concept (mean)", "higher"),
    ("kld", "KLD of audio features to held-out clips (nats)", "lower"),
)


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
    import soundfile as sf

    tmp = path + ".tmp.wav"
    sf.write(tmp, np.asarray(audio, dtype=np.float32).reshape(-1), sample_rate, subtype="FLOAT")
    os.replace(tmp, path)


def _write_text(path: str, text: str) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(path + ".tmp", path)


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
    fig.savefig(path + ".tmp.png", dpi=100)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)


def _koto_data(args: DemoArguments, rate: int) -> tuple[list[dict], list[dict]]:
    from .tiny.world import world_clips

    train = world_clips(args.instrument, "train", args.train_clips, args.seconds, rate, seed=args.seed)
    heldout = world_clips(args.instrument, "heldout", args.heldout_clips, args.seconds, rate, seed=args.seed)
    if not train or not heldout:
        raise RuntimeError(f"world_clips returned {len(train)} training and {len(heldout)} held-out clips")
    return train, heldout


def run_demo(args: DemoArguments) -> dict:
    """Run the demo and return the report dict (also written to ``output_dir/report.json``)."""
    from peft import PeftModel

    from . import save_adapter
    from .training.musicgen_trainer import token_cross_entropy
    from .world_eval import ConceptScorer, codes_dataset, generate, load_micro_world, train_soft_prompt

    started = time.time()
    os.makedirs(args.output_dir, exist_ok=True)
    torch.set_num_threads(args.threads)
    print("musicpeft demo: loading the shipped tiny MusicGen, CLAP and instrument classifier (trained offline)")
    world = load_micro_world()
    rate = world.sampling_rate
    print(f"Rendering {args.train_clips} training and {args.heldout_clips} held-out {args.instrument} clips")
    train_rows, heldout_rows = _koto_data(args, rate)
    train = codes_dataset(train_rows, world.model)
    heldout = codes_dataset(heldout_rows, world.model)
    scorer = ConceptScorer(world, args.instrument, [r["audio"] for r in heldout_rows], rate)
    prompts = [heldout_rows[i % len(heldout_rows)]["text"] for i in range(args.generations)]

    def measure(model: Any) -> tuple[dict, list[np.ndarray]]:
        clips = generate(model, world.processor, prompts, args.seconds, args.seed, args.guidance_scale)
        scores = scorer.score(clips, prompts)
        ce = token_cross_entropy(model, world.processor, heldout, batch_size=args.batch_size)
        scores.update(heldout_cross_entropy=ce["cross_entropy"], heldout_perplexity=ce["perplexity"])
        return scores, clips

    print("Scoring the base on koto prompts (before)")
    before, before_clips = measure(world.model)
    ceiling = scorer.score([r["audio"] for r in heldout_rows], [r["text"] for r in heldout_rows])

    print(f"Training a soft prompt ({args.num_virtual_tokens} vectors) for {args.steps} steps")
    peft_model, trainer = train_soft_prompt(
        world.fresh_model(), world.processor, train, steps=args.steps, learning_rate=args.learning_rate,
        batch_size=args.batch_size, num_virtual_tokens=args.num_virtual_tokens, seed=args.seed,
        output_dir=args.output_dir,
    )
    adapter_dir = os.path.join(args.output_dir, f"{args.instrument}-prompt")
    save_adapter(peft_model, adapter_dir)
    reloaded = PeftModel.from_pretrained(world.fresh_model(), adapter_dir).eval()
    print("Scoring the base + soft prompt (after), reloaded from disk")
    after, after_clips = measure(reloaded)

    wavs = {name: os.path.join(args.output_dir, f"{name}.wav") for name in ("before", "after", "reference")}
    _write_wav(wavs["before"], before_clips[0], rate)
    _write_wav(wavs["after"], after_clips[0], rate)
    _write_wav(wavs["reference"], heldout_rows[0]["audio"], rate)
    losses = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    figure = os.path.join(args.output_dir, "spectrograms.png")
    _figure(figure, {f"before: base, '{prompts[0]}'": before_clips[0], "after: base + soft prompt": after_clips[0],
                     f"reference: held-out {args.instrument}": heldout_rows[0]["audio"]}, rate, losses,
            f"Teaching the tiny MusicGen {args.instrument} with a soft prompt")
    report = {
        "base_model": "musicpeft tiny MusicGen, trained on the base instruments (musicpeft.tiny.load_trained_musicgen)",
        "method": "SoftMusicPromptConfig",
        "instrument": args.instrument,
        "arguments": asdict(args),
        "prompts": prompts,
        "before": before,
        "after": after,
        "heldout_clips": ceiling,
        "improved": _improved(before, after),
        "adapter_dir": adapter_dir,
        "adapter_bytes": os.path.getsize(os.path.join(adapter_dir, "adapter_model.safetensors")),
        "trainable_parameters": sum(p.numel() for p in peft_model.parameters() if p.requires_grad),
        "first_logged_loss": losses[0][1] if losses else math.nan,
        "last_logged_loss": losses[-1][1] if losses else math.nan,
        "wavs": wavs,
        "figure": figure,
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
    _write_text(os.path.join(output_dir, "report.json"), json.dumps(report, indent=2))
    args = report["arguments"]
    worse = [k for k, v in report["improved"].items() if not v]
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
        f"Run time: {report['seconds']} s.",
    ]
    _write_text(os.path.join(output_dir, "report.md"), "\n".join(lines) + "\n")
