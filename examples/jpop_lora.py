"""Full fine-tuning vs. LoRA presets on MusicGen's decoder, scored by cross-entropy and perplexity (J-pop paper).

The paper fine-tunes MusicGen-small on J-pop with audiocraft (AdamW, lr 1e-4, weight decay 0.01, cosine
schedule with 8 warm-up steps, batch 2, 2,000 updates per epoch, 9 epochs) and reports the cross-entropy
and perplexity of its validation clips. Two things went wrong there, and this example measures both:

* **LoRA never ran.** audiocraft's MusicGen uses its own attention implementation (xformers-style fused
  projections) and refuses checkpoints whose layers differ from the released ones, so the authors could
  not insert LoRA matrices and gave up. With transformers' ``MusicgenForConditionalGeneration`` every
  projection is a named ``nn.Linear`` (``self_attn.q_proj``, ``encoder_attn.v_proj``, ``fc1``...), so
  stock peft LoRA attaches by name (``musicpeft.training.presets.lora_config``) and the saved adapter
  holds only the LoRA weights; the base checkpoint is untouched and loads as released.
* **Full fine-tuning forgot.** On 26 songs the fully fine-tuned model "performed poorly when asked to
  generate other genres": its weights were pulled towards the new data. Here each method's
  cross-entropy on held-out clips of a *base* instrument (piano, which the base knows) is measured
  before and after; a rise is forgetting. LoRA and soft prompts leave the base weights frozen, so
  they can only forget through what they add.

The new "genre" is the micro-world's koto (the shipped tiny base never heard it); training clips come from
training pieces, validation clips from held-out pieces. Small defaults run in under a minute:

    python examples/jpop_lora.py --output_dir jpop

The paper's optimiser settings (``--max_steps`` is what fits a CPU; the paper ran 18,000 updates):

    python examples/jpop_lora.py --learning_rate 1e-4 --weight_decay 0.01 --lr_scheduler_type cosine \\
        --warmup_steps 8 --batch_size 2 --max_steps 2000 --eval_steps 200 --train_clips 200
"""

from __future__ import annotations

import argparse
import os
import time

from _common import cpu_training_arguments, example_parser, markdown_table, train_musicgen, world_codes, write_report

from musicpeft.evaluation.micro_world import load_micro_world, method_model
from musicpeft.training.musicgen_trainer import token_cross_entropy


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = example_parser(__doc__, "jpop")
    parser.add_argument("--methods", default="full,lora:self_attn,lora:attn,lora:attn_mlp",
                        help="Comma-separated: full, lora:<preset>, soft_prompt.")
    parser.add_argument("--instrument", default="koto", help="The new 'genre': a concept instrument.")
    parser.add_argument("--forgetting_instrument", default="piano", help="A base instrument, to measure forgetting.")
    parser.add_argument("--train_clips", type=int, default=16)
    parser.add_argument("--validation_clips", type=int, default=8)
    parser.add_argument("--clip_seconds", type=float, default=2.0, help="Clip length (paper: 30 s).")
    parser.add_argument("--max_steps", type=int, default=20, help="Optimizer steps (paper: 9 x 2,000).")
    parser.add_argument("--eval_steps", type=int, default=10, help="Validate every N steps (paper: 200).")
    parser.add_argument("--batch_size", type=int, default=4, help="Batch size (paper: 2).")
    parser.add_argument("--learning_rate", type=float, default=1e-3,
                        help="Learning rate for every method (paper, full fine-tuning: 1e-4).")
    parser.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay (paper: 0.01).")
    parser.add_argument("--lr_scheduler_type", default="constant", help="Paper: cosine.")
    parser.add_argument("--warmup_steps", type=int, default=0, help="Paper: 8.")
    parser.add_argument("--lora_r", type=int, default=8, help="LoRA rank (alpha = 2r).")
    return parser.parse_args(argv)


def train_one(world, method: str, train, validation, args: argparse.Namespace):
    model = method_model(world.fresh_model(), method, lora_r=args.lora_r, seed=args.seed)
    training_args = cpu_training_arguments(
        os.path.join(args.output_dir, "trainer", method.replace(":", "-")), args, max_steps=args.max_steps,
        weight_decay=args.weight_decay, lr_scheduler_type=args.lr_scheduler_type, warmup_steps=args.warmup_steps,
        eval_strategy="steps", eval_steps=args.eval_steps, logging_steps=args.eval_steps, save_strategy="no",
    )
    return train_musicgen(world, model, train, validation, training_args, patience=None)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    world = load_micro_world()
    train = world_codes(world, args.instrument, "train", args.train_clips, args.clip_seconds, args.seed)
    validation = world_codes(world, args.instrument, "heldout", args.validation_clips, args.clip_seconds, args.seed)
    other = world_codes(world, args.forgetting_instrument, "heldout", args.validation_clips, args.clip_seconds,
                        args.seed)

    def ce(model, data) -> dict:
        return token_cross_entropy(model, world.processor, data, batch_size=args.batch_size)

    base = {"validation": ce(world.model, validation), "other": ce(world.model, other)}
    rows = {}
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        model, trainer = train_one(world, method, train, validation, args)
        history = trainer.state.log_history
        rows[method] = {
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "validation": ce(model, validation),
            "other": ce(model, other),
            "train_loss": [e["loss"] for e in history if "loss" in e],
            "eval_loss": [e["eval_loss"] for e in history if "eval_loss" in e],
        }
    header = ["method", "trainable", f"{args.instrument} validation CE", "perplexity",
              f"{args.forgetting_instrument} CE (forgetting)", "validation CE over training"]
    table = [["base", 0, f"{base['validation']['cross_entropy']:.3f}", f"{base['validation']['perplexity']:.2f}",
              f"{base['other']['cross_entropy']:.3f}", "—"]]
    for method, r in rows.items():
        table.append([method, f"{r['trainable']:,}", f"{r['validation']['cross_entropy']:.3f}",
                      f"{r['validation']['perplexity']:.2f}", f"{r['other']['cross_entropy']:.3f}",
                      " → ".join(f"{v:.2f}" for v in r["eval_loss"])])
    report = {"base": base, "methods": rows, "table": markdown_table(header, table, align="lrrrrl"),
              "seconds": round(time.perf_counter() - started, 1)}
    return write_report(args.output_dir, report)


if __name__ == "__main__":
    main()
