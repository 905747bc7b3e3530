"""`musicpeft evaluate`: score a base model and its adapters on the same prompts, seeds and reference.

Why one command: an adapter's effect is only visible next to the base model it adapts, generated
from the same prompts with the same seeds and scored against the same reference set. Here the base
is loaded once and generates first; every adapter is then loaded once onto that same base under its
own name and activated in turn (:func:`~musicpeft.evaluation.generation.switch_adapters`: no copy of the base, and
the base is checked to be unchanged whenever adapters are unloaded); prompts are generated in batches
of ``batch_size``, prompt ``i`` with its own generator seeded ``seed + i`` by every model (its clip does
not depend on the batch);
``clap_kld`` scores every model against one :class:`~musicpeft.metrics.ReferenceSet`; and, for
MusicGen, token cross-entropy on held-out clips says whether the adapter models real music better.
The report (:func:`~musicpeft.metrics.report.write_report` plus a setup and a cross-entropy section)
and the generated wavs land in ``output_dir``.

Generation (per model) and scoring show progress bars on stderr (:mod:`musicpeft.training.progress`: off when
stderr is not a terminal or with ``TQDM_DISABLE=1``); standard output keeps only the summary lines.

How clips are generated reproducibly for each family: :mod:`musicpeft.evaluation.generation`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..adapters.files import AdapterFileError
from ..api import resolve_source
from ..data.sources import check_source, load_clips
from ..families import LOSS_CODEC_TOKENS, get_family, loadable_base_family
from ..metrics import ReferenceSet, compute_clap_kld, load_clap_backend
from ..tiny import tiny_clap, tiny_clap_processor, trained_clap_path
from ..training.musicgen_trainer import token_cross_entropy
from ..training.progress import progress_bar
from .generation import (
    DTYPES,
    TINY_AUDIOLDM2,
    TINY_MUSICGEN,
    LoadedBase,
    default_guidance,
    generate_clips,
    load_base,
    save_clips,
    switch_adapters,
)
from .prompt_sets import PromptSet, load_prompt_set
from .report import summary_rows, write_evaluation_report

TINY_CLAP = "tiny"
# The shipped tiny CLAP trained on the micro-world (musicpeft.tiny.trained), a judge that knows its instruments.
TINY_CLAP_TRAINED = "tiny-trained"
BASELINE = "base"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class EvaluateArguments:
    """Arguments of ``musicpeft evaluate`` (also its Python API, :func:`run_evaluation`)."""

    base: str = field(
        metadata={
            "help": "Base model: local folder or Hub id of a MusicGen model or an AudioLDM2 pipeline, or "
            f"'{TINY_MUSICGEN}' / '{TINY_AUDIOLDM2}' for the embedded tiny models (random weights)."
        }
    )
    adapters: list[str] = field(
        metadata={
            "help": "Adapter folders or Hub ids, each optionally 'name=path' (default name: the folder's "
            "last part).",
            "nargs": "+",
        }
    )
    prompts: str = field(
        metadata={
            "help": 'Prompts file: JSON {"category": ["prompt", ...]} or JSON lines '
            '{"category": ..., "prompt": ...}.'
        }
    )
    reference: str = field(
        metadata={
            "help": "Reference audio for the KLD and alignment: a folder of audio files (metadata.jsonl "
            "optional), or 'rendered:<program>:<n>' for n rendered music21 clips (GM program 0-127)."
        }
    )
    heldout: str | None = field(
        default=None,
        metadata={
            "help": "Held-out clips for token cross-entropy / perplexity (MusicGen only): a folder with "
            "metadata.jsonl, or 'rendered:<program>:<n>'.",
            "type": str,
        },
    )
    clap_model: str = field(
        default="laion/larger_clap_music",
        metadata={"help": f"CLAP model: local folder, Hub id, LAION checkpoint file, '{TINY_CLAP}' (random) "
                          f"or '{TINY_CLAP_TRAINED}' (the shipped trained tiny CLAP)."},
    )
    seconds: float = field(default=10.0, metadata={"help": "Length of each generated (and rendered) clip."})
    seed: int = field(default=0, metadata={"help": "Prompt i is generated with seed + i by every model."})
    guidance_scale: float | None = field(
        default=None,
        metadata={"help": "Classifier-free guidance; None = the family's usual (MusicGen 3.0, AudioLDM2 3.5).",
                  "type": float},
    )
    num_inference_steps: int = field(default=200, metadata={"help": "AudioLDM2 denoising steps."})
    output_dir: str = field(default="evaluation", metadata={"help": "Folder for the report, plots and wavs."})
    batch_size: int = field(default=8, metadata={"help": "Prompts generated at once, and clips scored at once."})
    max_prompts_per_category: int | None = field(
        default=None, metadata={"help": "Use only the first N prompts of each category.", "type": int}
    )
    silence_threshold: float = field(
        default=1e-4, metadata={"help": "Clips whose peak is at or below this are excluded from scoring."}
    )
    device: str | None = field(
        default=None, metadata={"help": "Torch device (default: cuda when available, else cpu).", "type": str}
    )
    dtype: str = field(default="float32", metadata={"help": f"Base model dtype: {', '.join(DTYPES)}."})
    score_reference: bool = field(
        default=False,
        metadata={"help": "Also score the reference clips themselves, each against its caption (metadata.jsonl or "
                  "rendered) or else the prompts in turn: what real audio scores, for scale (results.json "
                  "'reference_scores').", "action": "store_true"},
    )

    def __post_init__(self) -> None:
        if isinstance(self.adapters, str):
            self.adapters = [self.adapters]
        if not self.adapters:
            raise ValueError("adapters: give at least one adapter folder or Hub id to compare with the base")
        positive = {"seconds": self.seconds, "num_inference_steps": self.num_inference_steps,
                    "batch_size": self.batch_size}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.max_prompts_per_category is not None and self.max_prompts_per_category < 1:
            raise ValueError(
                f"max_prompts_per_category must be >= 1 (or None for all), got {self.max_prompts_per_category}"
            )
        if self.guidance_scale is not None and self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if self.silence_threshold < 0:
            raise ValueError(f"silence_threshold must be >= 0, got {self.silence_threshold}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")


# ---------------------------------------------------------------- inputs


def parse_adapters(specs: list[str]) -> dict[str, str]:
    """``{name: source}`` from ``path`` / ``name=path`` specs; names are unique folder-safe words, never 'base'."""
    adapters: dict[str, str] = {}
    for i, spec in enumerate(specs):
        name, sep, source = spec.partition("=")
        if not sep or os.path.exists(spec) or not _NAME.match(name):
            name, source = os.path.basename(os.path.normpath(spec)), spec
        where = f"adapters[{i}] {spec!r}"
        if not source:
            raise ValueError(f"{where}: no adapter folder or Hub id after '='")
        if not _NAME.match(name):
            raise ValueError(f"{where}: {name!r} is not a usable name (letters, digits, '.', '_', '-'); use name=path")
        if name == BASELINE:
            raise ValueError(f"{where}: the name {BASELINE!r} is the base model's; use name=path with another name")
        if name in adapters:
            raise ValueError(f"{where}: a second adapter named {name!r}; give each one a name with name=path")
        adapters[name] = source
    return adapters


# ---------------------------------------------------------------- the run


def _clap_backend(args: EvaluateArguments, device: str):
    if args.clap_model == TINY_CLAP:
        backend = load_clap_backend(tiny_clap(), tiny_clap_processor(), device=device, batch_size=args.batch_size,
                                    seed=args.seed)
        backend.name = "tiny CLAP (random weights)"
        return backend
    if args.clap_model == TINY_CLAP_TRAINED:
        return load_clap_backend(trained_clap_path(), device=device, batch_size=args.batch_size, seed=args.seed)
    try:
        return load_clap_backend(args.clap_model, device=device, batch_size=args.batch_size, seed=args.seed)
    except OSError as error:  # the default is a Hub id: say what works offline
        raise OSError(f"clap_model: cannot load {args.clap_model!r} ({error}); without the Hub, pass --clap-model a "
                      f"local folder, a LAION-CLAP checkpoint file or {TINY_CLAP_TRAINED!r} (the shipped tiny CLAP)"
                      ) from error


def _check_inputs(args: EvaluateArguments) -> tuple[PromptSet, dict[str, str]]:
    """Everything that can be checked before loading a model: prompts, adapter names, audio sources."""
    prompt_set = load_prompt_set(args.prompts).limit(args.max_prompts_per_category)
    adapters = parse_adapters(list(args.adapters))
    check_source(args.reference, "reference")
    if args.heldout is not None:
        check_source(args.heldout, "heldout")
    family = get_family(loadable_base_family(args.base))
    if args.heldout is not None and getattr(family.training, "loss", None) != LOSS_CODEC_TOKENS:
        raise ValueError(f"heldout: token cross-entropy needs a MusicGen base; {args.base} is a {family.name} base")
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise NotADirectoryError(f"output_dir: {args.output_dir} exists and is not a folder")
    return prompt_set, adapters


def _resolve_adapters(sources: dict[str, str]) -> dict[str, str]:
    """Local folders for every adapter (Hub ids are fetched now, before any generation)."""
    folders = {}
    for name, source in sources.items():
        try:
            folders[name] = resolve_source(source)
        except AdapterFileError as err:
            raise AdapterFileError(f"adapters: {name}={source}: {err}") from None
    return folders


ExtraScores = Callable[[list[np.ndarray], list[str]], Mapping[str, Any]]


@dataclass
class Scoring:
    """What every model is scored against, built once per run (:func:`prepare_scoring`)."""

    reference: Any  # a musicpeft.metrics.ReferenceSet
    reference_clips: list[np.ndarray]
    reference_texts: list[str] | None  # the reference clips' captions, when the source has them
    heldout: Any  # a datasets.Dataset with text and audio, or None
    clap: Any  # a musicpeft.metrics.clap backend


def prepare_scoring(args: EvaluateArguments, sampling_rate: int, device: str) -> Scoring:
    """Load the reference (and held-out) clips at ``sampling_rate`` and the CLAP model of ``args``."""
    clips, data = load_clips(args.reference, sampling_rate, args.seconds, args.seed, "reference")
    reference = ReferenceSet(clips, sampling_rate=sampling_rate, silence_threshold=args.silence_threshold)
    texts = list(data["text"]) if data is not None and "text" in data.column_names else None
    heldout = None
    if args.heldout is not None:
        _, heldout = load_clips(args.heldout, sampling_rate, args.seconds, args.seed + 1, "heldout", need_text=True)
    return Scoring(reference, clips, texts, heldout, _clap_backend(args, device))


def score_clips(clips: Sequence[np.ndarray], prompts: Sequence[str], scoring: Scoring, sampling_rate: int, *,
                batch_size: int = 8, seed: int = 0, silence_threshold: float = 1e-4,
                extra_scores: ExtraScores | None = None) -> dict[str, Any]:
    """``clap_kld`` of ``clips`` (one per prompt) against ``scoring``'s reference and CLAP model, plus
    ``extra_scores(clips, prompts)`` under the key ``extra_scores``: every model of a run is scored by this."""
    clips = [np.asarray(c, dtype=np.float32) for c in clips]
    result = compute_clap_kld(clips, list(prompts), scoring.reference, sampling_rate=sampling_rate,
                              clap_model=scoring.clap, batch_size=batch_size, seed=seed,
                              silence_threshold=silence_threshold)
    if extra_scores is not None:
        result["extra_scores"] = dict(extra_scores(clips, list(prompts)))
    return result


def _generate(name: str, model: Any, base: LoadedBase, prompts: list[str], seeds: list[int], guidance: float,
              args: EvaluateArguments) -> list[np.ndarray]:
    """:func:`~musicpeft.evaluation.generation.generate_clips` a batch at a time under a progress bar (a prompt's clip
    does not depend on its batch, so this is the same as one call)."""
    clips: list[np.ndarray] = []
    with progress_bar(total=len(prompts), desc=f"Generating ({name})", unit="clip") as bar:
        for start in range(0, len(prompts), args.batch_size):
            stop = min(start + args.batch_size, len(prompts))
            clips += generate_clips(base, model, prompts[start:stop], seeds[start:stop], seconds=args.seconds,
                                    guidance_scale=guidance, num_inference_steps=args.num_inference_steps,
                                    batch_size=args.batch_size)
            bar.update(stop - start)
    return clips


def _evaluate_model(name: str, model: Any, base: LoadedBase, prompt_set: PromptSet, seeds: list[int],
                    guidance: float, scoring: Scoring, args: EvaluateArguments, timings: dict,
                    extra_scores: ExtraScores | None = None) -> dict:
    """Generate (and save) the clips of one model, score them, and its cross-entropy if asked."""
    prompts, categories = list(prompt_set.prompts), list(prompt_set.categories)
    tick = time.time()
    clips = _generate(name, model, base, prompts, seeds, guidance, args)
    timings[f"generate_{name}"] = time.time() - tick
    wavs = save_clips(clips, os.path.join(args.output_dir, "audio", name), categories, base.sampling_rate)
    cross_entropy = None
    stages = (["token cross-entropy"] if scoring.heldout is not None else []) + ["CLAP and KLD"]
    with progress_bar(total=len(stages), desc=f"Scoring ({name})", unit="stage") as bar:
        if scoring.heldout is not None:
            bar.set_postfix_str(stages[0])
            tick = time.time()
            cross_entropy = token_cross_entropy(model, base.processor, scoring.heldout, batch_size=args.batch_size)
            timings[f"cross_entropy_{name}"] = time.time() - tick
            bar.update(1)
        bar.set_postfix_str(stages[-1])
        tick = time.time()
        result = score_clips(clips, prompts, scoring, base.sampling_rate, batch_size=args.batch_size, seed=args.seed,
                             silence_threshold=args.silence_threshold, extra_scores=extra_scores)
        timings[f"score_{name}"] = time.time() - tick
        bar.update(1)
    if result["excluded"]:
        first = result["excluded"][0]
        print(f"  warning: {len(result['excluded'])} of {len(prompts)} {name} clips are not scored, e.g. item "
              f"{first['index']}: {first['reason']} (see --silence-threshold)")
    print(f"  {name}: {len(clips)} clips generated in {timings[f'generate_{name}']:.1f} s, "
          f"scored in {timings[f'score_{name}']:.1f} s")
    return {"clips": clips, "wavs": wavs, "result": result, "cross_entropy": cross_entropy}


def _score_reference(scoring: Scoring, prompts: list[str], args: EvaluateArguments, sampling_rate: int,
                     extra_scores: ExtraScores | None) -> dict[str, Any]:
    """The reference clips scored as a model's clips would be: each against its caption (else the prompts in
    turn), against the reference itself (its KLD is 0): the scale the models' numbers sit on."""
    clips = scoring.reference_clips
    texts = scoring.reference_texts or [prompts[i % len(prompts)] for i in range(len(clips))]
    result = score_clips(clips, texts, scoring, sampling_rate, batch_size=args.batch_size, seed=args.seed,
                         silence_threshold=args.silence_threshold, extra_scores=extra_scores)
    result["texts"] = "captions" if scoring.reference_texts else "prompts"
    return result


