"""Realistic test audio: real scores from the music21 corpus played by a General MIDI soundfont.

Why: the demo and the tests need music that has the structure of music (melody, harmony, rhythm,
timbre) without downloading anything. music21 ships ~3,000 scores, pretty_midi ships the General
MIDI soundfont ``TimGM6mb.sf2`` and symusic 0.5.8 synthesises MIDI with it. Overriding the GM
program gives "same piece, different instrument" sets, which is what a concept or style adapter
must tell apart.

symusic's synthesizer plays most of that soundfont out of tune (it ignores the instrument zones'
root-key overrides, see :mod:`musicpeft.data.soundfont`), so :func:`soundfont_path` returns a
repaired copy of it; the stock file is :func:`stock_soundfont_path`.

Converting a score to MIDI with music21 is the slow step (0.05-3 s a piece), synthesis is fast,
so both are cached on disk under ``$MUSICPEFT_CACHE`` (default ``~/.cache/musicpeft/render``):
``midi/`` holds the MIDI bytes (or the reason a piece cannot be converted), ``audio/`` the
rendered windows as ``.npy`` (no pickle), ``soundfont/`` the repaired soundfont. Every write goes
through :func:`musicpeft.io.atomic_write`, so parallel runs never see half a file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

import numpy as np

from ..io import atomic_write, atomic_write_bytes
from ..training.progress import progress_bar
from .soundfont import repair_soundfont

log = logging.getLogger(__name__)

CACHE_VERSION = "v1"
SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn", ".abc")
_SILENT_PEAK = 1e-4  # raw synth output below this everywhere counts as silence
_synths: dict[int, object] = {}
# errors that say nothing about the score: a later run may well succeed, so they are never cached
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, MemoryError, ImportError)


def cache_dir() -> Path:
    """The render cache directory: ``$MUSICPEFT_CACHE`` or ``~/.cache/musicpeft/render``."""
    env = os.environ.get("MUSICPEFT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "musicpeft" / "render"



def stock_soundfont_path() -> str:
    """Path of the General MIDI soundfont ``TimGM6mb.sf2`` that ships inside pretty_midi."""
    import pretty_midi

    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretty_midi's General MIDI soundfont is missing; reinstall pretty_midi")
    return str(path)


def soundfont_path() -> str:
    """Path of the soundfont to render with: ``TimGM6mb.sf2`` repaired for symusic (built once, cached)."""
    stock = Path(stock_soundfont_path())
    digest = hashlib.sha1(stock.read_bytes()).hexdigest()[:12]
    path = cache_dir() / "soundfont" / f"TimGM6mb-repaired-{CACHE_VERSION}-{digest}.sf2"
    if not path.is_file():
        atomic_write_bytes(path, repair_soundfont(stock.read_bytes(), str(stock)))
    return str(path)


def _corpus_root() -> Path:
    """music21's corpus folder, found without importing music21 (0.3 s) on the cached path."""
    spec = importlib.util.find_spec("music21")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("music21 is not installed; it provides the scores that render_clips plays")
    return Path(spec.origin).parent / "corpus"


def corpus_pieces(limit: int | None = None, composer: str | None = None) -> list[str]:
    """Paths of the music21 core-corpus scores, sorted; ``composer`` is a corpus folder ("bach")."""
    if limit is not None and limit < 0:
        raise ValueError(f"corpus_pieces: limit must be >= 0 or None, got {limit}")
    root = _corpus_root()
    paths = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in SCORE_SUFFIXES and p.is_file())
    if composer is not None:
        wanted = composer.lower()
        chosen = [p for p in paths if Path(p).relative_to(root).parts[0].lower() == wanted]
        if not chosen:
            known = sorted({Path(p).relative_to(root).parts[0] for p in paths})
            raise ValueError(f"corpus_pieces: no music21 corpus pieces for composer={composer!r}; known: {known}")
        paths = chosen
    return paths[:limit] if limit is not None else paths


