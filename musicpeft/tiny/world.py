"""The micro-world: the music the shipped tiny models were trained on, and the concepts they never saw.

Why: no pretrained MusicGen, EnCodec or CLAP weights can be downloaded here, so the package trains
its own small ones (see :mod:`musicpeft.tiny.trained`). Their world is the music21 corpus rendered
with the General MIDI soundfont (:mod:`musicpeft.data.render`): the same scores played by
*base* instruments, which the codec and MusicGen learn, and by *concept* instruments, which they
never hear, so a PEFT method has something real to teach ("koto"). Pieces are split into train and
held-out sets by piece, so no score appears in both.

Captions come from metadata only: the instrument, a tempo word from the window's note-onset rate
(music21 writes 120 qpm for almost every score, so the marked tempo says nothing), the mode from a
Krumhansl-Schmuckler key estimate over the piece's notes and the era of the composer's corpus
folder, e.g. "a slow baroque piece in minor on koto".

Cost: converting a score to MIDI with music21 takes 0.05-5 s once per piece (cached on disk);
synthesising and caching a window then takes about 10-40 ms (see ``docs/tiny_models.md``).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..data.render import _corpus_root, corpus_pieces, is_mostly_silent, midi_bytes, render_score
from ..training.progress import progress_bar

log = logging.getLogger(__name__)

# Instruments the codec, MusicGen and CLAP learn (name -> General MIDI program, 0-based).
BASE_INSTRUMENTS: dict[str, int] = {
    "piano": 0,
    "organ": 19,
    "guitar": 24,
    "strings": 48,
    "choir": 52,
    "trumpet": 56,
    "clarinet": 71,
    "flute": 73,
}
# Instruments the codec and MusicGen never hear: the concepts a PEFT method must teach.
# (The CLAP judge and the instrument classifier do learn them, on train pieces only.)
CONCEPT_INSTRUMENTS: dict[str, int] = {
    "koto": 107,
    "shamisen": 106,
    "sitar": 104,
    "kalimba": 108,
    "bagpipe": 109,
    "banjo": 105,
    "shakuhachi": 77,
}
ALL_INSTRUMENTS: dict[str, int] = {**BASE_INSTRUMENTS, **CONCEPT_INSTRUMENTS}

# music21 corpus folder -> era word of the caption
FOLDER_ERAS: dict[str, str] = {
    "trecento": "medieval", "ciconia": "medieval", "luca": "medieval",
    "palestrina": "renaissance", "josquin": "renaissance", "monteverdi": "renaissance", "lusitano": "renaissance",
    "bach": "baroque", "handel": "baroque", "corelli": "baroque",
    "cpebach": "classical", "mozart": "classical", "haydn": "classical", "beethoven": "classical",
    "schumann_robert": "romantic", "schumann_clara": "romantic", "chopin": "romantic", "schubert": "romantic",
    "verdi": "romantic", "weber": "romantic", "beach": "romantic", "liliuokalani": "romantic",
    "ryansMammoth": "folk", "oneills1850": "folk", "airdsAirs": "folk",
    "miscFolk": "folk", "nottingham-dataset": "folk",
    "schoenberg": "modern", "webern": "modern", "joplin": "modern", "johnson_j_r": "modern",
}
# at most this many pieces per corpus folder, so Palestrina's 1,318 masses do not swamp the world
# (essenFolksong is left out: music21 takes 10-150 s to parse one of its song books)
FOLDER_CAPS: dict[str, int] = {
    "palestrina": 36, "ryansMammoth": 36, "bach": 48, "trecento": 20, "monteverdi": 14, "oneills1850": 8,
    "beethoven": 12,
}
ERAS: tuple[str, ...] = ("medieval", "renaissance", "baroque", "classical", "romantic", "folk", "modern")
TEMPO_WORDS: tuple[str, ...] = ("slow", "moderate", "fast")
MODES: tuple[str, ...] = ("major", "minor")
SPLITS: tuple[str, ...] = ("train", "heldout")
HELDOUT_FRACTION = 0.2
MAX_WINDOWS = 3  # windows per piece: offsets 0, 1, 2 clip lengths
_SLOW_BELOW, _FAST_ABOVE = 2.5, 4.5  # note onsets per second

# Krumhansl-Kessler key profiles (C major / C minor), for the mode of a piece
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def _check_instrument(instrument: str) -> int:
    if instrument not in ALL_INSTRUMENTS:
        raise ValueError(f"unknown world instrument {instrument!r}; expected one of {sorted(ALL_INSTRUMENTS)}")
    return ALL_INSTRUMENTS[instrument]


def caption_for(instrument: str, tempo: str | None = None, era: str | None = None, mode: str | None = None) -> str:
    """The caption of a world clip: "a slow baroque piece in minor on koto"; missing fields are left out."""
    _check_instrument(instrument)
    for name, value, allowed in (("tempo", tempo, TEMPO_WORDS), ("era", era, ERAS), ("mode", mode, MODES)):
        if value is not None and value not in allowed:
            raise ValueError(f"caption_for: {name}={value!r}, expected one of {allowed} or None")
    words = ["a"] + [w for w in (tempo, era) if w] + ["piece"]
    if mode:
        words += ["in", mode]
    return " ".join(words + ["on", instrument])


@lru_cache(maxsize=1)
def world_pieces() -> tuple[str, ...]:
    """Corpus-relative paths of the world's candidate pieces (deterministic, capped per folder)."""
    root = _corpus_root()
    by_folder: dict[str, list[str]] = {}
    for path in corpus_pieces():
        rel = Path(path).relative_to(root).as_posix()
        folder = rel.split("/", 1)[0]
        if folder in FOLDER_ERAS:
            by_folder.setdefault(folder, []).append(rel)
    chosen: list[str] = []
    for folder in sorted(by_folder):
        paths = by_folder[folder]
        cap = FOLDER_CAPS.get(folder, len(paths))
        if len(paths) > cap:  # evenly spaced, so a folder's sub-collections are all represented
            paths = [paths[int(i * len(paths) / cap)] for i in range(cap)]
        chosen += paths
    return tuple(chosen)


