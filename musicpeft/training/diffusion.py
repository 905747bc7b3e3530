"""Diffusion training of AudioLDM2 adapters: one loop for soft prompts, LoRA and full fine-tuning.

A step: waveform -> log-mel (`diffusion_data.log_mel`, the features AudioLDM2's VAE was trained on) ->
VAE latents x `vae.config.scaling_factor` -> noise at a random timestep -> the U-Net predicts the noise
(or `v`, or the clean latents, per `scheduler.config.prediction_type`) -> MSE. Text goes through the
pipeline's own `encode_prompt`, so whatever is attached to the text encoders (a soft prompt) or to the
U-Net (LoRA) is what trains; the loop itself only knows a list of parameters.

`accelerate` owns devices, mixed precision and gradient accumulation. Defaults follow the AudioLDM2
fine-tuning paper (its §3.3.4, MusicNet captions): batch 16, lr 5e-5, weight decay 0.01,
evaluation each epoch, the best checkpoint by eval loss kept and reloaded at the end, logging every 10
steps (the paper trained 30 epochs in fp16).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.optimization import get_scheduler
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ..families import AUDIOLDM2
from .accelerate_loop import INFO_FILE as INFO_FILE  # re-exported: where checkpoints keep their note
from .accelerate_loop import STATE_FILE as STATE_FILE  # re-exported: where checkpoints keep their tensors
from .accelerate_loop import (
    copy_into,
    load_trainable_state,
    make_accelerator,
    optimizer_steps,
    save_trainable_state,
    training_scope,
)
from .diffusion_data import AudioTextCollator, IndexedDataset, MelConfig, log_mel
from .encoding_cache import EncodingCache, audio_key, cached_encode, module_fingerprint
from .progress import progress_bar

logger = logging.getLogger(__name__)


_PAPER = AUDIOLDM2.training  # the family's training defaults


@dataclass
class DiffusionTrainingArguments:
    """Settings of `train_audioldm2`; names follow `transformers.TrainingArguments` where they overlap."""

    output_dir: str | None = field(
        default=None,
        metadata={"help": "Where `best/` and `last/` checkpoints go (trainable state as safetensors, plus whatever "
                  "save_fn writes). None: the best state is kept in memory only."},
    )
    num_train_epochs: int = field(default=_PAPER.epochs, metadata={"help": "Epochs over the training set (paper: 30)."})
    max_steps: int | None = field(
        default=None, metadata={"help": "Stop after this many optimizer steps (overrides num_train_epochs)."}
    )
    per_device_train_batch_size: int = field(default=_PAPER.batch_size, metadata={"help": "Batch size (paper: 16)."})
    per_device_eval_batch_size: int = field(default=_PAPER.batch_size, metadata={"help": "Eval batch (paper: 16)."})
    learning_rate: float = field(default=_PAPER.learning_rate, metadata={"help": "AdamW learning rate (paper: 5e-5)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (paper: 0.01)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon."})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "Gradient clipping norm; None disables it."})
    lr_scheduler_type: str = field(
        default="linear", metadata={"help": "A diffusers/transformers scheduler name: linear, constant, cosine, ..."}
    )
    warmup_steps: int = field(default=0, metadata={"help": "Learning-rate warm-up steps."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    mixed_precision: str = field(
        default="no", metadata={"help": "accelerate mixed precision: no, fp16 (paper, on GPU) or bf16."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log the mean training loss every N steps (paper: 10)."})
    eval_each_epoch: bool = field(default=True, metadata={"help": "Evaluate at the end of each epoch."})
    load_best_at_end: bool = field(
        default=True, metadata={"help": "Restore the trainable state with the lowest eval loss after training."}
    )
    audio_length_s: float | None = field(
        default=_PAPER.clip_seconds,
        metadata={"help": "Crop/pad every clip to this length (paper: 163,840 samples = 10.24 s at 16 kHz); "
                  "None pads each batch to its longest clip. Rounded up to whole VAE frames."},
    )
    sampling_rate: int | None = field(
        default=None, metadata={"help": "Rate of the dataset's audio when it has no `sampling_rate` column."}
    )
    latent_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Cache each clip's VAE latent distribution here (safetensors, keyed by the clip and the "
                  "VAE's fingerprint): epochs after the first do no VAE encoding. None: encode every step."},
    )
    normalize_audio: bool = field(default=True, metadata={"help": "AudioLDM's mean removal + peak-to-0.5 scaling."})
    random_crop: bool = field(default=True, metadata={"help": "Crop long training clips at a random offset."})
    seed: int = field(default=0, metadata={"help": "Seed of shuffling, crops, noise and timesteps."})
    eval_seed: int = field(
        default=1234, metadata={"help": "Seed of evaluation noise and timesteps, fixed so that eval losses compare."}
    )

    def __post_init__(self) -> None:
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}.")
        for name in ("num_train_epochs", "per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}.")
        if self.audio_length_s is not None and self.audio_length_s <= 0:
            raise ValueError(f"audio_length_s must be > 0 or None, got {self.audio_length_s}.")


# ---------------------------------------------------------------------------------------------- the loss


def diffusion_loss(
    pipe: Any,
    waveform: torch.Tensor,
    text: list[str],
    noise_scheduler: Any,
    mel_config: MelConfig | None = None,
    generator: torch.Generator | None = None,
    latent_cache: Any = None,
) -> torch.Tensor:
    """Per-example denoising MSE `[batch]` for waveforms at the vocoder's rate and their captions.

    The VAE encodes without gradient (it is never trained here); text encoders and U-Net run with
    gradient wherever their parameters require it. `generator` fixes latents sampling, noise and
    timesteps (evaluation); None draws them from the global RNG (training). `latent_cache` (an
    `EncodingCache` from `latent_cache_for`) keeps each clip's VAE latent distribution on disk.
    """
    mel_config = mel_config or MelConfig.from_pipeline(pipe)
    vae, unet = pipe.vae, pipe.unet
    device = waveform.device
    with torch.no_grad():
        latents = latent_distribution(pipe, waveform, mel_config, latent_cache).sample(generator=generator)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        latents = (latents - shift) * vae.config.scaling_factor
    prompt_embeds, attention_mask, generated_embeds = pipe.encode_prompt(
        text, device, num_waveforms_per_prompt=1, do_classifier_free_guidance=False
    )
    noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    steps = noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator, device=device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    prediction = unet(
        noisy.to(unet.dtype), timesteps,
        **AUDIOLDM2.unet_inputs(generated_embeds, prompt_embeds, attention_mask, unet.dtype),
        return_dict=False,
    )[0]
    kind = noise_scheduler.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    elif kind == "sample":
        target = latents
    else:
        raise ValueError(f"Unsupported scheduler prediction_type {kind!r}; expected epsilon, v_prediction or sample.")
    return F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))


def latent_cache_for(pipe: Any, directory: str | os.PathLike | None, mel_config: MelConfig | None = None) -> Any:
    """An `EncodingCache` of VAE latent distributions for this pipeline's VAE and mel settings (None: off)."""
    if directory is None:
        return None
    mel_config = mel_config or MelConfig.from_pipeline(pipe)
    return EncodingCache(directory, "vae-latents", module_fingerprint(pipe.vae, repr(mel_config)))