def _piece_id(source: str | bytes | os.PathLike) -> str:
    """A stable cache key for a score path or MIDI bytes."""
    if isinstance(source, bytes):
        return "midi-" + hashlib.sha1(source).hexdigest()[:16]
    path = Path(source).resolve()
    try:
        rel = path.relative_to(_corpus_root().resolve())
        key = f"corpus:{rel.as_posix()}"
    except ValueError:
        st = path.stat()
        key = f"file:{path}:{st.st_size}:{st.st_mtime_ns}"
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)[:40]
    return f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:16]}"


def _score_to_midi(path: Path) -> bytes:
    """Convert a score file to MIDI bytes with music21 (first score of an opus)."""
    from music21 import converter, stream
    from music21.midi import translate

    parsed = converter.parse(str(path), forceSource=True)
    if isinstance(parsed, stream.Opus):
        if not parsed.scores:
            raise ValueError(f"{path}: the opus holds no scores")
        parsed = parsed.scores[0]
    return translate.music21ObjectToMidiFile(parsed).writestr()


def midi_bytes(score_path: str | os.PathLike) -> bytes:
    """MIDI bytes of a score (``.mid`` read as is, others converted with music21), cached on disk.

    A piece that music21 cannot convert raises ``ValueError`` naming it; the failure is cached too,
    so a batch run does not pay for it twice. Failures of the machine rather than the score
    (:data:`TRANSIENT_ERRORS`: I/O, memory, a missing package) propagate as they are and are not cached.
    """
    path = Path(score_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such score file")
    if path.suffix.lower() in (".mid", ".midi"):
        return path.read_bytes()
    base = cache_dir() / "midi" / CACHE_VERSION / _piece_id(path)
    ok, bad = base.with_suffix(".mid"), base.with_suffix(".error.txt")
    if ok.is_file():
        return ok.read_bytes()
    if bad.is_file():
        raise ValueError(f"{path}: music21 cannot convert this score to MIDI ({bad.read_text()})")
    try:
        data = _score_to_midi(path)
    except TRANSIENT_ERRORS:
        raise  # the machine's trouble (I/O, memory, a missing package), not the score's: never cached
    except Exception as e:  # music21 raises many types for a score it cannot convert: record and report it
        reason = f"{type(e).__name__}: {e}"
        atomic_write_bytes(bad, reason.encode())
        raise ValueError(f"{path}: music21 cannot convert this score to MIDI ({reason})") from e
    atomic_write_bytes(ok, data)
    return data


def _synth(sample_rate: int):
    import symusic

    if sample_rate not in _synths:
        _synths[sample_rate] = symusic.Synthesizer(soundfont_path(), sample_rate, 0)
    return _synths[sample_rate]


def _synthesize(midi: bytes, sample_rate: int, program: int | None) -> np.ndarray:
    """Raw mono synthesis of the whole piece (not normalised)."""
    import symusic

    score = symusic.Score.from_midi(midi)
    if program is not None:
        for track in score.tracks:
            track.program = program
            track.is_drum = False
    if score.note_num() == 0:
        return np.zeros(0, dtype=np.float32)
    return np.asarray(_synth(sample_rate).render(score, stereo=False), dtype=np.float32)[0]


def render_score(
    score_path_or_midi_bytes: str | os.PathLike | bytes,
    sample_rate: int = 32000,
    program: int | None = None,
    max_seconds: float | None = None,
    offset_seconds: float = 0.0,
) -> np.ndarray:
    """Render a score (music21-readable file, ``.mid`` file or MIDI bytes) to mono float32 audio.

    ``program`` (0-127) replaces every track's General MIDI instrument. The window starts at
    ``offset_seconds`` and lasts at most ``max_seconds`` (shorter when the piece ends first). The
    result is peak-normalised to 1.0; a window with no sound comes back as zeros, unscaled.
    """
    if sample_rate <= 0:
        raise ValueError(f"render_score: sample_rate must be > 0, got {sample_rate}")
    if program is not None and not 0 <= program <= 127:
        raise ValueError(f"render_score: program must be a General MIDI program 0-127 or None, got {program}")
    if offset_seconds < 0 or (max_seconds is not None and max_seconds <= 0):
        raise ValueError(
            f"render_score: need offset_seconds >= 0 and max_seconds > 0, got {offset_seconds}, {max_seconds}"
        )
    source = score_path_or_midi_bytes
    length = "all" if max_seconds is None else f"{float(max_seconds):g}"
    tag = f"p{'orig' if program is None else program}-sr{sample_rate}-o{float(offset_seconds):g}-m{length}"
    cached = cache_dir() / "audio" / CACHE_VERSION / _piece_id(source) / f"{tag}.npy"
    if cached.is_file():
        return np.load(cached, allow_pickle=False)
    midi = source if isinstance(source, bytes) else midi_bytes(source)
    audio = _synthesize(midi, sample_rate, program)
    start = int(round(offset_seconds * sample_rate))
    stop = None if max_seconds is None else start + int(round(max_seconds * sample_rate))
    audio = np.ascontiguousarray(audio[start:stop], dtype=np.float32)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > _SILENT_PEAK:
        audio = np.clip(audio / peak, -1.0, 1.0).astype(np.float32)
    else:
        audio = np.zeros_like(audio)
    atomic_write(cached, lambda tmp: _save_npy(tmp, audio))
    return audio


def _save_npy(tmp: str, audio: np.ndarray) -> None:
    with open(tmp, "wb") as f:
        np.save(f, audio, allow_pickle=False)


def is_mostly_silent(audio: np.ndarray, sample_rate: int, max_silent_fraction: float = 0.25) -> bool:
    """True when more than ``max_silent_fraction`` of 50 ms frames are 40 dB below the peak."""
    frame = max(1, int(0.05 * sample_rate))
    n = len(audio) // frame
    if n == 0:
        return True
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1))
    peak = float(np.abs(audio).max())
    if peak <= _SILENT_PEAK:
        return True
    return float(np.mean(rms < 0.01 * peak)) > max_silent_fraction


