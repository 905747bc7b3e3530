"""`musicpeft train`: train one adapter on a folder of audio (or rendered clips) from the command line.

No loop of its own: MusicGen trains on the transformers Trainer (:func:`make_musicgen_trainer`, early stopping
on an eval split, token cross-entropy before/after), AudioLDM2 on :func:`train_audioldm2` (best eval state kept).
Bases are loaded by :func:`musicpeft.evaluation.generation.load_base` and ``rendered:`` specs parsed by
:func:`musicpeft.evaluation.parse_rendered`, as ``musicpeft evaluate`` does.

Defaults left as None are the papers' (batch size, learning rate, epochs, clip length): MusicGen from
:data:`~musicpeft.training.musicgen_trainer.PAPER_DEFAULTS`, AudioLDM2 from
:class:`~musicpeft.training.diffusion.DiffusionTrainingArguments`.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import SchedulerType

from ..api import add_adapter, save_adapter
from ..data.dataset import load_audio_folder, make_rendered_dataset
from ..data.metadata import METADATA_FILES, find_metadata
from ..data.sources import parse_rendered
from ..errors import ResumeError
from ..families import (
    FAMILIES,
    LOSS_CODEC_TOKENS,
    MUSICGEN,
    TINY_AUDIOLDM2,
    TINY_MUSICGEN,
    LoadedBase,
    get_family,
    load_base,
    loadable_base_family,
)
from ..io import atomic_write_json
from ..tuners.concept_identifier.config import CONCEPT_NAME, placeholder
from ..tuners.soft_prompt import SoftMusicPromptConfig
from .collator import precompute_codes
from .diffusion import DiffusionTrainingArguments, evaluate_audioldm2, resolve_trainable, train_audioldm2
from .dreamstyler import RECIPES, ConceptData, DreamStylerArguments, train_dreamstyler
from .encoding_cache import default_cache_dir
from .musicgen_trainer import (
    PAPER_DEFAULTS,
    check_resumable,
    last_checkpoint,
    make_musicgen_trainer,
    token_cross_entropy,
)
from .output import check_output_dir, make_staging, swap_into_place
from .presets import list_presets, lora_config, prepare_full_finetune

METHODS = ("soft_prompt", "lora:<preset>", "full", "concepts", "pivotal", "dreamstyler[:<recipe>]")
# concept methods -> train_dreamstyler recipes (musicpeft/training/dreamstyler.py)
CONCEPT_METHODS = {"concepts": "tokens_only", "pivotal": "dreamstyler", "dreamstyler": "dreamstyler"}
SUMMARY_FILE = "train_summary.json"
MUSICGEN_CLIP_SECONDS = MUSICGEN.training.clip_seconds  # the family's training chunks (the papers' 10 s clips)


@dataclass
class TrainArguments:
    """Arguments of ``musicpeft train`` (also usable from Python: ``run_training(TrainArguments(...))``)."""

    base: str = field(
        metadata={"help": f"MusicGen model or AudioLDM2 pipeline (local folder or Hub id), or '{TINY_MUSICGEN}' / "
                  f"'{TINY_AUDIOLDM2}' for the embedded tiny models (random weights)."}
    )
    data: str = field(
        metadata={"help": "Training audio: a folder with metadata.jsonl (one JSON object per file with 'path' and "
                  "a caption), or 'rendered:<program>:<n>' for n rendered music21 clips (GM program 0-127 or empty)."}
    )
    output_dir: str = field(default="musicpeft-adapter", metadata={"help": "Where the adapter and summary go."})
    method: str = field(
        default="soft_prompt",
        metadata={"help": "soft_prompt, lora:<preset> (MusicGen: self_attn, attn, attn_mlp; AudioLDM2: self_attn, "
                  "cross_attn, attn, attn_ff), full (the whole decoder / U-Net), or with --concept: concepts "
                  "(identifier tokens), pivotal (DreamStyler) or dreamstyler:<recipe> (tokens_only, cross_attn_kv, "
                  "dreamstyler, full)."},
    )
    num_virtual_tokens: int = field(default=30, metadata={"help": "Soft prompt length (paper: 30)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (alpha = 2 * r)."})
    clip_seconds: float | None = field(
        default=None,
        metadata={"help": "Length of training clips (folders are cut into chunks of it); None = 10 s for MusicGen, "
                  "10.24 s for AudioLDM2.", "type": float},
    )
    eval_fraction: float = field(
        default=0.1,
        metadata={"help": "Share of the clips held out for evaluation (at least one clip); 0 = no eval split, "
                  "no early stopping."},
    )
    epochs: int | None = field(
        default=None, metadata={"help": "Epochs; None = the paper's (MusicGen 100, AudioLDM2 30).", "type": int}
    )
    max_steps: int | None = field(
        default=None, metadata={"help": "Stop after this many optimizer steps (overrides epochs).", "type": int}
    )
    batch_size: int | None = field(
        default=None, metadata={"help": "Batch size; None = the paper's (MusicGen 32, AudioLDM2 16).", "type": int}
    )
    learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate; None = the paper's (MusicGen 1e-5, AudioLDM2 5e-5).", "type": float},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the split, rendering, initialisation and training."})
    lr_scheduler_type: str = field(
        default="linear",
        metadata={"help": "Learning-rate schedule of the soft_prompt / lora / full methods: linear (decay to 0), "
                  "constant, cosine, ... (transformers' names); the concept recipes keep a constant rate."},
    )
    early_stopping_patience: int | None = field(
        default=3,
        metadata={"help": "MusicGen: stop after this many evaluations without a lower eval loss; "
                  "AudioLDM2 always runs its epochs and keeps the state with the lowest eval loss.", "type": int},
    )
    overwrite: bool = field(
        default=False,
        metadata={"help": "Replace a non-empty --output-dir (the new folder is swapped in only once complete); "
                  "without it such a folder is refused and left as it is.", "action": "store_true"},
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    mixed_precision: str = field(
        default="no", metadata={"help": "no, bf16 (CPU or GPU) or fp16 (GPU only): autocast with fp32 weights."}
    )
    checkpoint_dir: str | None = field(
        default=None,
        metadata={"help": "MusicGen: write resumable checkpoints (model, optimizer, schedule, RNG) here each epoch "
                  "(or evaluation) and keep them; None = a temporary folder, deleted at the end.", "type": str},
    )
    resume: str | None = field(
        default=None,
        metadata={"help": "MusicGen: resume from a checkpoint folder written with --checkpoint-dir "
                  "('checkpoint-<step>'), or 'last' for the newest in --checkpoint-dir. Model-only checkpoints "
                  "are refused.", "type": str},
    )
    concept: str | None = field(
        default=None,
        metadata={"help": "Methods concepts / pivotal / dreamstyler: the concept's name; prompts then use <NAME> "
                  "(captions without it are replaced by '<NAME>').", "type": str},
    )
    encode_cache: str | None = field(
        default=None,
        metadata={"help": "Folder caching EnCodec codes (MusicGen) / VAE latents (AudioLDM2) per clip, keyed by "
                  "audio content and codec weights; None = $MUSICPEFT_CACHE/encoded or "
                  "~/.cache/musicpeft/encoded; 'none' encodes on every step.", "type": str},
    )

    def __post_init__(self) -> None:
        kind, _ = parse_method(self.method)
        if kind == "dreamstyler":
            if not self.concept:
                raise ValueError(f"concept: --method {self.method} needs --concept NAME (the word prompts write as "
                                 "<NAME>)")
            if not CONCEPT_NAME.fullmatch(self.concept):
                raise ValueError(f"concept: {self.concept!r} cannot be written as a placeholder <NAME>; use letters, "
                                 "digits, '_' or '-'")
            if self.gradient_accumulation_steps != 1 or self.resume is not None:
                raise ValueError(f"method: {self.method} supports neither --gradient-accumulation-steps nor --resume")
        elif self.concept is not None:
            raise ValueError(f"concept: only the methods concepts, pivotal and dreamstyler use --concept, "
                             f"not {self.method}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision: expected no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.mixed_precision == "fp16" and not torch.cuda.is_available():
            raise ValueError("mixed_precision: fp16 needs a GPU; use bf16 on CPU")
        if self.resume == "last" and self.checkpoint_dir is None:
            raise ValueError("resume: 'last' needs --checkpoint-dir (where the earlier run wrote its checkpoints)")
        for name in ("num_virtual_tokens", "lora_r", "epochs", "max_steps", "batch_size", "early_stopping_patience",
                     "gradient_accumulation_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name in ("clip_seconds", "learning_rate"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        schedules = [s.value for s in SchedulerType]
        if self.lr_scheduler_type not in schedules:
            raise ValueError(f"lr_scheduler_type: expected one of {', '.join(schedules)}, "
                             f"got {self.lr_scheduler_type!r}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")


def parse_method(method: str) -> tuple[str, str | None]:
    """``"soft_prompt"`` / ``"lora:<preset>"`` / ``"full"`` -> ``(kind, preset or None)``; the concept methods
    give ``("dreamstyler", recipe)``: ``concepts`` = ``tokens_only``, ``pivotal`` = ``dreamstyler``."""
    kind, sep, preset = method.partition(":")
    if kind == "lora" and sep and preset:
        return "lora", preset
    if method in ("soft_prompt", "full"):
        return method, None
    if method in CONCEPT_METHODS:
        return "dreamstyler", CONCEPT_METHODS[method]
    if kind == "dreamstyler" and sep and preset in RECIPES:
        return "dreamstyler", preset
    presets = "; ".join(f"{family.name}: {', '.join(list_presets(family))}" for family in FAMILIES)
    raise ValueError(f"method: unknown {method!r}; known methods: {', '.join(METHODS)} (presets {presets}; "
                     f"recipes {', '.join(sorted(RECIPES))})")


def check_preset(family: str, preset: str) -> None:
    """A clear error naming the family's presets when ``preset`` is not one of them."""
    known = list_presets(family)
    if preset not in known:
        raise ValueError(f"method: unknown LoRA preset {preset!r} for {family}; known presets: "
                         f"{', '.join(f'lora:{name}' for name in known)}")