@torch.no_grad()
def latent_distribution(pipe: Any, waveform: torch.Tensor, mel_config: MelConfig, cache: Any = None) -> Any:
    """The VAE's latent distribution of each waveform (mean and log-variance), from `cache` when there.

    The distribution (not a sample) is cached, so every step still draws fresh latents as without a cache.
    The key is the exact waveform row fed to the VAE, so a random crop simply misses the cache.
    """
    vae = pipe.vae

    def encode(rows: list[int]) -> list[dict[str, torch.Tensor]]:
        mel = log_mel(waveform[rows], mel_config).to(vae.dtype)
        params = vae.encode(mel).latent_dist.parameters
        return [{"parameters": p} for p in params]

    if cache is None:
        return vae.encode(log_mel(waveform, mel_config).to(vae.dtype)).latent_dist
    rows = waveform.detach().float().cpu().numpy()
    keys = [audio_key(row, mel_config.sampling_rate) for row in rows]
    found = cached_encode(cache, keys, encode)
    params = torch.stack([f["parameters"].to(waveform.device, vae.dtype) for f in found])
    return DiagonalGaussianDistribution(params)


# ------------------------------------------------------------------------------------- trainable state


def _modules(pipe: Any) -> dict[str, nn.Module]:
    return {name: c for name, c in pipe.components.items() if isinstance(c, nn.Module)}


