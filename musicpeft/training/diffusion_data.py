"""Waveforms to the log-mel spectrograms AudioLDM2's VAE encodes, and batches of them from a dataset.

The mel must be the one the pipeline's own VAE decoder produces and its vocoder consumes, or the latents
the U-Net learns to denoise mean something else. AudioLDM2 was trained on AudioLDM's features
(`audioldm_train/utilities/data/dataset.py`, `mel_spectrogram_train`, with `preprocessing:` from the
AudioLDM / AudioLDM2 configs); the vocoder is the matching HiFi-GAN:

| parameter      | 16 kHz AudioLDM2 | where it comes from                                                     |
|----------------|------------------|-------------------------------------------------------------------------|
| sampling rate  | 16000            | `vocoder.config.sampling_rate` (config `preprocessing.audio`)            |
| hop            | 160              | product of `vocoder.config.upsample_rates` (5*4*2*2*2; config `stft`)   |
| n_mels         | 64               | `vocoder.config.model_in_dim` (config `mel.n_mel_channels`)             |
| n_fft, window  | 1024, Hann 1024  | AudioLDM configs `stft.filter_length` / `win_length` (not in the pipeline) |
| fmin, fmax     | 0, 8000 Hz       | AudioLDM configs `mel.mel_fmin` / `mel_fmax` (Nyquist)                   |
| padding        | reflect (n_fft - hop) / 2 each side, `center=False`: exactly len / hop frames |
| magnitude      | `|STFT|` (power 1), librosa Slaney mel filters (`librosa.filters.mel` defaults)  |
| compression    | natural log of `max(mel, 1e-5)` (HiFi-GAN `dynamic_range_compression`)          |
| layout         | `[batch, 1, frames, n_mels]`: time is the VAE's height, mel bins its width       |

The vocoder's `normalize_before` mean/scale, when set, is applied inside the vocoder: the VAE works on the
raw log-mel above. Waveform preparation follows the same source: mono, resampled to the vocoder's rate,
`x - mean(x)` then peak-normalised to 0.5 (`normalize_wav`), cropped or zero-padded to a fixed length
(AudioLDM: 10.24 s = 163,840 samples = 1024 frames, as in the fine-tuning paper).
For the 48 kHz members of the family (AudioLDM 48k / AudioSR: hop 480, 256 mels) the configs use
n_fft = window = 2048, fmin 20 Hz, fmax 24 kHz; other rates fall back to the smallest power of two
>= 4 x hop (which gives both of the above), fmin 0 and fmax = Nyquist.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.audio import mix_to_mono, resample

# sampling rate -> (n_fft, win_length, fmin, fmax) of AudioLDM-family training configs.
_KNOWN_STFT = {16000: (1024, 1024, 0.0, 8000.0), 48000: (2048, 2048, 20.0, 24000.0)}


@dataclass(frozen=True)
class MelConfig:
    """The STFT / mel parameters of one pipeline (see the module docstring for their sources)."""

    sampling_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 160
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float = 8000.0
    clip_value: float = 1e-5

    def __post_init__(self) -> None:
        if self.win_length > self.n_fft or self.hop_length >= self.n_fft:
            raise ValueError(
                f"MelConfig needs hop_length < n_fft and win_length <= n_fft, got hop_length={self.hop_length}, "
                f"win_length={self.win_length}, n_fft={self.n_fft}."
            )
        if not 0 <= self.fmin < self.fmax <= self.sampling_rate / 2:
            raise ValueError(
                f"MelConfig needs 0 <= fmin < fmax <= sampling_rate / 2, got fmin={self.fmin}, fmax={self.fmax}, "
                f"sampling_rate={self.sampling_rate}."
            )

    @classmethod
    def from_pipeline(cls, pipe: Any) -> MelConfig:
        """Read rate, hop and mel bins from the pipeline's vocoder; n_fft/window/band from AudioLDM's configs."""
        voc = pipe.vocoder.config
        rate, hop, n_mels = int(voc.sampling_rate), int(math.prod(voc.upsample_rates)), int(voc.model_in_dim)
        if rate in _KNOWN_STFT:
            n_fft, win, fmin, fmax = _KNOWN_STFT[rate]
        else:
            n_fft = win = 2 ** math.ceil(math.log2(4 * hop))
            fmin, fmax = 0.0, rate / 2
        return cls(rate, n_fft, win, hop, n_mels, fmin, fmax)


@functools.lru_cache(maxsize=8)
def _mel_basis(config: MelConfig) -> torch.Tensor:
    import librosa

    basis = librosa.filters.mel(
        sr=config.sampling_rate, n_fft=config.n_fft, n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax
    )
    return torch.from_numpy(basis).float()


def log_mel(waveform: torch.Tensor, config: MelConfig) -> torch.Tensor:
    """`[batch, samples]` waveforms at `config.sampling_rate` -> `[batch, 1, samples // hop, n_mels]` log-mels."""
    if waveform.dim() != 2:
        raise ValueError(f"log_mel expects waveforms shaped [batch, samples], got {tuple(waveform.shape)}.")
    pad = (config.n_fft - config.hop_length) // 2
    if waveform.shape[1] <= pad:
        raise ValueError(f"log_mel needs more than {pad} samples for its reflect padding, got {waveform.shape[1]}.")
    y = F.pad(waveform.float().unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    window = torch.hann_window(config.win_length, device=y.device)
    spec = torch.stft(
        y, config.n_fft, hop_length=config.hop_length, win_length=config.win_length, window=window,
        center=False, normalized=False, onesided=True, return_complex=True,
    ).abs()
    mel = torch.matmul(_mel_basis(config).to(y.device), spec)
    return torch.log(torch.clamp(mel, min=config.clip_value)).transpose(1, 2).unsqueeze(1)


def frame_samples(config: MelConfig, vae_scale_factor: int) -> int:
    """Samples in one VAE latent frame: the shortest clip AudioLDM2 can encode, and the length unit."""
    unit = config.hop_length * vae_scale_factor
    pad = (config.n_fft - config.hop_length) // 2
    return unit * max(1, math.ceil((pad + 1) / unit))


def normalize_waveform(audio: np.ndarray) -> np.ndarray:
    """AudioLDM's `normalize_wav`: remove the mean, then scale the peak to 0.5."""
    audio = audio - audio.mean()
    return (audio / (np.abs(audio).max() + 1e-8) * 0.5).astype(np.float32)