def _check_inputs(args: TrainArguments) -> str:
    """Everything checkable before loading a model; returns the base's family."""
    if parse_rendered(args.data, "data") is None:
        if not os.path.isdir(args.data):
            raise FileNotFoundError(f"data: {args.data!r} is neither a folder nor 'rendered:<program>:<n>'")
        if find_metadata(args.data) is None:
            raise FileNotFoundError(f"data: {args.data} has no metadata file ({', '.join(METADATA_FILES)}: one "
                                    "record per audio file with 'file_name' or 'path' and a caption such as 'text')")
    check_output_dir(args.output_dir, args.overwrite)
    output = os.path.abspath(args.output_dir) + os.sep
    for name in ("data", "resume"):
        value = getattr(args, name)
        if value and os.path.exists(value) and (os.path.abspath(value) + os.sep).startswith(output):
            raise ValueError(f"{name}: {value} lies inside --output-dir {args.output_dir}, which the run replaces; "
                             "choose another --output-dir")
    if args.checkpoint_dir is not None:
        inside = os.path.abspath(args.checkpoint_dir) + os.sep
        if inside.startswith(os.path.abspath(args.output_dir) + os.sep):
            raise ValueError(f"checkpoint_dir: {args.checkpoint_dir} lies inside --output-dir {args.output_dir}, "
                             "which a finished run replaces; put the checkpoints beside it")
    family = loadable_base_family(args.base)
    training = get_family(family).training
    if training is None:
        raise ValueError(f"base: {args.base} is a {family} model; musicpeft has no training recipe for the {family} "
                         "family (see its module in musicpeft/families)")
    kind, preset = parse_method(args.method)
    if kind == "lora":
        check_preset(family, preset)
    if args.resume is not None:
        if not training.resumable:
            raise ResumeError("resume: only MusicGen runs (the transformers Trainer) can resume; AudioLDM2 training "
                              "keeps no optimizer state")
        resume_checkpoint(args)
    return family


