"""Fine-tune AudioLDM2's U-Net, fully or with LoRA, on an audio folder with MusicNet-style captions.

The AudioLDM2 / MusicNet paper fine-tunes AudioLDM2 on MusicNet (classical recordings whose metadata give
composer, composition, movement and ensemble): 10.24 s clips (163,840 samples at 16 kHz), batch 16, AdamW
lr 5e-5 with weight decay 0.01, 30 epochs, evaluation every epoch with the best checkpoint (lowest eval
MSE) kept, logging every 10 steps. This example runs the same recipe through ``musicpeft train``'s Python
entry point (``run_training``) for each method, full U-Net fine-tuning and LoRA presets, and compares the
held-out denoising loss before and after.

**The tiny AudioLDM2 shipped with musicpeft has random weights** (no trained tiny AudioLDM2 exists yet), so
the losses here show that the training path works and that each method lowers its own denoising loss, not
that a model learns music. Point ``--base`` at a real pipeline folder (e.g. a local copy of
``cvssp/audioldm2-music``) and ``--audio_folder`` at your MusicNet folder for real use.

The default audio folder is written from the micro-world (``musicpeft.tiny.world``): rendered clips of base
instruments with MusicNet-style captions ("Bach: bwv66.6, Solo Piano"), one ``metadata.jsonl`` record each.

    python examples/audioldm2_finetune.py --output_dir audioldm2-ft
    python examples/audioldm2_finetune.py --base ./audioldm2-music --audio_folder ./musicnet \\
        --epochs 30 --batch_size 16 --learning_rate 5e-5 --clip_seconds 10.24     # the paper's settings
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import soundfile as sf
from _common import example_parser, markdown_table, write_report

from musicpeft.io import atomic_write, atomic_write_text
from musicpeft.tiny.world import world_clips
from musicpeft.training.runner import TrainArguments, run_training

# instrument of the micro-world -> MusicNet ensemble name
ENSEMBLES = {"piano": "Solo Piano", "strings": "String Quartet", "flute": "Solo Flute", "clarinet": "Solo Clarinet",
             "organ": "Solo Organ", "guitar": "Solo Guitar", "trumpet": "Solo Trumpet", "choir": "Choir"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = example_parser(__doc__, "audioldm2-ft")
    parser.add_argument("--base", default="tiny-audioldm2", help="AudioLDM2 pipeline folder or Hub id; tiny = random.")
    parser.add_argument("--audio_folder", default=None,
                        help="Folder with metadata.jsonl (MusicNet layout); default: written from the micro-world.")
    parser.add_argument("--methods", default="full,lora:attn", help="Comma-separated: full, lora:<preset>.")
    parser.add_argument("--instruments", default="piano,strings", help="Micro-world instruments of the default folder.")
    parser.add_argument("--clips_per_instrument", type=int, default=4)
    parser.add_argument("--clip_seconds", type=float, default=1.28, help="Paper: 10.24 (163,840 samples at 16 kHz).")
    parser.add_argument("--epochs", type=int, default=2, help="Paper: 30.")
    parser.add_argument("--max_steps", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=4, help="Paper: 16.")
    parser.add_argument("--learning_rate", type=float, default=5e-5, help="Paper: 5e-5 (weight decay 0.01).")
    parser.add_argument("--lora_r", type=int, default=8)
    parser.add_argument("--eval_fraction", type=float, default=0.25)
    return parser.parse_args(argv)


def musicnet_caption(piece: str, instrument: str) -> dict:
    """MusicNet-style metadata of a corpus piece: composer, composition, ensemble, and the caption built from them."""
    folder, _, rest = piece.partition("/")
    composer = folder.split("_")[0].capitalize()
    composition = os.path.splitext(os.path.basename(rest or folder))[0]
    ensemble = ENSEMBLES.get(instrument, f"Solo {instrument.capitalize()}")
    return {"composer": composer, "composition": composition, "ensemble": ensemble,
            "description": f"{composer}: {composition}, {ensemble}"}


def write_world_folder(folder: str, instruments: list[str], n: int, seconds: float, rate: int, seed: int) -> int:
    """Rendered micro-world clips as WAV files plus ``metadata.jsonl``; returns the number of clips."""
    os.makedirs(folder, exist_ok=True)
    records = []
    for instrument in instruments:
        for i, clip in enumerate(world_clips(instrument, "train", n, seconds, rate, seed=seed)):
            name = f"{instrument}-{i:03d}.wav"
            audio = np.asarray(clip["audio"], np.float32)
            atomic_write(os.path.join(folder, name), lambda tmp, audio=audio: sf.write(tmp, audio, rate))
            records.append({"path": name, **musicnet_caption(clip["piece"], instrument)})
    atomic_write_text(os.path.join(folder, "metadata.jsonl"), "".join(json.dumps(r) + "\n" for r in records))
    return len(records)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    folder = args.audio_folder
    if folder is None:
        folder = os.path.join(args.output_dir, "musicnet-style")
        count = write_world_folder(folder, args.instruments.split(","), args.clips_per_instrument, args.clip_seconds,
                                   16000, args.seed)
        print(f"Wrote {count} clips with MusicNet-style captions to {folder}")
    results = {}
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        summary = run_training(TrainArguments(
            base=args.base, data=folder, output_dir=os.path.join(args.output_dir, method.replace(":", "-")),
            method=method, lora_r=args.lora_r, clip_seconds=args.clip_seconds, eval_fraction=args.eval_fraction,
            epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
            learning_rate=args.learning_rate, seed=args.seed))
        results[method] = summary
    weights = "random weights" if args.base == "tiny-audioldm2" else args.base
    header = ["method", "trainable", "eval MSE before", "best eval MSE", "eval MSE after", "steps"]
    table = [[method, f"{s['trainable_parameters']:,}", f"{s['eval_loss_before']:.4f}", f"{s['best_eval_loss']:.4f}",
              f"{s['eval_loss_after']:.4f}", s["steps"]] for method, s in results.items()]
    report = {"audio_folder": folder, "results": results,
              "table": f"Base: {args.base} ({weights}).\n\n" + markdown_table(header, table)}
    return write_report(args.output_dir, report)


if __name__ == "__main__":
    main()