def _has_adapter(module: nn.Module) -> bool:
    return any(isinstance(m, BaseTunerLayer) for m in module.modules())


def resolve_trainable(pipe: Any, parameters: Iterable[nn.Parameter] | None = None) -> dict[str, nn.Parameter]:
    """Name -> parameter of what trains, names as `component.parameter` (e.g. `unet.conv_in.weight`).

    `parameters=None` picks: the parameters that require grad inside components carrying a peft adapter
    layer (LoRA, soft prompt) if there are any, else every parameter that requires grad (full fine-tuning
    after `presets.prepare_full_finetune`). A pipeline in which nothing is frozen is refused rather than
    trained whole by accident.
    """
    named = {f"{c}.{n}": p for c, m in _modules(pipe).items() for n, p in m.named_parameters()}
    if parameters is not None:
        by_id = {id(p): n for n, p in named.items()}
        chosen = {}
        for i, p in enumerate(parameters):
            chosen[by_id.get(id(p), f"external.{i}")] = p
    else:
        adapted = [c for c, m in _modules(pipe).items() if _has_adapter(m)]
        pool = {n: p for n, p in named.items() if not adapted or n.split(".", 1)[0] in adapted}
        chosen = {n: p for n, p in pool.items() if p.requires_grad}
        if not adapted and chosen and len(chosen) == len(named):
            raise ValueError(
                "Every parameter of the pipeline requires grad, so nothing marks what should train: attach an "
                "adapter, call musicpeft.training.presets.prepare_full_finetune(pipe), or pass trainable_parameters."
            )
    if not chosen:
        raise ValueError("Nothing to train: no parameter requires grad and trainable_parameters was not given.")
    return chosen


class BestKeeper:
    """Keeps the trainable state with the lowest eval loss: on disk (`directory`) or in memory.

    Only a process with `write=True` (accelerate's main process) writes files and calls `on_improve`; the
    others keep their copy in memory, which is identical since gradients are averaged across processes.
    """

    def __init__(self, named: dict[str, nn.Parameter], directory: str | None = None,
                 on_improve: Callable[[str | None], None] | None = None, write: bool = True) -> None:
        self.named, self.directory, self.on_improve, self.write = named, directory, on_improve, write
        self.best_loss: float | None = None
        self.best_epoch: int | None = None
        self._memory: dict[str, torch.Tensor] | None = None

    def offer(self, epoch: int, step: int, loss: float) -> bool:
        """Record this evaluation; returns True (and saves) when it is the best so far."""
        if self.best_loss is not None and not loss < self.best_loss:
            return False
        self.best_loss, self.best_epoch = loss, epoch
        if self.directory is None or not self.write:
            self._memory = {n: p.detach().to("cpu", copy=True) for n, p in self.named.items()}
            return True
        save_trainable_state(self.named, self.directory, {"epoch": epoch, "step": step, "eval_loss": loss})
        if self.on_improve is not None:
            self.on_improve(self.directory)
        return True

    def restore(self) -> None:
        """Put the best state back into the parameters (no-op when nothing was offered)."""
        if self.best_loss is None:
            return
        if self._memory is not None:
            copy_into(self.named, self._memory)
        else:
            load_trainable_state(self.named, self.directory)


# --------------------------------------------------------------------------------------------- the loop