def resume_checkpoint(args: TrainArguments) -> str | None:
    """The checkpoint folder ``--resume`` names (``last``: the newest ``checkpoint-<step>`` in
    ``--checkpoint-dir``), checked to hold the optimizer and schedule; None without ``--resume``."""
    if args.resume is None:
        return None
    path = last_checkpoint(args.checkpoint_dir) if args.resume == "last" else args.resume
    check_resumable(path)
    return path


def load_training_data(args: TrainArguments, sampling_rate: int, clip_seconds: float):
    """``(train, eval or None)``: the clips of ``args.data`` at the model's rate, split by ``eval_fraction``.

    The concept methods train on every clip (no eval split: their prompts name a concept the base lacks).
    """
    rendered = parse_rendered(args.data, "data")
    if rendered is not None:
        program, n = rendered
        data = make_rendered_dataset(n, clip_seconds, sampling_rate, program=program, seed=args.seed)
    else:
        data = load_audio_folder(args.data, sample_rate=sampling_rate, chunk_seconds=clip_seconds, remainder="keep")
    concept = parse_method(args.method)[0] == "dreamstyler"
    n_eval = max(1, round(len(data) * args.eval_fraction)) if args.eval_fraction > 0 and not concept else 0
    if n_eval == 0:
        return data.shuffle(seed=args.seed), None
    if n_eval >= len(data):
        raise ValueError(f"data: {len(data)} clip(s) cannot be split into training and eval sets "
                         f"(eval_fraction {args.eval_fraction}); give more clips or --eval-fraction 0")
    split = data.train_test_split(test_size=n_eval, seed=args.seed)
    return split["train"], split["test"]


