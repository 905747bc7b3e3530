"""Customized music generation (JEN-1 DreamStyler) and the paper's baselines, as named training recipes.

`train_dreamstyler(model_or_pipe, concepts, args)` runs one recipe on a MusicGen model (token
cross-entropy, labels from `MusicgenCollator`) or an AudioLDM2 pipeline (denoising MSE from
`training/diffusion.py`), on `accelerate`:

- `dreamstyler` (Algorithm 1): per concept, a stage-1 mask adapter trained `mask_epochs` epochs on that
  concept's clips (identifier tokens fixed); then the union of their top-P% selections, the cross-attention
  K/V and every concept's tokens train jointly for `tuning_steps` steps on all clips.
- `tokens_only`: identifier tokens alone (textual inversion, the paper's first baseline).
- `cross_attn_kv`: cross-attention K/V + identifier tokens (Custom Diffusion, the third baseline).
- `full`: every decoder (MusicGen) or U-Net (AudioLDM2) weight, each concept written as a fixed rare token
  (DreamBooth-style, the second baseline). This one changes the model's own weights.

Defaults are the paper's (§5.2): 1,500 steps, batch 32, AdamW betas (0.9, 0.95), decoupled weight decay
0.1, gradient clipping 1.0, lr 1e-5 for weights and 1e-4 for tokens (separate parameter groups), 3 tokens
per concept, P = 5%. The paper gives 100 mask epochs but no mask learning rate; `mask_learning_rate`
(1e-3) is ours, and the masks get no weight decay, which would shrink every mask entry and blur the
ranking. Weight decay applies to the adapter's deltas, i.e. it pulls the weights back to the pretrained
ones rather than to zero (over 1,500 steps at lr 1e-5 the two differ by 0.15% of a weight).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler
from torch import nn

from .. import errors
from ..adapters.base import is_pipeline
from ..api import add_adapter
from ..data import resample
from ..tuners.concept_identifier import ConceptIdentifierConfig
from ..tuners.concept_identifier.binding import bind_processor
from ..tuners.concept_identifier.config import placeholder
from ..tuners.concept_identifier.loading import add_pipeline_adapter
from ..tuners.concept_identifier.placeholders import install_placeholders
from ..tuners.pivotal_mask import PivotalMaskConfig, count
from .accelerate_loop import make_accelerator, named_trainable, optimizer_steps, training_scope
from .collator import MusicgenCollator
from .diffusion import diffusion_loss
from .diffusion_data import AudioTextCollator, MelConfig
from .presets import prepare_full_finetune
from .progress import progress_bar

logger = logging.getLogger(__name__)

RECIPES: dict[str, str] = {
    "dreamstyler": "pivotal W_V entries (top P% of a learned mask) + cross-attention K/V + identifier tokens",
    "tokens_only": "identifier tokens only (textual inversion)",
    "cross_attn_kv": "cross-attention K/V + identifier tokens (Custom Diffusion)",
    "full": "all decoder / U-Net weights + a fixed rare token per concept (DreamBooth-style)",
}


@dataclass
class DreamStylerArguments:
    """Settings of `train_dreamstyler`; defaults are the paper's (§5.2) unless marked otherwise."""

    recipe: str = field(default="dreamstyler", metadata={"help": f"One of {sorted(RECIPES)}."})
    tokens_per_concept: int = field(default=3, metadata={"help": "Identifier tokens per concept (paper: 3)."})
    percent: float = field(
        default=5.0, metadata={"help": "P: percentage of self-attention W_V entries trained (paper: 5)."}
    )
    per_layer: bool = field(default=False, metadata={"help": "Top P percent per layer instead of over all layers."})
    selection: str = field(default="pivotal", metadata={"help": "'pivotal' (mask) or 'random' (ablation)."})
    mask_epochs: int = field(default=100, metadata={"help": "Stage-1 epochs per concept (paper: 100)."})
    tuning_steps: int = field(default=1500, metadata={"help": "Stage-2 optimizer steps (paper: 1,500)."})
    train_batch_size: int = field(default=32, metadata={"help": "Clips per step (paper: 32)."})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW lr of model weights (paper: 1e-5)."})
    token_learning_rate: float = field(default=1e-4, metadata={"help": "AdamW lr of identifier tokens (paper: 1e-4)."})
    mask_learning_rate: float = field(default=1e-3, metadata={"help": "AdamW lr of stage-1 masks (not in the paper)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1 (paper: 0.9)."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2 (paper: 0.95)."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon."})
    weight_decay: float = field(default=0.1, metadata={"help": "Decoupled weight decay (paper: 0.1)."})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "Gradient clipping (paper: 1.0)."})
    rare_tokens: list[str] = field(
        default_factory=lambda: ["sks", "zwx", "qtv", "pfy", "jxl", "vrb"],
        metadata={"help": "Recipe 'full': the fixed rare word standing for each concept, in order."},
    )
    audio_length_s: float | None = field(
        default=10.24, metadata={"help": "AudioLDM2: crop/pad clips to this length (None: longest in batch)."}
    )
    mixed_precision: str = field(default="no", metadata={"help": "accelerate mixed precision: no, fp16 or bf16."})
    logging_steps: int = field(default=50, metadata={"help": "Log the mean loss every N steps."})
    seed: int = field(default=0, metadata={"help": "Seed of initialisation, shuffling and noise."})
    adapter_name: str = field(default="default", metadata={"help": "Name of the resulting adapter."})

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {self.recipe!r}.")
        if self.selection not in ("pivotal", "random"):
            raise ValueError(f"selection must be 'pivotal' or 'random', got {self.selection!r}.")
        for name in ("tokens_per_concept", "train_batch_size", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("mask_epochs", "tuning_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("learning_rate", "token_learning_rate", "mask_learning_rate", "weight_decay", "adam_epsilon"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
        if self.max_grad_norm is not None and not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be a finite number > 0 (or None), got {self.max_grad_norm!r}.")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}.")


@dataclass
class ConceptData:
    """Reference audio of one concept (paper: about two minutes) and the prompts that go with it.

    Every prompt must contain the concept's placeholder `<name>`; by default the prompt is the placeholder
    alone (the paper needs no description). Prompts are used in turn, one per clip.
    """

    name: str
    audio: list[np.ndarray]
    sampling_rate: int
    prompts: list[str] | None = None
    init_word: str | None = None

    def rows(self) -> list[dict[str, Any]]:
        prompts = self.prompts or [placeholder(self.name)]
        missing = [p for p in prompts if placeholder(self.name) not in p]
        if missing:
            raise ValueError(f"Prompts of concept {self.name!r} must contain {placeholder(self.name)}: {missing}.")
        if not self.audio:
            raise ValueError(f"Concept {self.name!r} has no reference audio.")
        return [
            {"audio": np.asarray(a, dtype=np.float32), "sampling_rate": self.sampling_rate,
             "text": prompts[i % len(prompts)]}
            for i, a in enumerate(self.audio)
        ]


@dataclass
class DreamStylerResult:
    """What a recipe produced and what it cost."""

    model: Any  # the PeftModel (or, for recipe 'full', the trained model / pipeline itself)
    recipe: str
    adapter_name: str | None
    mask_losses: dict[str, list[float]] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    selected: dict[str, int] = field(default_factory=dict)  # per concept, and "union"
    trainable: dict[str, int] = field(default_factory=dict)
    optimizer_state_numel: int = 0
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------- backends


class _MusicgenBackend:
    """Token cross-entropy on MusicGen: `MusicgenCollator` builds delayed labels from the clips."""

    def __init__(self, model: nn.Module, processor: Any, args: DreamStylerArguments) -> None:
        if processor is None:
            raise ValueError("MusicGen recipes need the model's processor (its tokenizer gets the concept tokens).")
        self.model, self.processor, self.peft_model = model, processor, None
        self.collator = MusicgenCollator(processor, model)
        self.sampling_rate = self.collator.sampling_rate

    def prepare_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**r, "audio": resample(r["audio"], r["sampling_rate"], self.sampling_rate),
                 "sampling_rate": self.sampling_rate} for r in rows]

    def bind(self) -> None:
        bind_processor(self.model, self.processor)

    def attach(self, config: Any, name: str) -> Any:
        self.peft_model = add_adapter(self.model, config, name)
        return self.peft_model

    def tokenizers(self) -> list[Any]:
        return [self.processor.tokenizer]

    def named_modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def loss(self, rows: list[dict[str, Any]], device: torch.device) -> torch.Tensor:
        batch = {k: v.to(device) for k, v in self.collator(rows).items()}
        runner = self.peft_model if self.peft_model is not None else self.model
        return runner(**batch).loss