def render_clips(
    n: int,
    seconds: float,
    sample_rate: int = 32000,
    program: int | None = None,
    seed: int = 0,
    composer: str | None = None,
) -> list[np.ndarray]:
    """``n`` clips of exactly ``seconds`` seconds, each from the start of a different corpus piece.

    Pieces are visited in an order fixed by ``seed``; pieces music21 cannot convert, pieces
    shorter than ``seconds`` and clips that are mostly silent are skipped (logged at DEBUG). Asking for
    more clips than the corpus has pieces fails at once, and the search stops as soon as the pieces left
    cannot make up the number.
    """
    if n < 0 or seconds <= 0:
        raise ValueError(f"render_clips: need n >= 0 and seconds > 0, got n={n}, seconds={seconds}")
    pieces = corpus_pieces(composer=composer)
    if n > len(pieces):
        raise ValueError(f"render_clips: n={n} clips asked for, but the music21 corpus holds only {len(pieces)} "
                         f"pieces (composer={composer!r}), one clip each; ask for at most {len(pieces)}")
    order = np.random.default_rng(seed).permutation(len(pieces))
    length = int(round(seconds * sample_rate))
    clips: list[np.ndarray] = []
    tried = 0
    # A first render converts each score with music21 (seconds to minutes a piece): show it.
    bar = progress_bar(total=n, desc=f"Rendering (GM program {program})", unit="clip")
    for i in order:
        if len(clips) == n or len(clips) + len(order) - tried < n:
            break  # done, or too few pieces left to reach n even if all of them work: fail now
        tried += 1
        try:
            audio = render_score(pieces[i], sample_rate=sample_rate, program=program, max_seconds=seconds)
        except ValueError as e:
            log.debug("render_clips: skipping %s", e)
            continue
        if len(audio) < length or is_mostly_silent(audio, sample_rate):
            log.debug("render_clips: skipping %s (short or silent)", pieces[i])
            continue
        clips.append(audio[:length])
        bar.update(1)
    bar.close()
    if len(clips) < n:
        raise ValueError(
            f"render_clips: only {len(clips)} of n={n} usable {seconds} s clips in {tried} corpus pieces "
            f"(composer={composer!r}); ask for fewer or shorter clips"
        )
    return clips