def _adapter_config(kind: str, preset: str | None, model_or_pipe: Any, args: TrainArguments):

    if kind == "soft_prompt":
        return SoftMusicPromptConfig(num_virtual_tokens=args.num_virtual_tokens)
    return lora_config(model_or_pipe, preset, r=args.lora_r, alpha=2 * args.lora_r)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def encode_cache_dir(args: TrainArguments) -> str | None:
    """Where encoded clips are cached: ``--encode-cache``, else ``$MUSICPEFT_CACHE/encoded`` or
    ``~/.cache/musicpeft/encoded``; None when caching is off (``none``)."""
    if args.encode_cache is not None:
        return None if args.encode_cache.lower() == "none" else args.encode_cache
    return default_cache_dir()


def _train_musicgen(base: LoadedBase, train, eval_data, args: TrainArguments, out: str, scratch: str) -> dict:


    kind, preset = parse_method(args.method)
    model, processor = base.model, base.processor
    batch_size = args.batch_size or PAPER_DEFAULTS["per_device_train_batch_size"]
    cache = encode_cache_dir(args)
    train = precompute_codes(train, model, batch_size=batch_size, cache_dir=cache)
    if eval_data is not None:
        eval_data = precompute_codes(eval_data, model, batch_size=batch_size, cache_dir=cache)

    def cross_entropy(m: Any) -> float | None:
        if eval_data is None:
            return None
        return _finite(token_cross_entropy(m, processor, eval_data, batch_size=batch_size)["cross_entropy"])

    ce_before = cross_entropy(model)
    torch.manual_seed(args.seed)
    if kind == "full":
        trained = model
        trainable = sum(p.numel() for p in prepare_full_finetune(model))
    else:
        trained = add_adapter(model, _adapter_config(kind, preset, model, args))
        trainable = trained.get_nb_trainable_parameters()[0]
    overrides: dict[str, Any] = {
        "output_dir": args.checkpoint_dir or scratch,
        "num_train_epochs": args.epochs or PAPER_DEFAULTS["num_train_epochs"],
        "per_device_train_batch_size": batch_size,
        "per_device_eval_batch_size": batch_size,
        "learning_rate": args.learning_rate or PAPER_DEFAULTS["learning_rate"],
        "lr_scheduler_type": args.lr_scheduler_type,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "bf16": args.mixed_precision == "bf16",
        "fp16": args.mixed_precision == "fp16",
        "seed": args.seed,
        "use_cpu": not torch.cuda.is_available(),
    }
    if args.checkpoint_dir is not None:  # resumable: optimizer, schedule and RNG go with every checkpoint
        overrides.update(save_only_model=False, save_strategy="epoch")
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    trainer = make_musicgen_trainer(trained, processor, train, eval_dataset=eval_data,
                                    early_stopping_patience=args.early_stopping_patience, **overrides)
    output = trainer.train(resume_from_checkpoint=resume_checkpoint(args))
    ce_after = cross_entropy(trained)
    if trainer.is_world_process_zero():
        if kind == "full":
            trained.decoder.save_pretrained(os.path.join(out, "decoder"), safe_serialization=True)
        else:
            save_adapter(trained, out)
    return {
        "trainable_parameters": int(trainable),
        "steps": int(trainer.state.global_step),
        "train_loss": _finite(output.training_loss),
        "best_eval_loss": _finite(trainer.state.best_metric),
        "train_loss_history": [{"step": e["step"], "loss": e["loss"]} for e in trainer.state.log_history
                               if "loss" in e],
        "eval_cross_entropy_before": ce_before,
        "eval_cross_entropy_after": ce_after,
        "adapter_dir": os.path.join(args.output_dir, "decoder") if kind == "full" else args.output_dir,
        "batch_size": batch_size,
        "learning_rate": overrides["learning_rate"],
    }


