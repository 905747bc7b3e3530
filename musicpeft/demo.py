"""The offline demo: teach the embedded tiny MusicGen a soft prompt for rendered koto music, end to end.

Every step is the real code path a user runs on a real checkpoint: rendered reference audio ->
`datasets` -> collator with MusicGen's delay pattern -> transformers Trainer -> `save_adapter` ->
`PeftModel.from_pretrained` -> `generate` with classifier-free guidance -> report.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch


@dataclass
class DemoArguments:
    output_dir: str = field(default="demo-output", metadata={"help": "Folder for the adapter, wavs and report."})
    steps: int = field(default=300, metadata={"help": "Training steps of the soft prompt."})
    num_virtual_tokens: int = field(default=30, metadata={"help": "Soft prompt length (paper: 30)."})
    learning_rate: float = field(default=5e-2, metadata={"help": "Learning rate of the prompt."})
    batch_size: int = field(default=8, metadata={"help": "Training batch size."})
    train_clips: int = field(default=24, metadata={"help": "Rendered training clips."})
    heldout_clips: int = field(default=8, metadata={"help": "Rendered held-out clips for the cross-entropy."})
    seconds: float = field(default=2.0, metadata={"help": "Length of each clip in seconds."})
    program: int = field(default=107, metadata={"help": "General MIDI program of the reference set (107 = koto)."})
    caption: str = field(default="a folk melody on koto", metadata={"help": "Caption of every reference clip."})
    prompt: str = field(default="a calm folk melody", metadata={"help": "Prompt for the before/after generations."})
    generate_seconds: float = field(default=2.0, metadata={"help": "Length of each generated clip."})
    seed: int = field(default=0, metadata={"help": "Seed for rendering, initialisation and sampling."})
    threads: int = field(default=1, metadata={"help": "Torch CPU threads (tiny models run fastest on one)."})


def _write_wav(path: str, audio: torch.Tensor, sample_rate: int) -> None:
    import soundfile as sf

    tmp = path + ".tmp.wav"
    sf.write(tmp, audio.detach().float().cpu().numpy().reshape(-1), sample_rate)
    os.replace(tmp, path)


def _loss_curve(log_history: list[dict], path: str) -> list[tuple[int, float]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if points:
        ax.plot([s for s, _ in points], [v for _, v in points], marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (token cross-entropy)")
    ax.set_title("Soft prompt training on the tiny MusicGen")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)
    return points


def run_demo(args: DemoArguments) -> dict:
    """Run the demo and return the report dict (also written to `output_dir/report.json`)."""
    from peft import PeftModel
    from transformers import MusicgenForConditionalGeneration, TrainingArguments

    import musicpeft
    from musicpeft.data.dataset import make_rendered_dataset
    from musicpeft.tiny import tiny_musicgen, tiny_musicgen_processor
    from musicpeft.training.collator import init_codebooks_from_audio
    from musicpeft.training.musicgen_trainer import make_musicgen_trainer, token_cross_entropy

    started = time.time()
    os.makedirs(args.output_dir, exist_ok=True)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    print(
        "musicpeft demo: the default base is a tiny MusicGen with RANDOM weights, built offline from a config "
        "(no trained tiny checkpoint ships yet). Its audio is not music; the demo shows the full pipeline."
    )
    model = tiny_musicgen(seed=args.seed)
    processor = tiny_musicgen_processor()
    rate = model.config.audio_encoder.sampling_rate

    print(
        f"Rendering {args.train_clips + args.heldout_clips} reference clips (music21 corpus, GM program {args.program})"
    )
    data = make_rendered_dataset(
        args.train_clips + args.heldout_clips,
        args.seconds,
        rate,
        program=args.program,
        caption=args.caption,
        seed=args.seed,
    )
    train, heldout = data.select(range(args.train_clips)), data.select(range(args.train_clips, len(data)))
    # A config-built EnCodec has all-zero codebooks (every frame -> code 0); seed them from the training audio
    # (EnCodec's own k-means idea), then save the base so every later step loads the same weights from disk.
    init_codebooks_from_audio(model, train["audio"], seed=args.seed)
    base_dir = os.path.join(args.output_dir, "tiny-base")
    model.save_pretrained(base_dir)
    processor.save_pretrained(base_dir)

    def load_base() -> MusicgenForConditionalGeneration:
        return MusicgenForConditionalGeneration.from_pretrained(base_dir).eval()

    ce_before = token_cross_entropy(model, processor, heldout, batch_size=args.batch_size)
    peft_model = musicpeft.add_adapter(
        model, musicpeft.SoftMusicPromptConfig(num_virtual_tokens=args.num_virtual_tokens)
    )
    peft_model.print_trainable_parameters()
    training_args = TrainingArguments(
        output_dir=os.path.join(args.output_dir, "trainer"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        logging_steps=max(1, args.steps // 30),
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        disable_tqdm=False,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )
    trainer = make_musicgen_trainer(
        peft_model, processor, train, eval_dataset=None, args=training_args, early_stopping_patience=None
    )
    trainer.train()

    adapter_dir = os.path.join(args.output_dir, "koto-prompt")
    musicpeft.save_adapter(peft_model, adapter_dir)
    reloaded = PeftModel.from_pretrained(load_base(), adapter_dir)
    ce_after = token_cross_entropy(reloaded, processor, heldout, batch_size=args.batch_size)

    inputs = processor(text=[args.prompt], return_tensors="pt")
    frames = int(args.generate_seconds * model.config.audio_encoder.frame_rate)
    generate_kwargs = dict(guidance_scale=3.0, do_sample=True, max_new_tokens=frames)
    torch.manual_seed(args.seed)
    before = load_base().generate(**inputs, **generate_kwargs)
    torch.manual_seed(args.seed)
    after = reloaded.generate(**inputs, **generate_kwargs)
    wavs = {"before": os.path.join(args.output_dir, "before.wav"), "after": os.path.join(args.output_dir, "after.wav")}
    _write_wav(wavs["before"], before[0], rate)
    _write_wav(wavs["after"], after[0], rate)
    reference = os.path.join(args.output_dir, "reference.wav")
    _write_wav(reference, torch.as_tensor(np.asarray(heldout[0]["audio"], dtype=np.float32)), rate)

    curve_path = os.path.join(args.output_dir, "loss_curve.png")
    points = _loss_curve(trainer.state.log_history, curve_path)
    report = {
        "base_model": "tiny MusicGen, random weights (offline default)",
        "method": "SoftMusicPromptConfig",
        "arguments": asdict(args),
        "adapter_dir": adapter_dir,
        "adapter_bytes": os.path.getsize(os.path.join(adapter_dir, "adapter_model.safetensors")),
        "trainable_parameters": args.num_virtual_tokens * model.config.text_encoder.hidden_size,
        "first_logged_loss": points[0][1] if points else math.nan,
        "last_logged_loss": points[-1][1] if points else math.nan,
        "heldout_cross_entropy_before": ce_before["cross_entropy"],
        "heldout_cross_entropy_after": ce_after["cross_entropy"],
        "heldout_perplexity_before": ce_before["perplexity"],
        "heldout_perplexity_after": ce_after["perplexity"],
        "wavs": {**wavs, "reference": reference},
        "loss_curve": curve_path,
        "seconds": round(time.time() - started, 1),
    }
    _write_report(args.output_dir, report)
    return report


def _write_report(output_dir: str, report: dict) -> None:
    json_path = os.path.join(output_dir, "report.json")
    with open(json_path + ".tmp", "w") as handle:
        json.dump(report, handle, indent=2)
    os.replace(json_path + ".tmp", json_path)
    lines = [
        "# musicpeft demo report",
        "",
        f"Base: {report['base_model']}. Method: {report['method']} "
        f"({report['trainable_parameters']} trainable parameters, adapter file {report['adapter_bytes']} bytes).",
        "",
        "| held-out clips | before | after |",
        "|---|---|---|",
        f"| token cross-entropy | {report['heldout_cross_entropy_before']:.4f} | "
        f"{report['heldout_cross_entropy_after']:.4f} |",
        f"| perplexity | {report['heldout_perplexity_before']:.2f} | {report['heldout_perplexity_after']:.2f} |",
        "",
        f"Training loss: {report['first_logged_loss']:.4f} (first log) -> {report['last_logged_loss']:.4f} (last log).",
        "",
        "![loss curve](loss_curve.png)",
        "",
        "Audio: `before.wav` (base), `after.wav` (base + soft prompt, same seed), `reference.wav` (a held-out clip).",
        f"Run time: {report['seconds']} s.",
    ]
    md_path = os.path.join(output_dir, "report.md")
    with open(md_path + ".tmp", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(md_path + ".tmp", md_path)