def _loader(pipe: Any, dataset: Any, args: DiffusionTrainingArguments, train: bool) -> torch.utils.data.DataLoader:
    mel = MelConfig.from_pipeline(pipe)
    num_samples = None if args.audio_length_s is None else round(args.audio_length_s * mel.sampling_rate)
    collator = AudioTextCollator(
        mel, pipe.vae_scale_factor, num_samples, args.sampling_rate, args.normalize_audio,
        random_crop=train and args.random_crop, seed=args.seed,
    )
    batch = args.per_device_train_batch_size if train else args.per_device_eval_batch_size
    generator = torch.Generator().manual_seed(args.seed)
    return torch.utils.data.DataLoader(
        IndexedDataset(dataset, args.sampling_rate), batch_size=batch, shuffle=train, collate_fn=collator,
        generator=generator if train else None,
    )


def _noise_scheduler(pipe: Any) -> Any:
    """A DDPM scheduler with the pipeline's noise schedule (the pipeline's own scheduler is left alone)."""
    return DDPMScheduler.from_config(pipe.scheduler.config)


def evaluate_audioldm2(pipe: Any, eval_dataset: Any, args: DiffusionTrainingArguments | None = None,
                       accelerator: Any = None) -> float:
    """Mean denoising MSE over `eval_dataset` with fixed noise (`args.eval_seed`): comparable across calls."""
    args = args or DiffusionTrainingArguments()
    loader = _loader(pipe, eval_dataset, args, train=False)
    device = accelerator.device if accelerator is not None else pipe.unet.device
    if accelerator is not None:
        loader = accelerator.prepare(loader)
    modes = {name: m.training for name, m in _modules(pipe).items()}
    scheduler, mel = _noise_scheduler(pipe), MelConfig.from_pipeline(pipe)
    latent_cache = latent_cache_for(pipe, args.latent_cache_dir, mel)
    generator = torch.Generator(device=device).manual_seed(args.eval_seed)
    total, count = 0.0, 0
    try:
        for module in _modules(pipe).values():
            module.eval()
        with torch.no_grad():
            for batch in progress_bar(loader, desc="Evaluating (denoising loss)", unit="batch"):
                losses = diffusion_loss(pipe, batch["waveform"].to(device), batch["text"], scheduler, mel, generator,
                                        latent_cache)
                if accelerator is not None:
                    losses = accelerator.gather_for_metrics(losses)
                total, count = total + losses.sum().item(), count + losses.numel()
    finally:
        for name, module in _modules(pipe).items():
            module.train(modes[name])
    return total / max(count, 1)