def _train_audioldm2(base: LoadedBase, train, eval_data, args: TrainArguments, clip_seconds: float, out: str) -> dict:


    kind, preset = parse_method(args.method)
    pipe = base.model
    defaults = DiffusionTrainingArguments()
    batch_size = args.batch_size or defaults.per_device_train_batch_size
    train = train.add_column("sampling_rate", [base.sampling_rate] * len(train))
    if eval_data is not None:
        eval_data = eval_data.add_column("sampling_rate", [base.sampling_rate] * len(eval_data))
    dargs = DiffusionTrainingArguments(
        num_train_epochs=args.epochs or defaults.num_train_epochs, max_steps=args.max_steps,
        per_device_train_batch_size=batch_size, per_device_eval_batch_size=batch_size,
        learning_rate=args.learning_rate or defaults.learning_rate, audio_length_s=clip_seconds, seed=args.seed,
        gradient_accumulation_steps=args.gradient_accumulation_steps, mixed_precision=args.mixed_precision,
        latent_cache_dir=encode_cache_dir(args), lr_scheduler_type=args.lr_scheduler_type,
    )
    loss_before = evaluate_audioldm2(pipe, eval_data, dargs) if eval_data is not None else None
    torch.manual_seed(args.seed)
    params = None
    if kind == "full":
        params = prepare_full_finetune(pipe)
    else:
        add_adapter(pipe, _adapter_config(kind, preset, pipe, args))
    trainable = sum(p.numel() for p in resolve_trainable(pipe, params).values())
    history = train_audioldm2(pipe, train, eval_dataset=eval_data, args=dargs, trainable_parameters=params)
    loss_after = evaluate_audioldm2(pipe, eval_data, dargs) if eval_data is not None else None
    if _is_main_process():
        if kind == "full":
            pipe.unet.save_pretrained(os.path.join(out, "unet"), safe_serialization=True)
        else:
            save_adapter(pipe, out)
    last = history["train_loss"][-1]["loss"] if history["train_loss"] else None
    return {
        "trainable_parameters": int(trainable),
        "steps": int(history["global_step"]),
        "train_loss": _finite(last),
        "best_eval_loss": _finite(history["best_eval_loss"]),
        "train_loss_history": [{"step": e["step"], "loss": e["loss"]} for e in history["train_loss"]],
        "eval_loss_before": _finite(loss_before),
        "eval_loss_after": _finite(loss_after),
        "adapter_dir": os.path.join(args.output_dir, "unet") if kind == "full" else args.output_dir,
        "batch_size": batch_size,
        "learning_rate": dargs.learning_rate,
    }


