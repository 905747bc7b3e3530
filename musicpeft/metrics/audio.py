"""Turn the audio the metric is given into checked mono clips, and say exactly which ones are unusable.

Why a separate step: generated audio is where models fail visibly (NaNs from a diverged adapter,
silence, a DC offset), and a metric that silently averages a NaN, or silently drops a clip, hides
exactly what an evaluation is for. Every clip is checked here once; unusable ones are excluded
from every score and listed with the reason, by their index in the caller's list.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..data.audio import mix_to_mono
from ..data.audio import resample as resample_audio

DEFAULT_SILENCE_THRESHOLD = 1e-4  # peak |x| (about -80 dBFS) at or below which a clip counts as silent


@dataclass
class Clip:
    """One usable clip: its index in the caller's list, mono float64 samples and their sampling rate."""

    index: int
    samples: np.ndarray
    sampling_rate: int


@dataclass
class CheckedAudio:
    """The usable clips of a list, in order, and the excluded ones as ``{"index", "reason"}`` dicts."""

    clips: list[Clip] = field(default_factory=list)
    excluded: list[dict] = field(default_factory=list)
    total: int = 0

    @property
    def indices(self) -> list[int]:
        return [c.index for c in self.clips]


def as_float_audio(x, what: str) -> np.ndarray:
    """Samples as float64 in [-1, 1]: float arrays and tensors as they are, integer PCM scaled by its full range.

    Integer PCM is what ``soundfile.read(..., dtype="int16")``, ``scipy.io.wavfile.read`` or
    ``torchaudio.load(normalize=False)`` return; read as floats unscaled, an int16 clip would be 32768 times
    too loud and every feature and CLAP embedding would be wrong. Signed ``int8/int16/int32`` are divided
    by 2^(bits-1); unsigned ``uint8/uint16/uint32`` (8-bit WAV is unsigned) are centred first. int64 has
    no PCM convention (it is what ``np.array([0, 1])`` gives), so it is refused, as are bool and complex.
    """
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu()
        x = x.float().numpy() if x.is_floating_point() else x.numpy()
    x = np.asarray(x)
    kind, bits = x.dtype.kind, 8 * x.dtype.itemsize
    if kind in "iu" and bits <= 32:
        half = float(2 ** (bits - 1))
        return (x.astype(np.float64) - (half if kind == "u" else 0.0)) / half
    if kind in "iu" or kind in "bcOUS":
        raise ValueError(
            f"{what}: audio of dtype {x.dtype} is not supported; pass float samples in [-1, 1] or integer PCM "
            "(int16, int32, uint8, ...)"
        )
    return x.astype(np.float64)


def _to_numpy(x, what: str) -> np.ndarray:
    return as_float_audio(x, what)


def _rate(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{what}: sampling rate must be a positive number of Hz, got {value!r}")
    if not value > 0 or float(value) != int(value):
        raise ValueError(f"{what}: sampling rate must be a positive whole number of Hz, got {value!r}")
    return int(value)


def split_item(item, default_rate, what: str) -> tuple[np.ndarray, int]:
    """``(samples, rate)`` from an array (rate from ``default_rate``) or a ``{"array", "sampling_rate"}`` dict.

    Multi-channel input must be shaped (channels, samples) and is averaged to mono.
    """
    if isinstance(item, Mapping):
        if "array" not in item:
            raise ValueError(f"{what}: an audio dict needs an 'array' key (datasets' Audio format), got {list(item)}")
        samples, rate = item["array"], item.get("sampling_rate", default_rate)
    else:
        samples, rate = item, default_rate
    if rate is None:
        raise ValueError(
            f"{what} has no sampling rate: pass sampling_rate=... (Hz) or give the item as "
            "{'array': ..., 'sampling_rate': ...}"
        )
    rate = _rate(rate, what)
    x = _to_numpy(samples, what)
    return mix_to_mono(x, what), rate


def problem(x: np.ndarray, rate: int, min_samples_at: tuple[int, int], silence_threshold: float) -> str | None:
    """Why a mono clip cannot be scored, or None.

    ``min_samples_at = (n, analysis_rate)``: the clip must still have ``n`` samples once resampled
    to ``analysis_rate`` (one analysis frame).
    """
    n_nan, n_inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
    if n_nan or n_inf:
        return f"non-finite samples: {n_nan} NaN and {n_inf} Inf out of {x.size}"
    if x.size == 0:
        return "empty (0 samples)"
    need, analysis_rate = min_samples_at
    resampled = math.ceil(x.size * analysis_rate / rate)
    if resampled < need:
        return (
            f"shorter than one analysis frame: {x.size} samples at {rate} Hz is {resampled} at "
            f"{analysis_rate} Hz, fewer than n_fft={need}"
        )
    peak = float(np.max(np.abs(x)))
    if peak <= silence_threshold:
        return f"silent: peak |x| = {peak:.3g} <= silence_threshold {silence_threshold:g}"
    spread = float(np.ptp(x))
    if spread <= silence_threshold:
        return f"constant: every sample is {float(x[0]):.6g} (peak-to-peak {spread:.3g}), a DC offset with no sound"
    return None


def check_audio(
    items: Sequence,
    sampling_rate,
    what: str,
    min_samples_at: tuple[int, int],
    silence_threshold: float = DEFAULT_SILENCE_THRESHOLD,
    refuse_non_finite: bool = False,
) -> CheckedAudio:
    """Check every item of a list; structural problems raise, unusable audio is excluded with a reason.

    Args:
        items: arrays, tensors or ``{"array", "sampling_rate"}`` dicts.
        sampling_rate: the rate of items that carry none: one number, or one per item.
        what: the argument's name, used in messages ("predictions", "reference_audio").
        min_samples_at: ``(n_fft, analysis_rate)``: the shortest usable clip, see :func:`problem`.
        silence_threshold: peak level at or below which a clip is silent.
        refuse_non_finite: raise on a clip with NaN/Inf samples (reference audio: a damaged file, not a
            result to report) instead of excluding it.
    """
    if isinstance(items, np.ndarray) and items.ndim == 1:
        raise ValueError(f"{what} must be a list of clips, got one 1-D array; wrap a single clip in a list")
    n = len(items)
    if isinstance(sampling_rate, Sequence | np.ndarray) and not isinstance(sampling_rate, str):
        if len(sampling_rate) != n:
            raise ValueError(
                f"{what}: got {len(sampling_rate)} sampling rates for {n} clips; pass one rate or one per clip"
            )
        rates = list(sampling_rate)
    else:
        rates = [sampling_rate] * n
    out = CheckedAudio(total=n)
    for i, (item, rate) in enumerate(zip(items, rates, strict=True)):
        x, r = split_item(item, rate, f"{what}[{i}]")
        reason = problem(x, r, min_samples_at, silence_threshold)
        if refuse_non_finite and reason is not None and reason.startswith("non-finite"):
            raise ValueError(f"{what}[{i}]: {reason}; reference audio must be finite (repair or drop the clip)")
        if reason is None:
            out.clips.append(Clip(i, x, r))
        else:
            out.excluded.append({"index": i, "reason": reason})
    return out


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``x`` at ``target`` Hz in float64 (the data module's soxr_hq resampler); unchanged when the rates agree."""
    if rate == target:
        return x
    return resample_audio(x, rate, target, dtype=np.float64)
