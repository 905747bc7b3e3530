"""Data: rendered corpus audio, the soundfont repair, audio utilities, captions, datasets."""

from __future__ import annotations

import numpy as np
import pytest

from musicpeft.data import render

SR = 16000


def _one_note_midi(program: int, pitch: int = 69, seconds: float = 1.0) -> bytes:
    import symusic

    score = symusic.Score(480)
    score.tempos.append(symusic.Tempo(0, 120))
    track = symusic.Track(program=program, is_drum=False)
    track.notes.append(symusic.Note(0, int(480 * 2 * seconds), pitch, 100))
    score.tracks.append(track)
    return score.dumps_midi()


def _spectrum(audio: np.ndarray, n_fft: int = 2048) -> np.ndarray:
    frames = audio[: len(audio) // n_fft * n_fft].reshape(-1, n_fft) * np.hanning(n_fft)
    mag = np.abs(np.fft.rfft(frames, axis=1)).mean(axis=0)
    return mag / np.linalg.norm(mag)


def _fundamental(audio: np.ndarray, sr: int) -> float:
    import librosa

    return float(np.median(librosa.yin(audio, fmin=200, fmax=900, sr=sr, frame_length=2048)))


def test_corpus_pieces_sorted_filtered_and_limited():
    pieces = render.corpus_pieces()
    assert len(pieces) > 2500 and pieces == sorted(pieces)
    bach = render.corpus_pieces(limit=5, composer="Bach")
    assert len(bach) == 5 and all("/bach/" in p for p in bach)
    with pytest.raises(ValueError, match="composer='nobody'"):
        render.corpus_pieces(composer="nobody")


def test_render_clips_exact_length_loud_and_deterministic():
    clips = render.render_clips(3, 2.0, sample_rate=SR, seed=1)
    assert len(clips) == 3
    for clip in clips:
        assert clip.dtype == np.float32 and clip.shape == (2 * SR,)
        assert np.abs(clip).max() == pytest.approx(1.0)
        assert np.sqrt(np.mean(clip**2)) > 0.02
        assert not render.is_mostly_silent(clip, SR)
    assert not np.array_equal(clips[0], clips[1])  # different pieces
    again = render.render_clips(3, 2.0, sample_rate=SR, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(clips, again, strict=True))


def test_programs_change_the_spectrum_not_the_length():
    piece = render.corpus_pieces(composer="bach", limit=1)[0]
    spectra = {}
    for program in (0, 40, 73):
        audio = render.render_score(piece, sample_rate=SR, program=program, max_seconds=3.0)
        assert audio.shape == (3 * SR,)
        spectra[program] = _spectrum(audio)
    # same notes, different timbre: spectra clearly differ pairwise
    for a, b in ((0, 40), (0, 73), (40, 73)):
        assert float(spectra[a] @ spectra[b]) < 0.95, (a, b)


@pytest.mark.parametrize("program", [0, 40, 106])
def test_repaired_soundfont_plays_in_tune(program):
    # stock symusic + TimGM6mb plays these programs several semitones off (ignored root-key overrides)
    audio = render.render_score(_one_note_midi(program), sample_rate=SR)
    f0 = _fundamental(audio[: int(0.8 * SR)], SR)
    assert abs(12 * np.log2(f0 / 440.0)) < 0.7, f0


def test_render_cache_returns_identical_array_without_resynthesis(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSICPEFT_CACHE", str(tmp_path))
    midi = _one_note_midi(73, pitch=72)
    first = render.render_score(midi, sample_rate=SR, program=40, max_seconds=0.5)
    files = list((tmp_path / "audio").rglob("*.npy"))
    assert len(files) == 1 and not list(tmp_path.rglob("*.tmp"))

    def no_synthesis(*args, **kwargs):
        raise AssertionError("cache miss: synthesised again")

    monkeypatch.setattr(render, "_synthesize", no_synthesis)
    second = render.render_score(midi, sample_rate=SR, program=40, max_seconds=0.5)
    assert np.array_equal(first, second) and second.dtype == np.float32
    with pytest.raises(AssertionError, match="cache miss"):
        render.render_score(midi, sample_rate=SR, program=41, max_seconds=0.5)  # other program: new key


def test_render_score_window_and_argument_errors():
    midi = _one_note_midi(0, seconds=1.0)
    tail = render.render_score(midi, sample_rate=SR, offset_seconds=0.5)
    assert abs(len(tail) - SR // 2) < SR // 50
    with pytest.raises(ValueError, match="program must be"):
        render.render_score(midi, sample_rate=SR, program=128)
    with pytest.raises(FileNotFoundError, match="no_such.mxl"):
        render.render_score("/nonexistent/no_such.mxl", sample_rate=SR)


def test_render_clips_reports_when_too_few_pieces():
    with pytest.raises(ValueError, match="only .* usable"):
        render.render_clips(1, 10_000.0, sample_rate=SR, composer="beach")
