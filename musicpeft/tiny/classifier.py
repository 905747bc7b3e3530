"""An instrument classifier for the micro-world: log-mel and MFCC statistics + multinomial logistic regression.

Why this shape: the concepts a PEFT method teaches here are timbres (koto, sitar, ...), and a
clip's timbre shows in the long-term statistics of its spectrum, which are cheap to compute and
do not depend on the clip's length. A linear model on standardised statistics trains in seconds,
is easy to audit, and stores as four plain tensors (``mean``, ``scale``, ``weight``, ``bias``) in
safetensors plus a JSON file with the labels and feature settings: loading never unpickles.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..io import atomic_write, atomic_write_text

FEATURE_RATE = 16000
N_FFT = 1024
HOP = 256
N_MELS = 64
N_MFCC = 20
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def clip_features(audio: np.ndarray, sampling_rate: int) -> np.ndarray:
    """Length-independent timbre statistics of one mono clip (float32 vector, see :func:`feature_names`).

    The clip is resampled to 16 kHz and peak-normalised first, so loudness and rate do not leak
    into the features: per-band mean and standard deviation of the log-mel spectrogram, of the
    MFCCs and of their deltas, plus spectral flatness and onset-strength statistics.
    """
    import librosa

    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"clip_features: expected a non-empty 1-D (mono) clip, got shape {x.shape}")
    if sampling_rate != FEATURE_RATE:
        x = librosa.resample(x, orig_sr=sampling_rate, target_sr=FEATURE_RATE).astype(np.float32)
    if x.size < N_FFT:
        x = np.pad(x, (0, N_FFT - x.size))
    peak = float(np.abs(x).max())
    if peak > 0:
        x = x / peak
    power = np.abs(librosa.stft(x, n_fft=N_FFT, hop_length=HOP)) ** 2
    mel = librosa.feature.melspectrogram(S=power, sr=FEATURE_RATE, n_mels=N_MELS, fmin=30, fmax=8000)
    logmel = np.log(mel + 1e-6)
    mfcc = librosa.feature.mfcc(S=logmel, n_mfcc=N_MFCC)
    delta = np.diff(mfcc, axis=1) if mfcc.shape[1] > 1 else np.zeros_like(mfcc)
    flat = librosa.feature.spectral_flatness(S=np.sqrt(power))[0]
    onset = librosa.onset.onset_strength(S=logmel, sr=FEATURE_RATE)
    parts = [logmel.mean(1), logmel.std(1), mfcc.mean(1), mfcc.std(1), np.abs(delta).mean(1), delta.std(1),
             [np.log(flat.mean() + 1e-8), flat.std(), onset.mean(), onset.std()]]
    return np.concatenate([np.asarray(p, dtype=np.float32).ravel() for p in parts])


def feature_dim() -> int:
    return 2 * N_MELS + 4 * N_MFCC + 4


class InstrumentClassifier:
    """Predicts which world instrument plays a clip. ``labels`` are instrument names (see :mod:`.world`)."""

    def __init__(self, labels: Sequence[str], mean: np.ndarray, scale: np.ndarray, weight: np.ndarray,
                 bias: np.ndarray):
        d, k = feature_dim(), len(labels)
        shapes = {"mean": (mean.shape, (d,)), "scale": (scale.shape, (d,)), "weight": (weight.shape, (k, d)),
                  "bias": (bias.shape, (k,))}
        for name, (got, want) in shapes.items():
            if tuple(got) != want:
                raise ValueError(f"InstrumentClassifier: {name} has shape {tuple(got)}, expected {want}")
        self.labels = list(labels)
        self.mean, self.scale = mean.astype(np.float32), scale.astype(np.float32)
        self.weight, self.bias = weight.astype(np.float32), bias.astype(np.float32)

    def features(self, audios: Sequence[np.ndarray], sampling_rate: int) -> np.ndarray:
        return np.stack([clip_features(a, sampling_rate) for a in audios])

    def logits_of_features(self, feats: np.ndarray) -> np.ndarray:
        return ((feats - self.mean) / self.scale) @ self.weight.T + self.bias

    def predict_proba(self, audios: Sequence[np.ndarray], sampling_rate: int) -> np.ndarray:
        """``[n_clips, n_labels]`` class probabilities (rows sum to 1), columns in ``labels`` order."""
        if len(audios) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        logits = self.logits_of_features(self.features(audios, sampling_rate))
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict(self, audios: Sequence[np.ndarray], sampling_rate: int) -> list[str]:
        """The most probable instrument name of each clip."""
        return [self.labels[i] for i in self.predict_proba(audios, sampling_rate).argmax(axis=1)]

    def save(self, folder: str | os.PathLike) -> None:
        """Write ``model.safetensors`` + ``config.json`` into ``folder`` (each atomically)."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        tensors = {"mean": self.mean, "scale": self.scale, "weight": self.weight, "bias": self.bias}
        atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp))
        config = {"labels": self.labels, "feature_rate": FEATURE_RATE, "n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS,
                  "n_mfcc": N_MFCC, "feature_dim": feature_dim()}
        atomic_write_text(folder / CONFIG_FILE, json.dumps(config, indent=2))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> InstrumentClassifier:
        """Read a classifier written by :meth:`save` (safetensors + JSON only)."""
        from safetensors.numpy import load_file

        folder = Path(folder)
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name}: instrument classifier file missing")
        config = json.loads((folder / CONFIG_FILE).read_text())
        want = {"feature_rate": FEATURE_RATE, "n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS, "n_mfcc": N_MFCC}
        for key, value in want.items():
            if config.get(key) != value:
                raise ValueError(f"{folder / CONFIG_FILE}: {key}={config.get(key)!r}, this code computes {value}")
        t = load_file(str(folder / WEIGHTS_FILE))
        return cls(config["labels"], t["mean"], t["scale"], t["weight"], t["bias"])


def fit_classifier(features: np.ndarray, labels: Sequence[str], label_names: Sequence[str],
                   weight_decay: float = 1e-3, steps: int = 300, seed: int = 0) -> InstrumentClassifier:
    """Fit multinomial logistic regression (L-BFGS, L2 penalty) on standardised features."""
    import torch

    if len(features) != len(labels):
        raise ValueError(f"fit_classifier: {len(features)} feature rows but {len(labels)} labels")
    index = {name: i for i, name in enumerate(label_names)}
    y = torch.tensor([index[lab] for lab in labels])
    mean = features.mean(0)
    scale = features.std(0) + 1e-6
    x = torch.from_numpy(((features - mean) / scale).astype(np.float32))
    torch.manual_seed(seed)
    lin = torch.nn.Linear(x.shape[1], len(label_names))
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(x), y) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return InstrumentClassifier(label_names, mean, scale, lin.weight.detach().numpy(), lin.bias.detach().numpy())
