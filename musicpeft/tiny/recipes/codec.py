"""Train the micro-world's tiny EnCodec: transformers' ``EncodecModel`` architecture, 16 kHz mono, 4 codebooks.

Why own training code: transformers ships EnCodec's architecture but no training. The recipe is
EnCodec's without the adversarial part (which needs far more compute than 2 CPU cores): multi-
resolution STFT losses (log magnitude L1 + spectral convergence), a log-mel L1 loss, a small
waveform L1 loss and a commitment loss, with straight-through residual vector quantisation whose
codebooks are learnt by exponential moving averages of their assigned frames (k-means in
expectation) with dead-code restarts, as in EnCodec. The codebooks live in the stock
``EncodecEuclideanCodebook`` buffers (``embed``, ``embed_avg``, ``cluster_size``, ``inited``), so
the saved folder loads with ``EncodecModel.from_pretrained`` and encodes/decodes unmodified.

Init (from a probe on this machine): conv biases zeroed and weight-norm gains set to 1, so every
layer starts as a unit-norm filter bank and the untrained codec neither explodes nor goes silent.
"""

from __future__ import annotations

import math
from pathlib import Path

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from transformers import EncodecConfig, EncodecModel

from .loop import Schedule, load_checkpoint, train_for_budget

SAMPLING_RATE = 16000
NUM_CODEBOOKS = 4
CODEBOOK_SIZE = 512


def codec_config(num_filters: int = 8, hidden_size: int = 64, codebook_size: int = CODEBOOK_SIZE):
    """EncodecConfig of the tiny codec: hop 320 (50 frames/s), 4 codebooks of ``codebook_size``."""
    bits = math.ceil(math.log2(codebook_size))
    bandwidth = NUM_CODEBOOKS * 50 * bits / 1000  # kbps that gives exactly 4 codebooks
    cfg = EncodecConfig(
        sampling_rate=SAMPLING_RATE, audio_channels=1, num_filters=num_filters, hidden_size=hidden_size,
        codebook_size=codebook_size, codebook_dim=hidden_size, upsampling_ratios=[8, 5, 4, 2],
        num_residual_layers=1, num_lstm_layers=1, target_bandwidths=[bandwidth], chunk_length_s=None, overlap=None,
        normalize=False, compress=2, kernel_size=7, last_kernel_size=7, residual_kernel_size=3,
        dilation_growth_rate=2, use_causal_conv=False, pad_mode="reflect", trim_right_ratio=1.0,
        norm_type="weight_norm",
    )
    if cfg.num_quantizers != NUM_CODEBOOKS:
        raise RuntimeError(f"codec config gives {cfg.num_quantizers} codebooks, expected {NUM_CODEBOOKS}")
    return cfg