class _PipelineBackend:
    """Denoising MSE on an AudioLDM2 pipeline, through its own `encode_prompt` (`training/diffusion.py`)."""

    def __init__(self, pipe: Any, args: DreamStylerArguments) -> None:
        self.pipe, self.peft_model = pipe, None
        self.mel = MelConfig.from_pipeline(pipe)
        samples = None if args.audio_length_s is None else round(args.audio_length_s * self.mel.sampling_rate)
        self.collator = AudioTextCollator(self.mel, pipe.vae_scale_factor, samples, random_crop=True, seed=args.seed)
        self.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    def prepare_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return rows  # the collator resamples

    def bind(self) -> None:
        return None  # the pipeline's tokenizers are found by the tuner

    def attach(self, config: Any, name: str) -> Any:
        self.peft_model = add_pipeline_adapter(self.pipe, config, name)
        return self.peft_model

    def tokenizers(self) -> list[Any]:
        return [self.pipe.tokenizer, self.pipe.tokenizer_2]

    def named_modules(self) -> dict[str, nn.Module]:
        return {n: c for n, c in self.pipe.components.items() if isinstance(c, nn.Module)}

    def loss(self, rows: list[dict[str, Any]], device: torch.device) -> torch.Tensor:
        batch = self.collator(rows)
        return diffusion_loss(self.pipe, batch["waveform"].to(device), batch["text"], self.scheduler, self.mel).mean()


