"""Quality benchmark: do the papers' comparisons hold on the shipped tiny trained models?

Two experiments on the micro-world (``musicpeft.tiny.world``): the base MusicGen was trained on the base
instruments only, so koto and shamisen are new to it. Every method is trained on clips of *training*
pieces and scored on *held-out* pieces, over several seeds (mean ± standard deviation).

A. Adapting to koto (prompt-tuning paper; J-pop LoRA paper): the base vs. a soft prompt vs. the LoRA presets
   (``musicpeft.training.presets``) vs. full fine-tuning of the decoder, each trained with the library's
   Trainer recipe for the same number of steps. Scores: held-out token cross-entropy and perplexity; on
   clips generated from held-out koto captions, the KLD of audio features against held-out koto clips,
   the CLAP score (shipped tiny CLAP) and how often the shipped instrument classifier says "koto".

B. Two concepts, koto and shamisen (JEN-1 DreamStyler): identifier tokens only vs. cross-attention K/V +
   tokens vs. pivotal 5 % vs. 5 % random vs. every decoder weight, 3 tokens per concept, plus pivotal 5 % with
   1 token. Scores (CLAP space, shipped tiny CLAP): text alignment (prompt without the placeholder vs. the
   clips), audio alignment with held-out clips of the concept, the classifier's concept rate, and for prompts
   naming both concepts, the mean audio alignment and ΔAA = |AA_koto - AA_shamisen| (lower = balanced).

Every paper claim checked is printed with whether its direction was reproduced here.

    python benchmarks/quality.py --quick            # a few minutes on 2 CPU cores
    python benchmarks/quality.py                    # the full run (part A alone: 74 min, 1 thread, busy 2-core machine)
    python benchmarks/quality.py --quick --json out.json --markdown out.md
    python benchmarks/quality.py --parts B --seeds 1 --first-seed 2 --json b2.json   # one seed per process ...
    python benchmarks/quality.py --merge b0.json b1.json b2.json --markdown b.md       # ... then one set of tables

Learning rates are raised from the papers' (1e-5 for weights, 1e-4 for tokens) because the runs are a few
hundred steps, not 100 epochs or 1,500 steps at batch 32; they are flags.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch

PRESETS = {
    "quick": dict(seeds=3, train_clips=12, heldout_clips=6, seconds=2.0, steps=30, generations=6, concept_clips=6,
                  mask_epochs=3, tuning_steps=30, batch_size=6, concept_prompts=3),
    "full": dict(seeds=3, train_clips=96, heldout_clips=32, seconds=2.0, steps=400, generations=32,
                 concept_clips=32, mask_epochs=40, tuning_steps=400, batch_size=16, concept_prompts=16),
}
METHODS_A = ("soft_prompt", "lora:self_attn", "lora:attn", "lora:attn_mlp", "full")


@dataclass(frozen=True)
class Recipe:
    label: str
    recipe: str
    tokens: int = 3
    selection: str = "pivotal"


RECIPES_B = (
    Recipe("identifier tokens only", "tokens_only"),
    Recipe("cross-attn K/V + tokens", "cross_attn_kv"),
    Recipe("pivotal 5%", "dreamstyler"),
    Recipe("5% random", "dreamstyler", selection="random"),
    Recipe("full decoder", "full"),
    Recipe("pivotal 5%, 1 token", "dreamstyler", tokens=1),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Minutes, not hours (full part A: 74 min).")
    parser.add_argument("--seeds", type=int, default=None, help="Seeds per cell (default 3).")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="Run seeds first-seed .. first-seed + seeds - 1 (to split seeds over processes).")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="Run nothing: merge the per-seed rows of these --json reports into one set of tables.")
    parser.add_argument("--parts", default="A,B", help="Which experiments to run: A, B or A,B.")
    parser.add_argument("--steps", type=int, default=None, help="A: training steps of every method.")
    parser.add_argument("--tuning-steps", type=int, default=None, help="B: stage-2 steps (paper: 1,500).")
    parser.add_argument("--mask-epochs", type=int, default=None, help="B: stage-1 mask epochs (paper: 100).")
    parser.add_argument("--lr-soft-prompt", type=float, default=3e-2, help="A: soft prompt lr (paper: 1e-5).")
    parser.add_argument("--lr-lora", type=float, default=1e-3, help="A: LoRA lr.")
    parser.add_argument("--lr-full", type=float, default=1e-4, help="A: full fine-tuning lr (J-pop paper: 1e-5).")
    parser.add_argument("--lora-r", type=int, default=8, help="A: LoRA rank (alpha = 2r).")
    parser.add_argument("--lr-weights", type=float, default=1e-3, help="B: lr of model weights (paper: 1e-5).")
    parser.add_argument("--lr-tokens", type=float, default=1e-2, help="B: lr of identifier tokens (paper: 1e-4).")
    parser.add_argument("--json", default=None, help="Write every per-seed number here.")
    parser.add_argument("--markdown", default=None, help="Write the Markdown tables here.")
    parser.add_argument("--threads", type=int, default=1, help="Torch CPU threads.")
    args = parser.parse_args(argv)
    preset = dict(PRESETS["quick" if args.quick else "full"])
    for key in ("seeds", "steps", "tuning_steps", "mask_epochs"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    args.preset = preset
    args.parts = [p.strip().upper() for p in args.parts.split(",") if p.strip()]
    if not set(args.parts) <= {"A", "B"}:
        raise SystemExit(f"--parts must name A and/or B, got {args.parts}")
    return args


# --------------------------------------------------------------------------------------------- helpers


def mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def cell(values: list[float], digits: int = 3) -> str:
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def seed_range(args: argparse.Namespace) -> range:
    return range(args.first_seed, args.first_seed + args.preset["seeds"])


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------- experiment A


def run_part_a(world, args, log) -> dict:
    from musicpeft.evaluation.micro_world import ConceptScorer, codes_dataset, generate, train_method
    from musicpeft.tiny.world import world_clips
    from musicpeft.training.musicgen_trainer import token_cross_entropy

    p = args.preset
    rate = world.sampling_rate
    heldout_rows = world_clips("koto", "heldout", p["heldout_clips"], p["seconds"], rate, seed=0)
    heldout = codes_dataset(heldout_rows, world.model)
    scorer = ConceptScorer(world, "koto", [r["audio"] for r in heldout_rows], rate)
    prompts = [heldout_rows[i % len(heldout_rows)]["text"] for i in range(p["generations"])]
    lrs = {"soft_prompt": args.lr_soft_prompt, "lora": args.lr_lora, "full": args.lr_full}
    results: dict[str, list[dict]] = {"base": []}
    for seed in seed_range(args):
        train_rows = world_clips("koto", "train", p["train_clips"], p["seconds"], rate, seed=seed)
        train = codes_dataset(train_rows, world.model)
        for method in ("base", *METHODS_A):
            start = time.perf_counter()
            model = world.fresh_model()
            losses: list[float] = []
            if method != "base":
                with tempfile.TemporaryDirectory() as scratch:
                    model, trainer = train_method(
                        model, world.processor, train, method, steps=p["steps"], batch_size=p["batch_size"],
                        learning_rate=lrs[method.split(":")[0]], seed=seed, output_dir=scratch, lora_r=args.lora_r,
                        progress=False)
                losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
            ce = token_cross_entropy(model, world.processor, heldout, batch_size=p["batch_size"])
            clips = generate(model, world.processor, prompts, p["seconds"], seed=1000 + seed)
            row = {"seed": seed, "trainable": 0 if method == "base" else trainable(model),
                   "cross_entropy": ce["cross_entropy"], "perplexity": ce["perplexity"],
                   "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
                   **scorer.score(clips, prompts), "seconds": time.perf_counter() - start}
            results.setdefault(method, []).append(row)
            args.on_row("A", results)
            log(f"A seed {seed} {method:>15}: CE {row['cross_entropy']:.3f}  KLD {row['kld']:.3f}  "
                f"CLAP {row['clap_score']:.3f}  koto {row['classifier_rate']:.2f}  ({row['seconds']:.0f} s)")
    return results


COLUMNS_A = (("held-out CE ↓", "cross_entropy", 3), ("perplexity ↓", "perplexity", 2),
             ("KLD to held-out koto ↓", "kld", 3), ("CLAP score ↑", "clap_score", 3),
             ("classifier: koto rate ↑", "classifier_rate", 2), ("P(koto) ↑", "classifier_probability", 3))
COLUMNS_B = (("TA single ↑", "text_alignment", 3), ("AA single ↑", "audio_alignment", 3),
             ("classifier: concept rate ↑", "classifier_rate", 2), ("TA two concepts ↑", "text_alignment_multi", 3),
             ("AA two concepts ↑", "audio_alignment_multi", 3), ("ΔAA ↓", "delta_audio_alignment", 3))


def table(results: dict, first: str, columns: tuple[tuple[str, str, int], ...]) -> list[str]:
    """Markdown rows: one per method, mean ± standard deviation over seeds of each (title, key, digits) column."""
    rows = [f"| {first} | trainable params | " + " | ".join(title for title, _, _ in columns) + " |",
            "|---|---:|" + "---|" * len(columns)]
    for label, runs in results.items():
        cells = " | ".join(cell([r[key] for r in runs], digits) for _, key, digits in columns)
        rows.append(f"| {label} | {runs[0]['trainable']:,} | {cells} |")
    return rows


# ---------------------------------------------------------------------------------------- experiment B


def run_part_b(world, args, log) -> dict:
    from musicpeft.evaluation.micro_world import score_concepts, with_placeholder
    from musicpeft.metrics.core import ReferenceSet
    from musicpeft.tiny.world import world_clips
    from musicpeft.training.dreamstyler import ConceptData, DreamStylerArguments, train_dreamstyler

    p = args.preset
    rate = world.sampling_rate
    names = ("koto", "shamisen")
    held = {c: world_clips(c, "heldout", p["heldout_clips"], p["seconds"], rate, seed=0) for c in names}
    refs = {c: ReferenceSet([r["audio"] for r in held[c]], rate, name=f"held-out {c}") for c in names}
    single = {c: [with_placeholder(held[c][i % len(held[c])]["text"], c) for i in range(p["concept_prompts"])]
              for c in names}
    multi = [s.replace("<koto>", "<koto> and <shamisen>") for s in single["koto"]]
    labels = list(world.classifier.labels)
    if any(c not in labels for c in names):
        raise ValueError(f"the instrument classifier does not know {names}: labels {labels}")
    results: dict[str, list[dict]] = {}

    def score(model, processor, seed: int, plain: bool) -> dict:
        return score_concepts(world, model, processor, single, multi, refs, p["seconds"], 2000 + 10 * seed, plain)

    for seed in seed_range(args):
        concepts = [
            ConceptData(c, [r["audio"] for r in rows], rate, prompts=[with_placeholder(r["text"], c) for r in rows])
            for c in names
            for rows in [world_clips(c, "train", p["concept_clips"], p["seconds"], rate, seed=seed)]
        ]
        start = time.perf_counter()
        base = {"seed": seed, "trainable": 0, **score(world.model, world.processor, seed, plain=True),
                "seconds": time.perf_counter() - start}
        results.setdefault("base (instrument words)", []).append(base)
        args.on_row("B", results)
        for recipe in RECIPES_B:
            start = time.perf_counter()
            model, processor = world.fresh_model(), copy.deepcopy(world.processor)
            ds_args = DreamStylerArguments(
                recipe=recipe.recipe, tokens_per_concept=recipe.tokens, selection=recipe.selection, percent=5.0,
                mask_epochs=p["mask_epochs"], tuning_steps=p["tuning_steps"], train_batch_size=p["batch_size"],
                learning_rate=args.lr_weights, token_learning_rate=args.lr_tokens, seed=seed,
                logging_steps=max(1, p["tuning_steps"]), audio_length_s=None)
            result = train_dreamstyler(model, concepts, ds_args, processor=processor)
            result.model.eval()
            row = {"seed": seed, "trainable": int(sum(result.trainable.values())),
                   "first_loss": result.losses[0] if result.losses else None,
                   "last_loss": result.losses[-1] if result.losses else None,
                   **score(result.model, processor, seed, plain=False), "seconds": time.perf_counter() - start}
            results.setdefault(recipe.label, []).append(row)
            args.on_row("B", results)
            log(f"B seed {seed} {recipe.label:>24}: TA {row['text_alignment']:.3f}  AA {row['audio_alignment']:.3f}  "
                f"rate {row['classifier_rate']:.2f}  ΔAA {row['delta_audio_alignment']:.3f}  ({row['seconds']:.0f} s)")
    return results


# --------------------------------------------------------------------------------------- paper checks


def verdict(part: list[dict], new: list[dict], key: str, better: str) -> tuple[str, str]:
    """Whether ``new`` beats ``part`` on ``key``: 'yes', 'no', or 'within spread' when the mean difference is not
    larger than the larger of the two seed standard deviations. Returns (measured text, verdict)."""
    (m0, s0), (m1, s1) = mean_std([r[key] for r in part]), mean_std([r[key] for r in new])
    diff = m1 - m0 if better == "higher" else m0 - m1
    text = f"{m0:.3f} -> {m1:.3f}"
    if abs(diff) <= max(s0, s1):
        return text, "within spread"
    return text, "yes" if diff > 0 else "no"


def claims(results: dict) -> list[tuple[str, str, str]]:
    """(claim, measured means, verdict) for each paper direction the runs can test."""
    out = []
    a = results.get("A")
    if a:
        for key, label, better in (("clap_score", "CLAP score", "higher"), ("kld", "KLD", "lower"),
                                   ("classifier_rate", "classifier koto rate", "higher"),
                                   ("cross_entropy", "held-out CE", "lower")):
            out.append((f"Prompt tuning: a soft prompt gives a {better} {label} than the base (base -> soft prompt)",
                        *verdict(a["base"], a["soft_prompt"], key, better)))
        out.append(("J-pop: full fine-tuning lowers the held-out CE (base -> full)",
                    *verdict(a["base"], a["full"], "cross_entropy", "lower")))
        lora = min((k for k in a if k.startswith("lora")), key=lambda k: mean_std([r["cross_entropy"] for r in a[k]]))
        out.append((f"(J-pop could not run LoRA) the best LoRA preset, {lora}, beats full fine-tuning's held-out CE "
                    "(full -> LoRA)", *verdict(a["full"], a[lora], "cross_entropy", "lower")))
    b = results.get("B")
    if b:
        piv = b["pivotal 5%"]
        baselines = ("identifier tokens only", "cross-attn K/V + tokens", "5% random")
        for other in baselines:
            out.append((f"DreamStyler: pivotal 5% has a higher audio alignment than {other} ({other} -> pivotal)",
                        *verdict(b[other], piv, "audio_alignment", "higher")))
        for other in baselines:
            out.append((f"DreamStyler: pivotal 5% balances two concepts better, a lower ΔAA than {other} ({other} -> "
                        "pivotal)", *verdict(b[other], piv, "delta_audio_alignment", "lower")))
        out.append(("DreamStyler: identifier tokens only keep a higher text alignment than pivotal 5% "
                    "(pivotal -> tokens only)", *verdict(piv, b["identifier tokens only"], "text_alignment", "higher")))
        others = [k for k in b if not k.startswith("base") and k != "full decoder"]
        best_other = min(others, key=lambda k: mean_std([r["text_alignment"] for r in b[k]])[0])
        out.append((f"DreamStyler: every weight trained gives the lowest text alignment (lowest other: {best_other} -> "
                    "full)", *verdict(b[best_other], b["full decoder"], "text_alignment", "lower")))
        out.append(("DreamStyler: 3 tokens per concept give a lower ΔAA than 1 token (1 -> 3 tokens)",
                    *verdict(b["pivotal 5%, 1 token"], piv, "delta_audio_alignment", "lower")))
    return out


def claims_table(rows: list[tuple[str, str, str]]) -> list[str]:
    return ["| paper's direction | measured (means) | reproduced |", "|---|---|---|",
            *[f"| {c} | {v} | {ok if ok != 'no' else '**no**'} |" for c, v, ok in rows]]


def merge_reports(paths: list[str]) -> tuple[dict, dict, float, bool, dict | None]:
    """(results, preset, summed seconds, quick, learning rates) of several ``--json`` reports (or ``.partial`` files).

    Rows of one method are concatenated; the runs must share a preset and learning rates (``.partial`` files
    record none), and no seed may appear twice.
    """
    results: dict = {}
    preset, seconds, quick, rates = None, 0.0, None, None
    for path in paths:
        try:
            report = json.loads(open(path, encoding="utf-8").read())
        except (OSError, ValueError) as err:
            raise SystemExit(f"--merge: {path}: not a readable JSON report ({err})") from None
        if not isinstance(report, dict) or "results" not in report or "preset" not in report:
            raise SystemExit(f"--merge: {path}: expected a quality.py --json report with 'preset' and 'results'")
        run_preset = {k: v for k, v in report["preset"].items() if k != "seeds"}
        if preset is None:
            preset, quick = run_preset, report.get("quick")
        elif run_preset != preset:
            raise SystemExit(f"--merge: {path}: preset {run_preset} differs from the first report's {preset}")
        if "learning_rates" in report:
            if rates is not None and report["learning_rates"] != rates:
                raise SystemExit(f"--merge: {path}: learning rates {report['learning_rates']} differ from {rates}")
            rates = report["learning_rates"]
        seconds += float(report.get("seconds", 0.0))
        for part, methods in report["results"].items():
            for method, rows in methods.items():
                merged = results.setdefault(part, {}).setdefault(method, [])
                seen = {r["seed"] for r in merged}
                twice = sorted(seen & {r["seed"] for r in rows})
                if twice:
                    raise SystemExit(f"--merge: {path}: part {part} '{method}' repeats seed(s) {twice}")
                merged += rows
    seeds = {r["seed"] for methods in results.values() for rows in methods.values() for r in rows}
    return results, {**preset, "seeds": len(seeds)}, seconds, bool(quick), rates


def render(results: dict, p: dict, header: str) -> tuple[str, list[tuple[str, str, str]]]:
    """The Markdown tables and paper checks of ``results`` (a run's or several merged runs')."""
    lines = [header, ""]
    if "A" in results:
        lines += [f"### A. Adapting to koto ({p['train_clips']} training clips, {p['steps']} steps, batch "
                  f"{p['batch_size']}; {p['heldout_clips']} held-out clips; {p['generations']} generations)", "",
                  *table(results["A"], "method", COLUMNS_A), ""]
    if "B" in results:
        lines += [f"### B. Two concepts, koto and shamisen ({p['concept_clips']} clips each, mask {p['mask_epochs']} "
                  f"epochs, {p['tuning_steps']} steps, batch {p['batch_size']}; {p['concept_prompts']} prompts per "
                  "concept and for both)", "", *table(results["B"], "recipe", COLUMNS_B), ""]
    checks = claims(results)
    lines += ["### Paper directions", "", *claims_table(checks), ""]
    return "\n".join(lines), checks


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from musicpeft.io import atomic_write_text

    if args.merge:
        results, p, seconds, quick, rates = merge_reports(args.merge)
        header = (f"Run: {'--quick' if quick else 'full'}, {p['seeds']} seeds merged from {len(args.merge)} runs "
                  f"({seconds / 60:.1f} min of wall time summed over the runs); mean ± standard deviation over seeds.")
    else:
        results, seconds = run(args)
        p, quick = args.preset, args.quick
        rates = {k: getattr(args, k) for k in ("lr_soft_prompt", "lr_lora", "lr_full", "lr_weights", "lr_tokens")}
        header = (f"Run: {'--quick' if quick else 'full'}, {p['seeds']} seeds, {seconds / 60:.1f} min on "
                  f"{os.cpu_count()} CPU cores (torch threads {args.threads}); mean ± standard deviation over seeds.")
    text, checks = render(results, p, header)
    print("\n" + text)
    if args.markdown:
        atomic_write_text(args.markdown, text + "\n")
    report = {"preset": p, "quick": quick, "seconds": seconds, "results": results,
              "claims": [{"claim": c, "measured": v, "verdict": ok} for c, v, ok in checks],
              "learning_rates": rates}
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2, default=float))
    return report


def run(args: argparse.Namespace) -> tuple[dict, float]:
    """Train and score every method of the chosen parts: (results, wall seconds)."""
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    from musicpeft.evaluation.micro_world import load_micro_world
    from musicpeft.io import atomic_write_json

    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {msg}", flush=True)

    world = load_micro_world()
    results: dict = {}

    def on_row(part: str, rows: dict) -> None:
        """Keep every finished row on disk (``<json>.partial``), so a run cut short still leaves its seeds."""
        if args.json:
            atomic_write_json(args.json + ".partial", {"preset": args.preset, "quick": args.quick,
                                                       "seconds": time.perf_counter() - started,
                                                       "results": {**results, part: rows}})

    args.on_row = on_row
    if "A" in args.parts:
        results["A"] = run_part_a(world, args, log)
    if "B" in args.parts:
        results["B"] = run_part_b(world, args, log)
    return results, time.perf_counter() - started


if __name__ == "__main__":
    main(sys.argv[1:])