def split_pieces(seed: int = 0) -> dict[str, list[str]]:
    """Train / held-out split of :func:`world_pieces` by piece, stratified by era (20 % held out per era)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {"train": [], "heldout": []}
    by_era: dict[str, list[str]] = {}
    for rel in world_pieces():
        by_era.setdefault(piece_era(rel), []).append(rel)
    for era in ERAS:
        pieces = by_era.get(era, [])
        order = rng.permutation(len(pieces))
        n_held = max(1, int(round(HELDOUT_FRACTION * len(pieces)))) if len(pieces) > 1 else 0
        out["heldout"] += [pieces[i] for i in order[:n_held]]
        out["train"] += [pieces[i] for i in order[n_held:]]
    return {k: sorted(v) for k, v in out.items()}


def piece_era(piece: str) -> str:
    """Era word of a corpus-relative piece path (from its composer folder)."""
    folder = piece.split("/", 1)[0]
    if folder not in FOLDER_ERAS:
        raise ValueError(f"piece {piece!r}: corpus folder {folder!r} has no era; known: {sorted(FOLDER_ERAS)}")
    return FOLDER_ERAS[folder]


def _notes(piece: str) -> dict[str, np.ndarray]:
    """All notes of a piece in seconds: ``time``, ``duration``, ``pitch`` (drum tracks left out)."""
    import symusic

    score = symusic.Score.from_midi(midi_bytes(_corpus_root() / piece)).to("second")
    parts = [t.notes.numpy() for t in score.tracks if not t.is_drum and len(t.notes)]
    if not parts:
        return {k: np.zeros(0) for k in ("time", "duration", "pitch")}
    return {k: np.concatenate([p[k] for p in parts]).astype(np.float64) for k in ("time", "duration", "pitch")}


@lru_cache(maxsize=4096)
def piece_mode(piece: str) -> str:
    """"major" or "minor": the best of 24 Krumhansl-Kessler key profiles over the duration-weighted pitch classes."""
    notes = _notes(piece)
    hist = np.bincount(notes["pitch"].astype(int) % 12, weights=notes["duration"], minlength=12)
    if hist.sum() <= 0:
        return "major"
    best = max(
        ((np.corrcoef(hist, np.roll(profile, k))[0, 1], mode) for k in range(12)
         for profile, mode in ((_MAJOR, "major"), (_MINOR, "minor"))),
        key=lambda t: t[0],
    )
    return best[1]


def window_tempo(piece: str, offset: float, seconds: float) -> str:
    """Tempo word of a window from its note-onset rate (distinct onset times per second)."""
    times = _notes(piece)["time"]
    inside = times[(times >= offset) & (times < offset + seconds)]
    rate = len(np.unique(np.round(inside, 2))) / seconds
    return "slow" if rate < _SLOW_BELOW else "fast" if rate > _FAST_ABOVE else "moderate"


def piece_meta(piece: str, offset: float, seconds: float) -> dict[str, str]:
    """Caption metadata of one window: ``tempo``, ``era``, ``mode``."""
    return {"tempo": window_tempo(piece, offset, seconds), "era": piece_era(piece), "mode": piece_mode(piece)}


def world_clips(
    instrument: str,
    split: str,
    n: int | None,
    seconds: float,
    sampling_rate: int,
    seed: int = 0,
    max_windows: int = MAX_WINDOWS,
) -> list[dict]:
    """``n`` rendered clips of ``instrument`` from the ``split`` pieces, with captions (``None``: every usable one).

    Each clip is a dict with ``audio`` (float32 mono, exactly ``seconds`` long, peak 1), ``text``,
    ``instrument``, ``piece`` (corpus-relative path), ``offset`` (seconds) and the caption fields
    ``tempo``, ``era``, ``mode``. Pieces are visited in an order fixed by ``seed``: first window 0
    of every piece, then window 1, ... up to ``max_windows`` windows per piece. Pieces music21
    cannot convert, windows past a piece's end and mostly silent windows are skipped.
    """
    program = _check_instrument(instrument)
    if split not in SPLITS:
        raise ValueError(f"world_clips: split must be one of {SPLITS}, got {split!r}")
    if (n is not None and n < 0) or seconds <= 0 or sampling_rate <= 0 or max_windows < 1:
        raise ValueError(
            f"world_clips: need n >= 0, seconds > 0, sampling_rate > 0, max_windows >= 1; "
            f"got n={n}, seconds={seconds}, sampling_rate={sampling_rate}, max_windows={max_windows}"
        )
    pieces = split_pieces()[split]
    order = [pieces[i] for i in np.random.default_rng(seed).permutation(len(pieces))]
    length = int(round(seconds * sampling_rate))
    root = _corpus_root()
    bad: set[str] = set()
    clips: list[dict] = []
    # A first render converts each score with music21 (seconds to minutes a piece): show it.
    with progress_bar(total=n, desc=f"Rendering {instrument} ({split})", unit="clip") as bar:
        for window in range(max_windows):
            for piece in order:
                if len(clips) == n:
                    return clips
                if piece in bad:
                    continue
                offset = window * seconds
                try:
                    audio = render_score(root / piece, sample_rate=sampling_rate, program=program,
                                         max_seconds=seconds, offset_seconds=offset)
                except ValueError as e:
                    log.debug("world_clips: skipping %s", e)
                    bad.add(piece)
                    continue
                if len(audio) < length or is_mostly_silent(audio, sampling_rate):
                    continue
                meta = piece_meta(piece, offset, seconds)
                clips.append({"audio": audio[:length], "text": caption_for(instrument, **meta),
                              "instrument": instrument, "piece": piece, "offset": offset, **meta})
                bar.update(1)
    if n is not None and len(clips) < n:
        raise ValueError(
            f"world_clips: only {len(clips)} of n={n} usable {seconds} s {instrument} clips in the {split} split "
            f"({len(pieces)} pieces, {max_windows} windows each); ask for fewer or shorter clips"
        )
    return clips