# ------------------------------------------------------------------------------------------ the loop


def _batches(rows: list[dict[str, Any]], size: int, rng: random.Random) -> Iterator[list[dict[str, Any]]]:
    """Endless shuffled batches; each pass over the data is one epoch."""
    while True:
        order = rows[:]
        rng.shuffle(order)
        for start in range(0, len(order), size):
            yield order[start : start + size]


def _param_groups(peft_model: nn.Module, args: DreamStylerArguments, mask: bool) -> list[dict[str, Any]]:
    named = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
    if mask:
        return [{"params": [p for _, p in named], "lr": args.mask_learning_rate, "weight_decay": 0.0}]
    tokens = [p for n, p in named if "concept_embeddings" in n]
    weights = [p for n, p in named if "concept_embeddings" not in n]
    groups = [{"params": weights, "lr": args.learning_rate, "weight_decay": args.weight_decay},
              {"params": tokens, "lr": args.token_learning_rate, "weight_decay": args.weight_decay}]
    return [g for g in groups if g["params"]]


def _optimizer_state_numel(optimizer: torch.optim.Optimizer) -> int:
    return sum(t.numel() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0)


def _run(backend: Any, accelerator: Any, groups: list[dict[str, Any]], rows: list[dict[str, Any]], steps: int,
         args: DreamStylerArguments, rng: random.Random, label: str) -> tuple[list[float], int]:
    """`steps` AdamW steps over shuffled batches of `rows` in the shared accelerate loop; returns the losses and
    the optimizer-state size."""
    params = [p for g in groups for p in g["params"]]
    named = named_trainable(backend.named_modules().values(), params)
    optimizer = torch.optim.AdamW(groups, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    optimizer = accelerator.prepare_optimizer(optimizer)
    losses, window = [], []

    def loss_fn(batch: list[dict[str, Any]]) -> torch.Tensor:
        return backend.loss(batch, accelerator.device)

    batches = _batches(rows, args.train_batch_size, rng)
    with training_scope(backend.named_modules(), params), \
            progress_bar(total=steps, desc=f"DreamStyler {label}", unit="step") as bar:
        for result in optimizer_steps(accelerator, optimizer, named, batches, loss_fn, max_steps=steps,
                                      max_grad_norm=args.max_grad_norm, bar=bar, label=f"{label} ({steps} steps)"):
            losses.append(result.loss)
            window.append(result.loss)
            if result.step % args.logging_steps == 0 or result.step == steps:
                logger.info("%s step %d/%d loss %.5f", label, result.step, steps, sum(window) / len(window))
                window = []
    return losses, _optimizer_state_numel(optimizer)


# Kept under its old name: the recipes raise the package's error (a ValueError the command line reports in a line).
NonFiniteTrainingError = errors.NonFiniteTrainingError


def train_dreamstyler(model_or_pipe: Any, concepts: list[ConceptData], args: DreamStylerArguments | None = None,
                      processor: Any = None) -> DreamStylerResult:
    """Run `args.recipe` on a MusicGen model (with its `processor`) or an AudioLDM2 pipeline.

    The model is adapted in place; prompts with the concepts' placeholders work on it right after (and
    `musicpeft.save_adapter` writes the adapter, tokens and placeholders included).
    """
    args = args or DreamStylerArguments()
    names = [c.name for c in concepts]
    if not concepts or len(set(names)) != len(names):
        raise ValueError(f"Give each concept once, at least one; got {names}.")
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    accelerator = make_accelerator(args.mixed_precision)
    backend = _PipelineBackend(model_or_pipe, args) if is_pipeline(model_or_pipe) else \
        _MusicgenBackend(model_or_pipe, processor, args)
    for module in backend.named_modules().values():
        module.to(accelerator.device)
    rows = {c.name: backend.prepare_rows(c.rows()) for c in concepts}
    everything = [r for c in concepts for r in rows[c.name]]
    init_words = {c.name: c.init_word for c in concepts if c.init_word}
    common = dict(concepts=names, tokens_per_concept=args.tokens_per_concept, init_words=init_words or None,
                  init_seed=args.seed)
    result = DreamStylerResult(model=None, recipe=args.recipe, adapter_name=args.adapter_name)
    backend.bind()

    if args.recipe == "full":
        if len(args.rare_tokens) < len(names):
            raise ValueError(f"Recipe 'full' needs a rare token per concept; rare_tokens={args.rare_tokens}.")
        for tokenizer in backend.tokenizers():
            rare = dict(zip(map(placeholder, names), args.rare_tokens[: len(names)], strict=True))
            install_placeholders(tokenizer, rare)
        params = prepare_full_finetune(model_or_pipe)
        groups = [{"params": params, "lr": args.learning_rate, "weight_decay": args.weight_decay}]
        result.adapter_name, result.model = None, model_or_pipe
        result.trainable = {"full": sum(p.numel() for p in params)}
        result.losses, result.optimizer_state_numel = _run(
            backend, accelerator, groups, everything, args.tuning_steps, args, rng, "full")
        result.seconds = time.perf_counter() - start
        return result

    if args.recipe == "tokens_only":
        config = ConceptIdentifierConfig(**common)
    elif args.recipe == "cross_attn_kv":
        config = PivotalMaskConfig(stage="tune", selection="none", **common)
    else:
        mask_names = []
        if args.selection == "pivotal":
            for concept in concepts:
                mask_name = f"{args.adapter_name}_mask_{concept.name}"
                mask_config = PivotalMaskConfig(stage="mask", **{**common, "concepts": [concept.name],
                                                                 "init_words": _only(init_words, concept.name)})
                peft_model = backend.attach(mask_config, mask_name)
                steps = args.mask_epochs * math.ceil(len(rows[concept.name]) / args.train_batch_size)
                result.mask_losses[concept.name], _ = _run(
                    backend, accelerator, _param_groups(peft_model, args, mask=True), rows[concept.name], steps,
                    args, rng, f"mask {concept.name}")
                result.selected[concept.name] = count(peft_model.base_model.select(mask_name, args.percent,
                                                                                   args.per_layer))
                mask_names.append(mask_name)
        config = PivotalMaskConfig(stage="tune", selection=args.selection, mask_adapters=mask_names or None,
                                   percent=args.percent, per_layer=args.per_layer, selection_seed=args.seed, **common)
    peft_model = backend.attach(config, args.adapter_name)
    for mask_name in getattr(config, "mask_adapters", None) or []:
        peft_model.delete_adapter(mask_name)  # stage-1 masks are W_V-sized: free them before stage 2
    if isinstance(config, PivotalMaskConfig):
        result.selected["union"] = config.num_selected or 0
        result.trainable = peft_model.base_model.trainable_counts(args.adapter_name)
    else:
        result.trainable = {"tokens": sum(p.numel() for p in peft_model.parameters() if p.requires_grad)}
    result.model = peft_model
    result.losses, result.optimizer_state_numel = _run(
        backend, accelerator, _param_groups(peft_model, args, mask=False), everything, args.tuning_steps, args, rng,
        args.recipe)
    result.seconds = time.perf_counter() - start
    return result


def _only(words: dict[str, str], name: str) -> dict[str, str] | None:
    return {name: words[name]} if name in words else None
