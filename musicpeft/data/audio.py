"""Small audio utilities: load, mono, resample, normalise, trim silence, fixed-length chunks.

Why separate functions: the two families want different pipelines (MusicGen: 32 kHz mono 30 s
chunks to EnCodec; AudioLDM2: 16 kHz mono, amplitude-normalised, optionally silence-trimmed,
fixed 163,840 samples), so each step is one function the caller chains. Arrays are 1-D float32
(mono) or ``(frames, channels)`` as soundfile returns them.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np

Remainder = Literal["drop", "pad", "keep"]


def load_audio(
    path: str | os.PathLike, sample_rate: int | None = None, mono: bool = True
) -> tuple[np.ndarray, int]:
    """Read an audio file with soundfile; optionally mix to mono and resample to ``sample_rate``.

    Returns ``(audio, rate)``: float32, 1-D when ``mono`` else ``(frames, channels)``. A file holding NaN or
    infinite samples (float WAV/FLAC can) is refused with a ``ValueError`` naming it.
    """
    import soundfile as sf

    try:
        audio, rate = sf.read(os.fspath(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError or TypeError
        raise ValueError(f"{os.fspath(path)}: cannot read audio ({type(e).__name__}: {e})") from e
    if audio.shape[0] == 0:
        raise ValueError(f"{os.fspath(path)}: the audio file holds no samples")
    bad = int(np.count_nonzero(~np.isfinite(audio)))
    if bad:  # one NaN would turn the whole clip NaN once resampled or normalised
        raise ValueError(f"{os.fspath(path)}: {bad} of {audio.size} samples are NaN or infinite; repair or remove "
                         "the file")
    if mono:
        audio = to_mono(audio)
    if sample_rate is not None and sample_rate != rate:
        audio = resample(audio, rate, sample_rate)
        rate = sample_rate
    return audio, int(rate)


MAX_CHANNELS = 8  # more "channels" than this in a 2-D clip means a (samples, channels) array was passed


def mix_to_mono(audio: np.ndarray, where: str = "audio") -> np.ndarray:
    """The one mono convention of the package for clips in memory: 1-D ``(samples,)`` is returned as is,
    ``(channels, samples)`` (what MusicGen stereo and AudioLDM2 generate) is averaged over channels.

    A 2-D array with more than ``MAX_CHANNELS`` rows is refused, naming ``where``: it is almost surely
    ``(samples, channels)`` and averaging it would silently mix time into channels.
    """
    x = np.asarray(audio)
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise ValueError(f"{where}: audio must be 1-D (samples) or 2-D (channels, samples), got shape {x.shape}")
    if x.shape[0] > MAX_CHANNELS:
        raise ValueError(f"{where}: 2-D audio must be (channels, samples) with at most {MAX_CHANNELS} channels, "
                         f"got shape {x.shape}; if it is (samples, channels), pass its transpose")
    return x.mean(axis=0).astype(x.dtype, copy=False)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average the channels of ``(frames, channels)`` audio as soundfile reads it; 1-D audio is returned as is."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim not in (1, 2):
        raise ValueError(f"to_mono: expected 1-D or (frames, channels) audio, got shape {audio.shape}")
    return audio if audio.ndim == 1 else audio.mean(axis=1).astype(np.float32)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int, dtype: type = np.float32) -> np.ndarray:
    """Resample along the frame axis with librosa's soxr (high quality); the metrics ask for float64."""
    import librosa

    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"resample: sample rates must be > 0, got {orig_sr} -> {target_sr}")
    audio = np.asarray(audio, dtype=dtype)
    if orig_sr == target_sr:
        return audio
    out = librosa.resample(audio, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq", axis=0)
    return out.astype(dtype)


def peak_normalize(audio: np.ndarray, peak: float = 1.0) -> np.ndarray:
    """Scale so the largest absolute sample equals ``peak``; silence stays silence."""
    audio = np.asarray(audio, dtype=np.float32)
    top = float(np.abs(audio).max()) if audio.size else 0.0
    return audio if top == 0.0 else (audio * (peak / top)).astype(np.float32)


def loudness_normalize(audio: np.ndarray, target_dbfs: float = -20.0) -> np.ndarray:
    """Scale to an RMS level of ``target_dbfs`` dB full scale, reduced further if it would clip."""
    audio = np.asarray(audio, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    if rms == 0.0:
        return audio
    gain = 10.0 ** (target_dbfs / 20.0) / rms
    top = float(np.abs(audio).max()) * gain
    if top > 1.0:
        gain /= top
    return (audio * gain).astype(np.float32)


def trim_silence(audio: np.ndarray, top_db: float = 40.0) -> np.ndarray:
    """Cut leading and trailing parts quieter than ``top_db`` below the peak (librosa.effects.trim)."""
    import librosa

    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0 or not np.any(audio):
        return audio[:0]
    trimmed, _ = librosa.effects.trim(audio.T if audio.ndim == 2 else audio, top_db=top_db)
    return (trimmed.T if audio.ndim == 2 else trimmed).astype(np.float32)


def chunk(
    audio: np.ndarray,
    sample_rate: int,
    chunk_seconds: float = 30.0,
    remainder: Remainder = "drop",
    min_remainder_seconds: float = 0.0,
) -> list[np.ndarray]:
    """Split audio into consecutive ``chunk_seconds`` pieces along the frame axis.

    The last partial piece is dropped (``"drop"``), zero-padded to full length (``"pad"``) or kept
    short (``"keep"``); with pad/keep a remainder shorter than ``min_remainder_seconds`` is dropped.
    """
    if chunk_seconds <= 0:
        raise ValueError(f"chunk: chunk_seconds must be > 0, got {chunk_seconds}")
    if remainder not in ("drop", "pad", "keep"):
        raise ValueError(f"chunk: remainder must be 'drop', 'pad' or 'keep', got {remainder!r}")
    audio = np.asarray(audio, dtype=np.float32)
    size = int(round(chunk_seconds * sample_rate))
    full = len(audio) // size
    pieces = [audio[i * size:(i + 1) * size] for i in range(full)]
    rest = audio[full * size:]
    if len(rest) and remainder != "drop" and len(rest) >= min_remainder_seconds * sample_rate:
        if remainder == "pad":
            pad = [(0, size - len(rest))] + [(0, 0)] * (audio.ndim - 1)
            rest = np.pad(rest, pad)
        pieces.append(rest)
    return pieces