def new_codec(seed: int = 0, **kwargs):
    """A fresh tiny EncodecModel with zero conv biases and unit weight-norm gains."""
    torch.manual_seed(seed)
    model = EncodecModel(codec_config(**kwargs))
    with torch.no_grad():
        for module in model.modules():
            conv = getattr(module, "conv", None)
            if not isinstance(conv, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
                continue
            if conv.bias is not None:
                conv.bias.zero_()
            param = getattr(conv, "parametrizations", None)
            if param is not None and hasattr(param, "weight"):
                param.weight.original0.fill_(1.0)
    return model


class EmaRvq:
    """Residual VQ trained by EMA over the model's own codebook buffers, with straight-through gradients."""

    def __init__(self, model, decay: float = 0.99, dead_threshold: float = 0.5, seed: int = 0):
        self.books = [layer.codebook for layer in model.quantizer.layers]
        self.decay = decay
        self.dead_threshold = dead_threshold
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def ready(self) -> bool:
        """Whether the codebooks hold data (read from the buffers, so a checkpoint loaded later counts)."""
        return bool(self.books[0].cluster_size.sum() > 0)

    def _pick(self, frames: torch.Tensor, k: int) -> torch.Tensor:
        idx = torch.randint(0, frames.shape[0], (k,), generator=self.generator)
        return frames[idx]

    @torch.no_grad()
    def _init(self, frames: torch.Tensor) -> None:
        residual = frames
        for book in self.books:
            book.embed.copy_(self._pick(residual, book.embed.shape[0]))
            book.embed_avg.copy_(book.embed)
            book.cluster_size.fill_(1.0)
            book.inited.fill_(1.0)
            residual = residual - book.embed[book.quantize(residual)]

    @torch.no_grad()
    def _update(self, book, residual: torch.Tensor, idx: torch.Tensor) -> None:
        size = book.embed.shape[0]
        onehot = F.one_hot(idx, size).to(residual.dtype)
        counts = onehot.sum(0)
        book.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        book.embed_avg.mul_(self.decay).add_(onehot.T @ residual, alpha=1 - self.decay)
        n = book.cluster_size.sum()
        smoothed = (book.cluster_size + 1e-5) / (n + size * 1e-5) * n
        book.embed.copy_(book.embed_avg / smoothed[:, None])
        dead = book.cluster_size < self.dead_threshold
        if bool(dead.any()):
            fresh = self._pick(residual, int(dead.sum()))
            book.embed[dead] = fresh
            book.embed_avg[dead] = fresh
            book.cluster_size[dead] = 1.0

    def __call__(self, latent: torch.Tensor, train: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantise ``latent`` ``[B, D, T]``: (straight-through quantised latent, codes ``[K, B, T]``, commit loss)."""
        b, d, t = latent.shape
        frames = latent.permute(0, 2, 1).reshape(-1, d)
        if train and not self.ready:
            self._init(frames.detach())
        residual = frames
        total = torch.zeros_like(frames)
        commit = frames.new_zeros(())
        codes = []
        for book in self.books:
            idx = book.quantize(residual.detach())
            if train:
                self._update(book, residual.detach(), idx)
            q = book.embed[idx]
            commit = commit + F.mse_loss(residual, q.detach())
            total = total + q
            residual = residual - q.detach()
            codes.append(idx.view(b, t))
        quantised = frames + (total - frames).detach()
        return quantised.view(b, t, d).permute(0, 2, 1), torch.stack(codes), commit


class SpectralLoss(torch.nn.Module):
    """Multi-resolution STFT (log-magnitude L1 + spectral convergence) and log-mel L1 losses."""

    def __init__(self, ffts=(256, 512, 1024, 2048), n_mels: int = 64):
        super().__init__()
        self.ffts = tuple(ffts)
        for n in self.ffts:
            self.register_buffer(f"win{n}", torch.hann_window(n), persistent=False)
        mel = librosa.filters.mel(sr=SAMPLING_RATE, n_fft=1024, n_mels=n_mels, fmin=30, fmax=8000)
        self.register_buffer("mel", torch.from_numpy(mel).float(), persistent=False)

    def _mag(self, x: torch.Tensor, n: int) -> torch.Tensor:
        spec = torch.stft(x, n, hop_length=n // 4, window=getattr(self, f"win{n}"), return_complex=True)
        return spec.abs().clamp_min(1e-5)

    def forward(self, ref: torch.Tensor, out: torch.Tensor) -> dict[str, torch.Tensor]:
        stft = ref.new_zeros(())
        conv = ref.new_zeros(())
        mel = ref.new_zeros(())
        for n in self.ffts:
            a, b = self._mag(ref, n), self._mag(out, n)
            stft = stft + F.l1_loss(b.log(), a.log())
            conv = conv + torch.linalg.norm(b - a) / torch.linalg.norm(a).clamp_min(1e-5)
            if n == 1024:
                mel_b, mel_a = (self.mel @ b.pow(2)).clamp_min(1e-7), (self.mel @ a.pow(2)).clamp_min(1e-7)
                mel = F.l1_loss(mel_b.log(), mel_a.log())
        k = len(self.ffts)
        return {"stft": stft / k, "sc": conv / k, "mel": mel}


PHASE1_WEIGHTS = {"stft": 1.0, "sc": 1.0, "mel": 1.0, "wav": 0.1, "commit": 0.25}
# Phase 2 drops spectral convergence and waveform L1: measured here, both reward a quieter output while the
# decoder cannot yet align phases (the output's RMS settled at 1/3 of the input's and the held-out mel loss
# stopped moving for 2,400 steps), whereas log-magnitude losses are indifferent to scale errors' sign.
PHASE2_WEIGHTS = {"stft": 1.0, "sc": 0.0, "mel": 1.0, "wav": 0.0, "commit": 0.25}


def codec_step(model, rvq: EmaRvq, losses: SpectralLoss, audio: torch.Tensor, train: bool = True,
               weights: dict[str, float] = PHASE1_WEIGHTS, frozen_encoder: bool = False):
    """One forward pass on ``audio`` ``[B, L]``: (total loss, dict of parts).

    ``frozen_encoder``: the encoder and codebooks run without gradients or codebook updates (phase 3), so
    there is no commitment loss to learn from and the parts leave it out.
    """
    with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_encoder):
        quantised, _, commit = rvq(model.encoder(audio[:, None, :]), train=train and not frozen_encoder)
    out = model.decoder(quantised)[:, 0, : audio.shape[1]]
    parts = losses(audio, out)
    parts["wav"] = F.l1_loss(out, audio)
    if not frozen_encoder:
        parts["commit"] = commit
    total = sum(w * parts[k] for k, w in weights.items() if w and k in parts)
    return total, parts


def random_crops(clips: np.ndarray, batch: int, length: int, rng: np.random.Generator) -> torch.Tensor:
    """``batch`` random crops of ``length`` samples from rows of ``clips`` ``[N, L]``, each peak-normalised."""
    rows = rng.integers(0, clips.shape[0], batch)
    starts = rng.integers(0, clips.shape[1] - length + 1, batch)
    out = np.stack([clips[r, s: s + length] for r, s in zip(rows, starts, strict=True)]).astype(np.float32)
    peak = np.abs(out).max(axis=1, keepdims=True)
    out = out / np.maximum(peak, 1e-3) * rng.uniform(0.5, 1.0, (batch, 1)).astype(np.float32)
    return torch.from_numpy(out)


@torch.no_grad()
def round_trip(model, audios: list[np.ndarray]) -> list[np.ndarray]:
    """Encode and decode each clip with the stock ``EncodecModel`` methods (the path users take)."""
    model.eval()
    out = []
    for audio in audios:
        x = torch.from_numpy(np.asarray(audio, dtype=np.float32))[None, None]
        enc = model.encode(x)
        y = model.decode(enc.audio_codes, enc.audio_scales)[0]
        out.append(y[0, 0, : len(audio)].float().numpy())
    return out


PHASE_CHECKPOINTS = {1: "codec_ckpt.safetensors", 2: "codec_phase2_ckpt.safetensors",
                     3: "codec_decoder_ckpt.safetensors"}


def train_codec(work, clips: np.ndarray, minutes: float, batch: int = 4, crop: int = SAMPLING_RATE,
                lr: float = 2e-3, seed: int = 0, log=print, checkpoint_every_s: float = 120.0,
                phase: int = 1):
    """Train (or resume) the codec in ``work/codec_ckpt.safetensors`` for ``minutes`` of wall time in all.

    The learning rate follows a cosine over the time budget, so a resumed run continues the same
    schedule. Phase 2 (``work/codec_phase2_ckpt.safetensors``) starts from phase 1's weights with
    a fresh optimiser and :data:`PHASE2_WEIGHTS`. Phase 3 (``work/codec_decoder_ckpt.safetensors``)
    starts from the last earlier phase and trains the decoder alone with phase 2's losses: the encoder
    and codebooks stay frozen, so every code, and a MusicGen trained on them, stays valid.
    Returns the model (eval mode) with its codebooks.
    """
    if phase not in PHASE_CHECKPOINTS:
        raise ValueError(f"train_codec: phase must be one of {sorted(PHASE_CHECKPOINTS)}, got {phase!r}")
    work = Path(work)
    ckpt = work / PHASE_CHECKPOINTS[phase]
    weights = PHASE1_WEIGHTS if phase == 1 else PHASE2_WEIGHTS
    model = new_codec(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.8, 0.99), weight_decay=0.0)
    if phase > 1 and not (ckpt.is_file() and ckpt.with_suffix(".json").is_file()):
        earlier = [work / PHASE_CHECKPOINTS[k] for k in range(phase - 1, 0, -1)]
        if not any(load_checkpoint(path, model, opt) is not None for path in earlier):
            raise FileNotFoundError(f"{earlier[-1]}: codec phase {phase} needs an earlier phase's checkpoint")
    trained = list(model.decoder.parameters()) if phase == 3 else list(model.parameters())
    if phase > 1:
        model.requires_grad_(phase != 3)
        model.decoder.requires_grad_(True)
        opt = torch.optim.AdamW(trained, lr=lr, betas=(0.8, 0.99), weight_decay=0.0)
    rvq = EmaRvq(model, seed=seed)
    losses = SpectralLoss()

    def step(rng: np.random.Generator):
        return codec_step(model, rvq, losses, random_crops(clips, batch, crop, rng), weights=weights,
                          frozen_encoder=phase == 3)

    info = train_for_budget(ckpt, model, opt, step, minutes, Schedule(lr, floor=0.1), seed=seed, max_grad_norm=5.0,
                            clip_params=trained, tag=f"codec phase {phase}", log=log,
                            checkpoint_every_s=checkpoint_every_s)
    return model.eval(), info