def run_evaluation(args: EvaluateArguments, *, extra_scores: ExtraScores | None = None) -> dict:
    """Generate, score and report; returns ``{"files", "summary", "results_json", "seconds"}``.

    ``extra_scores(clips, prompts) -> {name: value}`` (Python only) adds scores of one's own to every
    model's result under ``extra_scores`` (and to the reference's with ``score_reference``), e.g. an
    instrument classifier's verdicts; they land in ``results.json`` and in a table of ``report.md``. With
    ``score_reference`` the returned dict also holds ``reference_scores``.
    """
    started = time.time()
    prompt_set, adapter_sources = _check_inputs(args)
    folders = _resolve_adapters(adapter_sources)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    timings: dict[str, float] = {}
    tick = time.time()
    base = load_base(args.base, device, args.dtype)
    timings["load_base"] = time.time() - tick
    seeds = [args.seed + i for i in range(len(prompt_set))]
    guidance = default_guidance(base, args.guidance_scale)
    print(f"musicpeft evaluate: {base.family} base {args.base!r}, adapters {list(folders)}, {len(prompt_set)} "
          f"prompts in {len(prompt_set.category_names())} categories, {args.seconds} s clips")
    tick = time.time()
    scoring = prepare_scoring(args, base.sampling_rate, device)
    timings["load_reference_heldout_clap"] = time.time() - tick

    # The base first, before any adapter touches it; then every adapter on that same base (no copies).
    runs = {BASELINE: _evaluate_model(BASELINE, base.model, base, prompt_set, seeds, guidance, scoring, args,
                                      timings, extra_scores)}
    for name, model in switch_adapters(base, folders):
        runs[name] = _evaluate_model(name, model, base, prompt_set, seeds, guidance, scoring, args, timings,
                                     extra_scores)
    runs = {name: runs[name] for name in [BASELINE, *folders]}
    reference_scores = None
    if args.score_reference:
        tick = time.time()
        reference_scores = _score_reference(scoring, list(prompt_set.prompts), args, base.sampling_rate,
                                            extra_scores)
        timings["score_reference"] = time.time() - tick

    setup = {
        "arguments": asdict(args),
        "family": base.family,
        "base": args.base,
        "adapters": adapter_sources,
        "prompts_file": prompt_set.source,
        "seeds": seeds,
        "guidance_scale": guidance,
        "sampling_rate": base.sampling_rate,
        "device": device,
        "clap_model": scoring.clap.name,
        "reference": {"source": args.reference, "clips": len(scoring.reference_clips)},
        "heldout": None if scoring.heldout is None else {"source": args.heldout, "clips": len(scoring.heldout)},
        "clips": {name: [os.path.relpath(p, args.output_dir) for p in run["wavs"]] for name, run in runs.items()},
    }
    results = {name: run["result"] for name, run in runs.items()}
    cross_entropy = {name: run["cross_entropy"] for name, run in runs.items() if run["cross_entropy"] is not None}
    files = write_evaluation_report(
        results, args.output_dir, prompts=list(prompt_set.prompts), categories=list(prompt_set.categories),
        audio={name: run["clips"] for name, run in runs.items()}, sampling_rate=base.sampling_rate,
        reference_audio=scoring.reference_clips, cross_entropy=cross_entropy, setup=setup, timings=timings,
        reference_scores=reference_scores,
    )
    rows = summary_rows(results, cross_entropy)
    print(format_summary(rows))
    out = {"files": {k: str(v) for k, v in files.items()}, "summary": rows, "results_json": str(files["json"]),
           "seconds": round(time.time() - started, 1)}
    if reference_scores is not None:
        out["reference_scores"] = reference_scores
    return out


def format_summary(rows: dict[str, dict]) -> str:
    """A plain-text table of the headline numbers per model."""
    columns = ("clap_score", "kld", "fd_clap", "cross_entropy", "perplexity")
    lines = [f"{'model':<20}" + "".join(f"{c:>15}" for c in columns) + f"{'scored':>10}"]
    for name, row in rows.items():
        cells = "".join(f"{'—' if row.get(c) is None else format(row[c], '.4f'):>15}" for c in columns)
        lines.append(f"{name:<20}{cells}{row['scored']:>10}")
    return "\n".join(lines)
