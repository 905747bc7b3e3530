"""Two musical concepts at once, pivotal parameters tuning vs. its baselines (JEN-1 DreamStyler).

The paper teaches a text-to-music model new concepts from about two minutes of reference music each: per
concept a stage-1 mask over the self-attention value projections, then the union of their top 5 % entries,
the cross-attention K/V and 3 identifier tokens per concept are tuned jointly (1,500 steps, batch 32, lr
1e-5 for weights and 1e-4 for tokens, AdamW betas 0.9/0.95, weight decay 0.1). Baselines: identifier tokens
only (textual inversion), every weight (DreamBooth-style), cross-attention K/V + tokens (Custom Diffusion);
ablations: 5 % random instead of pivotal, 1 instead of 3 tokens. Scores in CLAP space: text alignment
(the prompt without its placeholders vs. the generated clips), audio alignment with the concept's reference
clips, and for prompts naming both concepts ΔAA = |AA_1 - AA_2| (lower = neither concept dominates).

Here on the shipped tiny trained models: koto and shamisen, which the base MusicGen never heard; reference
clips come from training pieces, the audio-alignment targets from held-out pieces; the shipped instrument
classifier adds how often a "<koto>" clip is recognised as koto. Small defaults run in about a minute:

    python examples/dreamstyler_concepts.py --output_dir concepts

The paper's settings (``--recipes`` takes any of the names below):

    python examples/dreamstyler_concepts.py --recipes dreamstyler,tokens_only,cross_attn_kv,random,full,one_token \\
        --mask_epochs 100 --tuning_steps 1500 --train_batch_size 32 --learning_rate 1e-5 --token_learning_rate 1e-4
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace

from _common import markdown_table, write_report
from transformers import HfArgumentParser

from musicpeft.evaluation.micro_world import load_micro_world, score_concepts, with_placeholder
from musicpeft.metrics.core import ReferenceSet
from musicpeft.tiny.world import world_clips
from musicpeft.training.dreamstyler import ConceptData, DreamStylerArguments, train_dreamstyler

# name -> (what it is, changes to the DreamStylerArguments)
RECIPES = {
    "dreamstyler": ("pivotal 5% + cross-attn K/V + 3 tokens", {}),
    "tokens_only": ("identifier tokens only", {"recipe": "tokens_only"}),
    "cross_attn_kv": ("cross-attn K/V + tokens", {"recipe": "cross_attn_kv"}),
    "random": ("5% random + cross-attn K/V + tokens", {"selection": "random"}),
    "full": ("every decoder weight + a rare word", {"recipe": "full"}),
    "one_token": ("pivotal 5%, 1 token per concept", {"tokens_per_concept": 1}),
}


@dataclass
class ExampleArguments:
    output_dir: str = field(default="concepts", metadata={"help": "Where report.json goes."})
    recipes: str = field(default="dreamstyler,tokens_only", metadata={"help": f"Comma-separated: {list(RECIPES)}."})
    concepts: str = field(default="koto,shamisen", metadata={"help": "Two concept instruments of the micro-world."})
    clips: int = field(default=6, metadata={"help": "Reference clips per concept (paper: about 2 minutes)."})
    heldout_clips: int = field(default=6, metadata={"help": "Held-out clips per concept (audio-alignment target)."})
    seconds: float = field(default=2.0, metadata={"help": "Clip length in seconds."})
    prompts: int = field(default=3, metadata={"help": "Prompts per concept and for both (paper: 10)."})


def _parse(argv: list[str] | None) -> tuple[ExampleArguments, DreamStylerArguments]:
    """Small step counts and raised learning rates by default; every paper setting is a flag."""
    parser = HfArgumentParser((ExampleArguments, DreamStylerArguments))
    parser.set_defaults(mask_epochs=2, tuning_steps=8, train_batch_size=6, learning_rate=1e-3,
                        token_learning_rate=1e-2, logging_steps=50, audio_length_s=None)
    return parser.parse_args_into_dataclasses(args=argv)


def main(argv: list[str] | None = None) -> dict:
    example, base_args = _parse(argv)
    started = time.perf_counter()
    names = [c.strip() for c in example.concepts.split(",")]
    if len(names) != 2:
        raise SystemExit(f"--concepts must name two instruments, got {names}")
    unknown = [r for r in example.recipes.split(",") if r not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipes {unknown}; choose from {list(RECIPES)}")
    world = load_micro_world()
    rate = world.sampling_rate
    train = {c: world_clips(c, "train", example.clips, example.seconds, rate, seed=base_args.seed) for c in names}
    held = {c: world_clips(c, "heldout", example.heldout_clips, example.seconds, rate, seed=base_args.seed)
            for c in names}
    references = {c: ReferenceSet([r["audio"] for r in held[c]], rate, name=f"held-out {c}") for c in names}
    single = {c: [with_placeholder(held[c][i % len(held[c])]["text"], c) for i in range(example.prompts)]
              for c in names}
    multi = [p.replace(f"<{names[0]}>", f"<{names[0]}> and <{names[1]}>") for p in single[names[0]]]
    concepts = [ConceptData(c, [r["audio"] for r in train[c]], rate,
                            prompts=[with_placeholder(r["text"], c) for r in train[c]]) for c in names]

    results = {"base (instrument words)": {"trainable": 0, **score_concepts(
        world, world.model, world.processor, single, multi, references, example.seconds, base_args.seed, plain=True)}}
    for name in example.recipes.split(","):
        label, changes = RECIPES[name]
        args = replace(base_args, **changes)
        model, processor = world.fresh_model(), copy.deepcopy(world.processor)
        result = train_dreamstyler(model, concepts, args, processor=processor)
        result.model.eval()
        results[f"{name}: {label}"] = {
            "trainable": int(sum(result.trainable.values())), "selected": result.selected,
            "first_loss": result.losses[0] if result.losses else None,
            "last_loss": result.losses[-1] if result.losses else None,
            **score_concepts(world, result.model, processor, single, multi, references, example.seconds,
                             base_args.seed)}
    header = ["recipe", "trainable", "TA ↑", "AA ↑", "classifier: concept rate ↑", "TA both", "AA both", "ΔAA ↓"]
    table = [[label, f"{r['trainable']:,}", f"{r['text_alignment']:.3f}", f"{r['audio_alignment']:.3f}",
              f"{r['classifier_rate']:.2f}", f"{r['text_alignment_multi']:.3f}", f"{r['audio_alignment_multi']:.3f}",
              f"{r['delta_audio_alignment']:.3f}"] for label, r in results.items()]
    report = {"prompts": {"single": single, "both": multi}, "results": results,
              "table": markdown_table(header, table), "seconds": round(time.perf_counter() - started, 1)}
    return write_report(example.output_dir, report)


if __name__ == "__main__":
    main()