def _train_concept(base: LoadedBase, train, args: TrainArguments, clip_seconds: float, out: str) -> dict:
    """``concepts`` / ``pivotal`` / ``dreamstyler[:<recipe>]``: :func:`train_dreamstyler` on every clip."""
    _, recipe = parse_method(args.method)
    word = placeholder(args.concept)
    defaults = DreamStylerArguments()
    dargs = DreamStylerArguments(
        recipe=recipe, mask_epochs=args.epochs or defaults.mask_epochs,
        tuning_steps=args.max_steps or defaults.tuning_steps,
        train_batch_size=args.batch_size or defaults.train_batch_size,
        learning_rate=args.learning_rate or defaults.learning_rate, mixed_precision=args.mixed_precision,
        audio_length_s=clip_seconds, seed=args.seed,
    )
    texts = [t if word in t else word for t in train["text"]]
    concept = ConceptData(args.concept, [np.asarray(a, dtype=np.float32) for a in train["audio"]],
                          base.sampling_rate, prompts=texts)
    torch.manual_seed(args.seed)
    result = train_dreamstyler(base.model, [concept], dargs, processor=base.processor)
    if _is_main_process():
        if recipe == "full":
            _save_full_concept(base, out)
        else:  # a pipeline saves through itself (one folder per adapted component)
            save_adapter(base.model if base.processor is None else result.model, out)
    return {
        "trainable_parameters": int(sum(result.trainable.values())),
        "steps": len(result.losses),
        "train_loss": _finite(result.losses[-1]) if result.losses else None,
        "train_loss_history": [{"step": i + 1, "loss": loss} for i, loss in enumerate(result.losses)],
        "concept": args.concept,
        # recipe 'full' trains the base to a fixed rare word; the saved tokenizer knows no placeholder
        "placeholder": dargs.rare_tokens[0] if recipe == "full" else word,
        "recipe": recipe,
        "adapter_dir": args.output_dir,
        "batch_size": dargs.train_batch_size,
        "learning_rate": dargs.learning_rate,
    }


def _save_full_concept(base: LoadedBase, out: str) -> None:
    """Recipe ``full``: the trained decoder / U-Net and the tokenizer(s) that spell the concept's rare word."""
    if base.processor is not None:  # MusicGen
        base.model.decoder.save_pretrained(os.path.join(out, "decoder"), safe_serialization=True)
        base.processor.save_pretrained(os.path.join(out, "processor"))
    else:
        base.model.unet.save_pretrained(os.path.join(out, "unet"), safe_serialization=True)
        base.model.tokenizer.save_pretrained(os.path.join(out, "tokenizer"))
        base.model.tokenizer_2.save_pretrained(os.path.join(out, "tokenizer_2"))


def write_summary(summary: dict, output_dir: str) -> str:
    """``output_dir/train_summary.json``, written atomically."""
    path = os.path.join(output_dir, SUMMARY_FILE)
    atomic_write_json(path, summary)
    return path


def _is_main_process() -> bool:
    """True on the single process, or on rank 0 of an ``accelerate launch`` / ``torchrun`` run."""
    return int(os.environ.get("RANK", "0")) == 0


