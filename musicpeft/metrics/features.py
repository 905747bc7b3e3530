"""Frame-level audio features for the KLD metric, computed batched with one shared STFT.

Why not call librosa per feature and per clip: librosa recomputes the STFT for every feature
(MFCC, chroma, centroid, bandwidth, rolloff) and runs clip by clip. Here one float64 ``torch.stft``
over a padded batch feeds all spectral features, and the zero-crossing rate comes from a cumulative
sum, so a batch costs about one STFT. The numbers are librosa's, frame for frame: the same
windows, padding, filter banks and formulas, checked against :func:`librosa_features` (the
straightforward per-clip librosa computation) in the tests.

Two librosa defaults are pinned on purpose and apply to both implementations:

* chroma uses ``tuning=0.0`` (A440 grid). librosa's default estimates the tuning per call, which
  makes a clip's chroma depend on what it is batched with and is not reproducible across sets.
* the MFCC's 80 dB floor (``power_to_db(top_db=80)``) is taken per clip. librosa on a
  multi-channel array takes it over the whole array, which would couple clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

FAMILIES = ("mfcc", "chroma", "spectral", "zcr")
SPECTRAL = ("spectral_centroid", "spectral_bandwidth", "spectral_rolloff")
_ZC_THRESHOLD = 1e-10  # librosa.zero_crossings' default: |x| <= this counts as zero


@dataclass(frozen=True)
class FeatureConfig:
    """Analysis parameters; the defaults are librosa's feature defaults at librosa's default rate.

    Args:
        sample_rate: every clip is resampled to this rate (Hz) before analysis, so sets rendered at
            different rates are compared on one frequency grid.
        n_fft: STFT window and frame length in samples (also the ZCR frame length).
        hop_length: samples between frames.
        n_mfcc: MFCC coefficients kept (from a DCT-II of the log-mel spectrogram).
        n_mels: mel bands (Slaney scale and norm) under the MFCC.
        n_chroma: chroma bins per octave.
        roll_percent: spectral roll-off energy fraction.
        top_db: dynamic range floor of the log-mel spectrogram, per clip.
    """

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mfcc: int = 20
    n_mels: int = 128
    n_chroma: int = 12
    roll_percent: float = 0.85
    top_db: float = 80.0

    def __post_init__(self):
        for name in ("sample_rate", "n_fft", "hop_length", "n_mfcc", "n_mels", "n_chroma"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value <= 0:
                raise ValueError(f"FeatureConfig.{name} must be a positive integer, got {value!r}")
        if self.n_fft % 2:
            raise ValueError(f"FeatureConfig.n_fft must be even (centred frames), got {self.n_fft}")
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"FeatureConfig.n_mfcc ({self.n_mfcc}) must be <= n_mels ({self.n_mels})")
        if not 0.0 < self.roll_percent < 1.0:
            raise ValueError(f"FeatureConfig.roll_percent must be in (0, 1), got {self.roll_percent}")

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Row names of the (dims, frames) matrices returned by :func:`extract_features`."""
        return (
            tuple(f"mfcc_{i}" for i in range(self.n_mfcc))
            + tuple(f"chroma_{i}" for i in range(self.n_chroma))
            + SPECTRAL
            + ("zcr",)
        )

    @property
    def family_rows(self) -> dict[str, slice]:
        """Which rows of the feature matrix belong to each feature family."""
        m, c = self.n_mfcc, self.n_chroma
        return {
            "mfcc": slice(0, m),
            "chroma": slice(m, m + c),
            "spectral": slice(m + c, m + c + 3),
            "zcr": slice(m + c + 3, m + c + 4),
        }

    def to_dict(self) -> dict:
        return asdict(self)


def n_frames(n_samples: int, config: FeatureConfig) -> int:
    """Frames of a centred STFT (librosa's ``center=True``) over ``n_samples`` samples."""
    return 1 + n_samples // config.hop_length


def _filters(config: FeatureConfig):
    """Mel, chroma and DCT-II (orthonormal) matrices and the FFT bin frequencies, in float64."""
    import librosa

    sr, n_fft = config.sample_rate, config.n_fft
    mel = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=config.n_mels, dtype=np.float64)
    chroma = librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=0.0, n_chroma=config.n_chroma, dtype=np.float64)
    n = config.n_mels
    k = np.arange(config.n_mfcc)[:, None]
    dct = np.sqrt(2.0 / n) * np.cos(np.pi * k * (2 * np.arange(n)[None, :] + 1) / (2 * n))
    dct[0] *= np.sqrt(0.5)
    freqs = librosa.fft_frequencies(sr=sr, n_fft=n_fft)
    return mel, chroma, dct, freqs


def _l1_normalize(s, torch):
    """librosa.util.normalize(norm=1, axis=-2): columns whose sum is below the dtype's tiny are left alone."""
    length = s.sum(dim=-2, keepdim=True)
    tiny = torch.finfo(s.dtype).tiny
    return s / torch.where(length < tiny, torch.ones_like(length), length)