def train_audioldm2(
    pipe: Any,
    train_dataset: Any,
    eval_dataset: Any = None,
    args: DiffusionTrainingArguments | None = None,
    trainable_parameters: Iterable[nn.Parameter] | None = None,
    save_fn: Callable[[Any, str], None] | None = None,
) -> dict[str, Any]:
    """Train the given parameters (or those `resolve_trainable` finds) of an AudioLDM2 pipeline.

    Datasets are `datasets.Dataset`s with columns `audio` (float32 array), `text` and `sampling_rate` (or
    `args.sampling_rate`). Only the chosen parameters get gradients: every other parameter of the pipeline
    is frozen for the duration and its `requires_grad` restored afterwards. Components holding trainable
    parameters run in train mode, the rest in eval mode. With `args.output_dir`, the best state by eval
    loss goes to `output_dir/best/` and the final one to `output_dir/last/`; `save_fn(pipe, directory)` is
    called after each such save (e.g. to write an adapter in its own format) and needs `output_dir`.
    The steps run in :func:`~musicpeft.training.accelerate_loop.optimizer_steps`, under a progress bar.

    A NaN/Inf loss, gradient or trainable weight stops training with `musicpeft.errors.NonFiniteTrainingError`
    (nothing more is written to `output_dir`).

    Returns the history: `train_loss` (one entry per logging window), `eval_loss` (one per evaluation),
    `best_eval_loss`, `best_epoch`, `global_step`.
    """
    args = args or DiffusionTrainingArguments()
    if save_fn is not None and args.output_dir is None:
        raise ValueError("save_fn needs DiffusionTrainingArguments.output_dir to write into.")
    named = resolve_trainable(pipe, trainable_parameters)
    params = list(named.values())
    if eval_dataset is not None:
        IndexedDataset(eval_dataset, args.sampling_rate)  # check its columns now, not after the first epoch
    accelerator = make_accelerator(args.mixed_precision, args.gradient_accumulation_steps)
    torch.manual_seed(args.seed)
    if args.mixed_precision == "fp16" and any(p.dtype == torch.float16 for p in params):
        raise ValueError(
            "Trainable parameters in float16 cannot train under mixed_precision='fp16', whose gradient scaler needs "
            "float32 master weights: load the pipeline in float32, or keep the adapter weights in float32."
        )
    train_loader = accelerator.prepare(_loader(pipe, train_dataset, args, train=True))
    if len(train_loader) == 0:
        raise ValueError("The training dataset is empty.")
    # Steps per process: the prepared loader is this process's shard.
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    total_steps = args.max_steps or args.num_train_epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)

    pipe.to(accelerator.device)
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  eps=args.adam_epsilon, weight_decay=args.weight_decay)
    # accelerate steps a prepared scheduler once per process for each optimizer step.
    lr_scheduler = get_scheduler(args.lr_scheduler_type, optimizer,
                                 num_warmup_steps=args.warmup_steps * accelerator.num_processes,
                                 num_training_steps=total_steps * accelerator.num_processes)
    optimizer, lr_scheduler = accelerator.prepare(optimizer, lr_scheduler)
    noise_scheduler, mel = _noise_scheduler(pipe), MelConfig.from_pipeline(pipe)
    latent_cache = latent_cache_for(pipe, args.latent_cache_dir, mel)

    def on_save(directory: str | None) -> None:
        if save_fn is not None and directory is not None:
            save_fn(pipe, directory)

    def loss_fn(batch: dict[str, Any]) -> torch.Tensor:
        return diffusion_loss(pipe, batch["waveform"], batch["text"], noise_scheduler, mel,
                              latent_cache=latent_cache).mean()

    best_dir = os.path.join(args.output_dir, "best") if args.output_dir else None
    keeper = BestKeeper(named, best_dir, on_save, write=accelerator.is_main_process)
    history: dict[str, Any] = {"train_loss": [], "eval_loss": [], "best_eval_loss": None, "best_epoch": None}
    global_step, window = 0, []
    with training_scope(_modules(pipe), params), \
            progress_bar(total=total_steps, desc="Training (AudioLDM2)", unit="step") as bar:
        for epoch in range(1, epochs + 1):
            for result in optimizer_steps(accelerator, optimizer, named, train_loader, loss_fn,
                                          max_steps=total_steps, start_step=global_step,
                                          max_grad_norm=args.max_grad_norm, lr_scheduler=lr_scheduler, bar=bar):
                global_step = result.step
                window.append(result.loss)
                if global_step % args.logging_steps == 0 or global_step == total_steps:
                    entry = {"step": global_step, "epoch": epoch, "loss": sum(window) / len(window), "lr": result.lr}
                    history["train_loss"].append(entry)
                    logger.info("step %(step)d epoch %(epoch)d loss %(loss).5f lr %(lr).3g", entry)
                    window = []
            if eval_dataset is not None and args.eval_each_epoch:
                eval_loss = evaluate_audioldm2(pipe, eval_dataset, args, accelerator)
                history["eval_loss"].append({"epoch": epoch, "step": global_step, "loss": eval_loss})
                improved = keeper.offer(epoch, global_step, eval_loss)
                logger.info("epoch %d eval loss %.5f%s", epoch, eval_loss, " (best)" if improved else "")
            if global_step >= total_steps:
                break
        if args.output_dir and accelerator.is_main_process:
            last = os.path.join(args.output_dir, "last")
            save_trainable_state(named, last, {"epoch": epoch, "step": global_step, "args": asdict(args)})
            on_save(last)
        if args.load_best_at_end:
            keeper.restore()
    history.update(best_eval_loss=keeper.best_loss, best_epoch=keeper.best_epoch, global_step=global_step)
    return history