@dataclass
class AudioTextCollator:
    """Turns dataset rows (`audio`, `sampling_rate`, `text`) into `{"waveform": [B, N], "text": [...]}`.

    Each clip is made mono, resampled to the vocoder's rate, cropped (randomly when `random_crop`, else from
    the start) to `num_samples`, normalised (AudioLDM's `normalize_wav`, when `normalize`) and zero-padded.
    `num_samples=None` pads every batch to its longest clip instead. Lengths are whole VAE frames.
    """

    mel: MelConfig
    vae_scale_factor: int
    num_samples: int | None = None
    sampling_rate: int | None = None
    normalize: bool = True
    random_crop: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self.unit = frame_samples(self.mel, self.vae_scale_factor)
        if self.num_samples is not None:
            self.num_samples = math.ceil(self.num_samples / self.unit) * self.unit
        self._rng = np.random.default_rng(self.seed)

    def _clip(self, row: dict[str, Any]) -> np.ndarray:
        index = row.get("_index", "?")
        where = f"dataset item {index} (text {row.get('text')!r})"
        audio, rate = row["audio"], row.get("sampling_rate", self.sampling_rate)
        if isinstance(audio, dict):  # a decoded `datasets.Audio` value
            audio, rate = audio["array"], audio.get("sampling_rate", rate)
        if rate is None:
            raise ValueError(f"{where}: no sampling rate; add a `sampling_rate` column or pass a fixed rate.")
        audio = mix_to_mono(np.asarray(audio, dtype=np.float32), where)
        audio = resample(audio, int(rate), self.mel.sampling_rate)
        if len(audio) < self.unit:
            raise ValueError(
                f"{where} is too short: {len(audio)} samples at {self.mel.sampling_rate} Hz; AudioLDM2 needs at least "
                f"{self.unit} samples ({self.unit / self.mel.sampling_rate:.3f} s), one VAE latent frame "
                f"(hop {self.mel.hop_length} x VAE scale factor {self.vae_scale_factor})."
            )
        if self.num_samples is not None and len(audio) > self.num_samples:
            start = int(self._rng.integers(0, len(audio) - self.num_samples + 1)) if self.random_crop else 0
            audio = audio[start : start + self.num_samples]
        return normalize_waveform(audio) if self.normalize else audio.astype(np.float32)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        clips = [self._clip(row) for row in rows]
        length = self.num_samples or math.ceil(max(len(c) for c in clips) / self.unit) * self.unit
        batch = np.zeros((len(clips), length), dtype=np.float32)
        for i, clip in enumerate(clips):
            batch[i, : len(clip)] = clip
        return {"waveform": torch.from_numpy(batch), "text": [str(row["text"]) for row in rows]}


class IndexedDataset(torch.utils.data.Dataset):
    """A `datasets.Dataset` whose rows carry their index (for error messages), audio as numpy arrays."""

    def __init__(self, dataset: Any, sampling_rate: int | None = None) -> None:
        columns = set(dataset.column_names)
        missing = {"audio", "text"} - columns
        if missing:
            raise ValueError(f"The dataset lacks column(s) {sorted(missing)}; it has {sorted(columns)}.")
        if "sampling_rate" not in columns and sampling_rate is None:
            raise ValueError(
                "The dataset has no `sampling_rate` column; set DiffusionTrainingArguments.sampling_rate to the "
                "rate of its audio."
            )
        self.dataset = dataset.with_format("numpy", columns=["audio"], output_all_columns=True)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.dataset[int(index)], "_index": int(index)}