def _batch_features(batch: list[np.ndarray], config: FeatureConfig, mats) -> list[np.ndarray]:
    """Features of clips of any lengths, zero-padded to one length; each clip keeps only its own frames."""
    import torch

    mel, chroma_fb, dct, freqs = (torch.from_numpy(m) for m in mats)
    lengths = [len(x) for x in batch]
    longest = max(lengths)
    # Zero padding reproduces librosa's constant-mode centre padding for every frame a clip owns.
    y = torch.zeros(len(batch), longest, dtype=torch.float64)
    # Edge padding (repeat the last sample) reproduces librosa's edge-mode padding for the ZCR.
    y_edge = torch.empty(len(batch), longest, dtype=torch.float64)
    for i, x in enumerate(batch):
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
        y[i, : len(x)] = t
        y_edge[i, : len(x)] = t
        y_edge[i, len(x):] = t[-1]

    window = torch.hann_window(config.n_fft, periodic=True, dtype=torch.float64)
    spec = torch.stft(
        y, n_fft=config.n_fft, hop_length=config.hop_length, window=window, center=True,
        pad_mode="constant", return_complex=True,
    )
    mag = spec.abs()  # (B, bins, frames)
    power = mag.square()

    # MFCC: Slaney mel of the power spectrum -> dB (floor per clip) -> orthonormal DCT-II.
    mel_power = torch.matmul(mel, power)
    db = 10.0 * torch.log10(torch.clamp(mel_power, min=1e-10))

    # Chroma: chroma filter bank on the power spectrum, each frame scaled to max 1 (librosa's inf-norm).
    raw_chroma = torch.matmul(chroma_fb, power)
    peak = raw_chroma.abs().amax(dim=-2, keepdim=True)
    tiny = torch.finfo(torch.float64).tiny
    chroma = raw_chroma / torch.where(peak < tiny, torch.ones_like(peak), peak)

    # Spectral shape on the magnitude spectrum.
    norm_mag = _l1_normalize(mag, torch)
    f = freqs[None, :, None]
    centroid = (f * norm_mag).sum(dim=-2, keepdim=True)
    bandwidth = (norm_mag * (f - centroid).abs().square()).sum(dim=-2, keepdim=True).sqrt()
    cumulative = torch.cumsum(mag, dim=-2)
    threshold = config.roll_percent * cumulative[:, -1:, :]
    first_bin = (cumulative < threshold).sum(dim=-2, keepdim=True)  # bins below the threshold form a prefix
    rolloff = freqs[first_bin.clamp(max=len(freqs) - 1)]

    # Zero-crossing rate: sign changes inside each centred frame, from a running count.
    half = config.n_fft // 2
    padded = torch.nn.functional.pad(y_edge[:, None, :], (half, half), mode="replicate")[:, 0, :]
    z = torch.where(padded.abs() <= _ZC_THRESHOLD, torch.zeros_like(padded), padded)
    negative = z < 0
    changes = (negative[:, 1:] != negative[:, :-1]).to(torch.float64)
    running = torch.nn.functional.pad(torch.cumsum(changes, dim=-1), (1, 0))  # running[k] = changes up to k

    out = []
    for i, n in enumerate(lengths):
        t = n_frames(n, config)
        db_i = db[i, :, :t]
        db_i = torch.maximum(db_i, db_i.max() - config.top_db) if config.top_db is not None else db_i
        mfcc_i = torch.matmul(dct, db_i)
        starts = torch.arange(t) * config.hop_length
        zcr_i = (running[i, starts + config.n_fft - 1] - running[i, starts]) / config.n_fft
        rows = [mfcc_i, chroma[i, :, :t], centroid[i, :, :t], bandwidth[i, :, :t], rolloff[i, :, :t], zcr_i[None]]
        out.append(torch.cat(rows, dim=0).numpy())
    return out


def extract_features(
    clips: Sequence[np.ndarray], config: FeatureConfig | None = None, batch_size: int = 8
) -> list[np.ndarray]:
    """Frame-level features of mono clips already at ``config.sample_rate``.

    Args:
        clips: 1-D float arrays, any lengths, at least one sample each.
        config: analysis parameters (:class:`FeatureConfig` defaults if None).
        batch_size: clips per STFT batch; memory is about ``batch_size * longest * 40`` bytes.

    Returns:
        One float64 array per clip, shaped ``(len(config.feature_names), n_frames(len(clip)))``;
        rows follow ``config.feature_names`` (MFCC, chroma, centroid, bandwidth, roll-off, ZCR).
    """
    config = config or FeatureConfig()
    if batch_size < 1:
        raise ValueError(f"extract_features: batch_size must be >= 1, got {batch_size}")
    for i, x in enumerate(clips):
        if np.ndim(x) != 1 or len(x) == 0:
            raise ValueError(f"extract_features: clip {i} must be a non-empty 1-D array, got shape {np.shape(x)}")
    mats = _filters(config)
    # Sort by length so each padded batch wastes little, then restore the caller's order.
    order = sorted(range(len(clips)), key=lambda i: len(clips[i]))
    results: list[np.ndarray | None] = [None] * len(clips)
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        for i, feats in zip(idx, _batch_features([clips[i] for i in idx], config, mats), strict=True):
            results[i] = feats
    return results  # type: ignore[return-value]


def librosa_features(clip: np.ndarray, config: FeatureConfig | None = None) -> np.ndarray:
    """The same features as :func:`extract_features` for one clip, the straightforward librosa way.

    This is the reference the batched implementation is tested against, and a readable
    definition of every row: one librosa call per feature, with librosa's defaults except
    ``tuning=0.0`` for chroma.
    """
    import librosa

    c = config or FeatureConfig()
    y = np.asarray(clip, dtype=np.float64)
    common = dict(sr=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length)
    mel = librosa.feature.melspectrogram(y=y, n_mels=c.n_mels, **common)
    rows = [
        librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=c.top_db), n_mfcc=c.n_mfcc),
        librosa.feature.chroma_stft(y=y, tuning=0.0, n_chroma=c.n_chroma, **common),
        librosa.feature.spectral_centroid(y=y, **common),
        librosa.feature.spectral_bandwidth(y=y, **common),
        librosa.feature.spectral_rolloff(y=y, roll_percent=c.roll_percent, **common),
        librosa.feature.zero_crossing_rate(y, frame_length=c.n_fft, hop_length=c.hop_length),
    ]
    return np.concatenate(rows, axis=0)