def _distributed_state() -> Any:
    """accelerate's process state when launched on several processes (gloo on CPU), else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _shared_staging(args: TrainArguments, state: Any) -> str:
    """The staging folder, made by the main process and shared with the others."""
    path = [str(make_staging(args.output_dir))] if _is_main_process() else [""]
    if state is not None:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(path, from_process=0)
    return path[0]


def run_training(args: TrainArguments) -> dict:
    """Load the base and data, train, save; returns the summary (also in ``output_dir/train_summary.json``).

    Everything is written into a staging folder beside ``output_dir`` and renamed into place only when
    complete, so a refused, failed or diverged run (:class:`~musicpeft.errors.NonFiniteTrainingError`)
    leaves ``output_dir`` as it was. Under ``accelerate launch`` / ``torchrun`` every process trains and the
    main one writes.
    """
    started = time.time()
    family = _check_inputs(args)
    kind, _ = parse_method(args.method)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    state = _distributed_state()
    if state is not None:
        device = str(state.device)
    torch.manual_seed(args.seed)
    base = load_base(args.base, device)
    clip_seconds = args.clip_seconds or get_family(family).training.clip_seconds
    train, eval_data = load_training_data(args, base.sampling_rate, clip_seconds)
    if _is_main_process():
        print(f"musicpeft train: {family} base {args.base!r}, method {args.method}, {len(train)} training clips, "
              f"{0 if eval_data is None else len(eval_data)} eval clips of {clip_seconds} s")
    staging = _shared_staging(args, state)
    out, scratch = os.path.join(staging, "out"), os.path.join(staging, "scratch")
    try:
        if kind == "dreamstyler":
            result = _train_concept(base, train, args, clip_seconds, out)
        elif get_family(family).training.loss == LOSS_CODEC_TOKENS:
            result = _train_musicgen(base, train, eval_data, args, out, scratch)
        else:
            result = _train_audioldm2(base, train, eval_data, args, clip_seconds, out)
        summary = {
            "arguments": asdict(args),
            "family": family,
            "train_clips": len(train),
            "eval_clips": 0 if eval_data is None else len(eval_data),
            "clip_seconds": clip_seconds,
            "processes": 1 if state is None else state.num_processes,
            "is_main_process": _is_main_process(),
            **result,
            "seconds": round(time.time() - started, 1),
            "summary_file": os.path.join(args.output_dir, SUMMARY_FILE),
        }
        if _is_main_process():
            write_summary(summary, out)
            swap_into_place(out, args.output_dir)
    finally:
        if state is not None:
            state.wait_for_everyone()
        if _is_main_process():
            shutil.rmtree(staging, ignore_errors=True)
    return summary


def format_summary(summary: dict) -> str:
    """The few lines ``musicpeft train`` prints at the end."""

    def num(value: float | None) -> str:
        return "—" if value is None else f"{value:.4f}"

    lines = [f"Trainable parameters: {summary['trainable_parameters']:,} ({summary['arguments']['method']})",
             f"Steps: {summary['steps']}, last training loss {num(summary['train_loss'])}"]
    if "eval_cross_entropy_before" in summary:
        lines.append(f"Eval token cross-entropy: {num(summary['eval_cross_entropy_before'])} (base) -> "
                     f"{num(summary['eval_cross_entropy_after'])} (trained)")
    elif "placeholder" in summary:
        lines.append(f"Concept {summary['concept']!r}: write {summary['placeholder']} in prompts "
                     f"(recipe {summary['recipe']})")
    else:
        lines.append(f"Eval denoising loss: {num(summary['eval_loss_before'])} (base) -> "
                     f"{num(summary['eval_loss_after'])} (trained)")
    lines.append(f"Saved: {summary['adapter_dir']}; summary: {summary['summary_file']}. Took {summary['seconds']} s.")
    return "\n".join(lines)
