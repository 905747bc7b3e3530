"""Frame-level audio features for the KLD metric: librosa's features, computed for a batch of clips at once.

Called per feature and per clip, librosa recomputes the STFT for every feature (MFCC, chroma, centroid,
bandwidth, roll-off) and runs clip by clip. Here the clips of a batch are stacked into one float64 array,
one ``librosa.stft`` feeds every spectral feature (librosa's feature functions take a precomputed
spectrogram and work on stacks), and only what librosa cannot do for a stack is done here: padding
ragged clips so each keeps exactly the frames a per-clip call gives it, and the per-clip MFCC floor.
The numbers are checked against :func:`librosa_features` (the straightforward per-clip librosa
computation) in the tests.

Two librosa defaults are pinned on purpose and apply to both implementations:

* chroma uses ``tuning=0.0`` (A440 grid). librosa's default estimates the tuning per call, which
  makes a clip's chroma depend on what it is batched with and is not reproducible across sets.
* the MFCC's 80 dB floor (``power_to_db(top_db=80)``) is taken per clip. librosa on a
  multi-channel array takes it over the whole array, which would couple clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import librosa
import numpy as np

FAMILIES = ("mfcc", "chroma", "spectral", "zcr")
SPECTRAL = ("spectral_centroid", "spectral_bandwidth", "spectral_rolloff")


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


def _batch_features(batch: list[np.ndarray], config: FeatureConfig) -> list[np.ndarray]:
    """Features of clips of any lengths from librosa's multi-channel calls over one stack of padded clips.

    librosa analyses a stack of equal-length signals in one call, so ragged clips are padded to the longest
    and each keeps only its own frames. Zero padding is what librosa's centred STFT pads a lone clip with,
    so every frame a clip owns sees the same samples as in a per-clip call; the ZCR's frames pad by repeating
    the edge sample, so its stack repeats each clip's last sample instead. What librosa cannot do for a
    stack is done per clip: the trim to its own frames and the MFCC's 80 dB floor.
    """
    c = config
    y = np.zeros((len(batch), max(len(x) for x in batch)), dtype=np.float64)
    y_edge = np.empty_like(y)
    for i, x in enumerate(batch):
        y[i, : len(x)] = y_edge[i, : len(x)] = x
        y_edge[i, len(x) :] = x[-1]

    common = dict(sr=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length)
    magnitude = np.abs(librosa.stft(y, n_fft=c.n_fft, hop_length=c.hop_length))  # one STFT for every feature
    power = magnitude**2
    mel = librosa.feature.melspectrogram(S=power, n_mels=c.n_mels, **common)
    stacked = np.concatenate(
        [
            librosa.feature.chroma_stft(S=power, tuning=0.0, n_chroma=c.n_chroma, **common),
            librosa.feature.spectral_centroid(S=magnitude, **common),
            librosa.feature.spectral_bandwidth(S=magnitude, **common),
            librosa.feature.spectral_rolloff(S=magnitude, roll_percent=c.roll_percent, **common),
            librosa.feature.zero_crossing_rate(y_edge, frame_length=c.n_fft, hop_length=c.hop_length),
        ],
        axis=-2,
    )
    out = []
    for i, x in enumerate(batch):
        frames = n_frames(len(x), c)
        mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel[i, :, :frames], top_db=c.top_db), n_mfcc=c.n_mfcc)
        out.append(np.concatenate([mfcc, stacked[i, :, :frames]], axis=0))
    return out


def extract_features(
    clips: Sequence[np.ndarray], config: FeatureConfig | None = None, batch_size: int = 8
) -> list[np.ndarray]:
    """Frame-level features of mono clips already at ``config.sample_rate``.

    Args:
        clips: 1-D float arrays, any lengths, at least one sample each.
        config: analysis parameters (:class:`FeatureConfig` defaults if None).
        batch_size: clips per librosa call; memory is about ``batch_size * longest * 80`` bytes.

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
    # Sort by length so each padded batch wastes little, then restore the caller's order.
    order = sorted(range(len(clips)), key=lambda i: len(clips[i]))
    results: list[np.ndarray | None] = [None] * len(clips)
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        for i, feats in zip(idx, _batch_features([clips[i] for i in idx], config), strict=True):
            results[i] = feats
    return results  # type: ignore[return-value]


def librosa_features(clip: np.ndarray, config: FeatureConfig | None = None) -> np.ndarray:
    """The same features as :func:`extract_features` for one clip, the straightforward librosa way.

    This is the reference the batched implementation is tested against, and a readable
    definition of every row: one librosa call per feature, with librosa's defaults except
    ``tuning=0.0`` for chroma.
    """
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
