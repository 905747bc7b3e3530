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
    clips = render.render_clips(3, 2.0, sample_rate=SR, seed=0)
    assert len(clips) == 3
    for clip in clips:
        assert clip.dtype == np.float32 and clip.shape == (2 * SR,)
        assert np.abs(clip).max() == pytest.approx(1.0)
        assert np.sqrt(np.mean(clip**2)) > 0.02
        assert not render.is_mostly_silent(clip, SR)
    assert not np.array_equal(clips[0], clips[1])  # different pieces
    again = render.render_clips(3, 2.0, sample_rate=SR, seed=0)
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


def test_more_clips_than_pieces_fails_before_rendering_anything(monkeypatch):
    from musicpeft.data import make_rendered_dataset

    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered a piece although the request cannot be met")

    monkeypatch.setattr(render, "render_score", no_rendering)
    available = len(render.corpus_pieces())
    with pytest.raises(ValueError, match=rf"n=100000 clips asked for, but .* only {available} pieces"):
        make_rendered_dataset(100000, 1.0, SR)
    beach = len(render.corpus_pieces(composer="beach"))
    with pytest.raises(ValueError, match=f"only {beach} pieces"):
        render.render_clips(beach + 1, 1.0, sample_rate=SR, composer="beach")


def test_only_real_conversion_failures_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSICPEFT_CACHE", str(tmp_path / "cache"))
    piece = render.corpus_pieces(composer="bach", limit=1)[0]
    calls = []

    def flaky(path):
        calls.append(path)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(render, "_score_to_midi", flaky)
    with pytest.raises(OSError, match="No space left"):
        render.midi_bytes(piece)
    assert not list((tmp_path / "cache").rglob("*.error.txt"))  # a full disk says nothing about the score
    monkeypatch.setattr(render, "_score_to_midi", lambda path: b"MThd-fake")
    assert render.midi_bytes(piece) == b"MThd-fake"  # the next run converts it

    other = render.corpus_pieces(composer="bach", limit=2)[1]

    def unconvertible(path):
        calls.append(path)
        raise IndexError("music21: no measures")

    monkeypatch.setattr(render, "_score_to_midi", unconvertible)
    for _ in range(2):
        with pytest.raises(ValueError, match="cannot convert this score to MIDI.*IndexError: music21: no measures"):
            render.midi_bytes(other)
    assert [str(c) for c in calls].count(other) == 1  # the real failure was cached
    assert len(list((tmp_path / "cache").rglob("*.error.txt"))) == 1


# --- audio utilities -------------------------------------------------------------------------

def _write_wav(path, audio, sr):
    import soundfile as sf

    sf.write(str(path), audio, sr)
    return path


def test_load_audio_to_mono_and_resampled(tmp_path):
    from musicpeft.data import load_audio

    t = np.arange(22050) / 22050
    left, right = np.sin(2 * np.pi * 440 * t), np.zeros_like(t)
    path = _write_wav(tmp_path / "stereo.wav", np.stack([left, right], axis=1).astype(np.float32), 22050)
    stereo, rate = load_audio(path, mono=False)
    assert rate == 22050 and stereo.shape == (22050, 2)
    mono, rate = load_audio(path, sample_rate=SR)
    assert rate == SR and mono.ndim == 1 and mono.dtype == np.float32
    assert abs(len(mono) - SR) <= 1  # one second either way
    assert np.abs(mono).max() == pytest.approx(0.5, abs=0.02)  # mean of a full-scale and a silent channel
    spectrum = np.abs(np.fft.rfft(mono))
    assert np.fft.rfftfreq(len(mono), 1 / SR)[spectrum.argmax()] == pytest.approx(440, abs=2)


def test_load_audio_names_the_unreadable_file(tmp_path):
    from musicpeft.data import load_audio

    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(ValueError, match="broken.wav: cannot read audio"):
        load_audio(bad)
    with pytest.raises(ValueError, match="missing.flac"):
        load_audio(tmp_path / "missing.flac")


@pytest.mark.parametrize(
    "remainder, expected", [("drop", [30, 30]), ("pad", [30, 30, 30]), ("keep", [30, 30, 12])]
)
def test_chunk_lengths(remainder, expected):
    from musicpeft.data import chunk

    audio = np.ones(72 * 100, dtype=np.float32)  # 72 s at 100 Hz
    pieces = chunk(audio, 100, chunk_seconds=30.0, remainder=remainder)
    assert [len(p) / 100 for p in pieces] == expected
    if remainder == "pad":
        assert pieces[-1][:1200].min() == 1.0 and not pieces[-1][1200:].any()
    assert chunk(audio, 100, 30.0, "keep", min_remainder_seconds=15.0)[-1].shape == (3000,)
    with pytest.raises(ValueError, match="remainder must be"):
        chunk(audio, 100, 30.0, "wrap")


def test_normalisation_and_trimming():
    from musicpeft.data import loudness_normalize, peak_normalize, to_mono, trim_silence

    x = (0.1 * np.sin(np.linspace(0, 200, SR))).astype(np.float32)
    assert np.abs(peak_normalize(x, 0.5)).max() == pytest.approx(0.5)
    y = loudness_normalize(x, target_dbfs=-20.0)
    assert 20 * np.log10(np.sqrt(np.mean(y**2))) == pytest.approx(-20.0, abs=0.01)
    assert np.abs(loudness_normalize(x, target_dbfs=0.0)).max() <= 1.0  # would clip: limited instead
    assert not peak_normalize(np.zeros(10, np.float32)).any()
    padded = np.concatenate([np.zeros(SR, np.float32), x, np.zeros(SR, np.float32)])
    trimmed = trim_silence(padded)
    assert SR <= len(trimmed) < SR + 2048 + 512  # librosa trims in 2048-sample frames, 512 apart
    assert np.sum(trimmed**2) == pytest.approx(np.sum(x**2), rel=1e-6)
    assert to_mono(np.stack([x, -x], axis=1)).max() == 0.0


# --- captions --------------------------------------------------------------------------------

def test_caption_uses_description_then_musical_fields_only():
    from musicpeft.data import caption_from_metadata

    record = {
        "key": "C major", "artist": "Koto Ensemble", "sample_rate": 32000, "file_extension": "wav",
        "description": "A calm koto piece.", "duration": 30.0, "bpm": 72.0, "genre": "traditional",
        "title": "", "instrument": "koto", "moods": ["calm", "serene"], "path": "a/b.wav",
    }
    text = caption_from_metadata(record)
    assert text == (
        "A calm koto piece. artist: Koto Ensemble. genre: traditional. instrument: koto. "
        "moods: calm, serene. key: C major. bpm: 72"
    )
    assert "32000" not in text and "wav" not in text and "title" not in text
    assert caption_from_metadata({"genre": "jazz", "bpm": None}) == "genre: jazz"


def test_caption_error_names_the_record():
    from musicpeft.data import caption_from_metadata

    with pytest.raises(ValueError, match="path='songs/x.wav'"):
        caption_from_metadata({"path": "songs/x.wav", "sample_rate": 32000, "description": " "})


# --- datasets --------------------------------------------------------------------------------

def test_load_audio_folder_chunks_and_captions(tmp_path):
    import json

    from musicpeft.data import load_audio_folder

    noise = np.random.default_rng(0).uniform(-0.3, 0.3, size=(int(2.5 * 8000), 2)).astype(np.float32)
    _write_wav(tmp_path / "one.wav", noise, 8000)
    _write_wav(tmp_path / "two.flac", noise[:8000], 8000)
    records = [
        {"path": "one.wav", "description": "noisy drone", "genre": "ambient"},
        {"path": "two", "file_extension": "flac", "instrument": "synth"},
    ]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    ds = load_audio_folder(tmp_path, sample_rate=SR, chunk_seconds=1.0)
    assert ds.column_names == ["audio", "text"] and len(ds) == 3  # 2 chunks + 1 chunk
    assert list(ds["text"]) == ["noisy drone. genre: ambient"] * 2 + ["instrument: synth"]
    row = ds[0]
    assert isinstance(row["audio"], np.ndarray) and row["audio"].shape == (SR,)
    assert np.abs(row["audio"]).max() == pytest.approx(1.0, abs=1e-3)
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"path": "gone.wav", "genre": "x"}) + "\n")
    with pytest.raises(ValueError, match="gone.wav"):
        load_audio_folder(tmp_path, sample_rate=SR)
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"key": "C major", "genre": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"metadata.jsonl:1: the record has no 'file_name' \(or 'path'\)"):
        load_audio_folder(tmp_path, sample_rate=SR)


def test_audiofolder_convention_and_bad_rows_skipped_by_name(tmp_path, caplog):
    import json
    import logging

    from musicpeft.data import load_audio, load_audio_folder

    rng = np.random.default_rng(0)
    tone = rng.uniform(-0.3, 0.3, size=SR).astype(np.float32)
    _write_wav(tmp_path / "a.wav", tone, SR)
    _write_wav(tmp_path / "b.wav", tone[::-1].copy(), SR)
    broken = tone.copy()
    broken[100] = np.nan
    import soundfile as sf

    sf.write(str(tmp_path / "nan.wav"), broken, SR, subtype="FLOAT")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    lines = [
        json.dumps({"file_name": "a.wav", "text": "a calm koto melody"}),
        json.dumps({"file_name": "b.wav", "caption": "a fast koto melody", "genre": "folk"}),
        json.dumps({"file_name": "nan.wav", "text": "has a NaN"}),
        json.dumps({"file_name": "junk.wav", "text": "unreadable"}),
        json.dumps({"file_name": "gone.wav", "text": "missing"}),
        json.dumps({"file_name": "a.wav"}),
        '{"file_name": "a.wav", "text": ',
    ]
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"nan\.wav: 1 of 16000 samples are NaN or infinite"):
        load_audio(tmp_path / "nan.wav")
    with caplog.at_level(logging.WARNING, logger="musicpeft.data.dataset"):
        ds = load_audio_folder(tmp_path, sample_rate=SR, chunk_seconds=None)
    assert list(ds["text"]) == ["a calm koto melody", "a fast koto melody. genre: folk"]
    assert all(np.isfinite(row["audio"]).all() for row in ds)
    report = caplog.text
    for needle in ("skipped 5 row(s)", "nan.wav: 1 of 16000 samples are NaN", "junk.wav: cannot read audio",
                   "gone.wav: no such audio file", "metadata.jsonl:6: caption_from_metadata",
                   "metadata.jsonl:7: not valid JSON"):
        assert needle in report, needle
    assert "nan.wav" in ds.info.description
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines[2:]) + "\n")
    with pytest.raises(ValueError, match=r"no audio chunks.*skipped rows: .*nan\.wav.*junk\.wav"):
        load_audio_folder(tmp_path, sample_rate=SR)


def _three_clips(folder):
    """Three one-second wavs and their records: a caption, another caption with a tag, no caption at all."""
    rng = np.random.default_rng(1)
    for name in ("a", "b", "c"):
        _write_wav(folder / f"{name}.wav", rng.uniform(-0.3, 0.3, size=SR).astype(np.float32), SR)
    return [
        {"file_name": "a.wav", "text": "a calm koto melody"},
        {"file_name": "b.wav", "caption": "a fast koto melody", "genre": "folk"},
        {"file_name": "c.wav"},
    ]


def test_metadata_csv_and_parquet_load_as_json_lines_do(tmp_path, caplog):
    """The three metadata files of the datasets audiofolder convention give the same rows and the same skips."""
    import csv
    import json
    import logging

    import pyarrow as pa
    import pyarrow.parquet as pq

    from musicpeft.data import find_metadata, load_audio_folder

    loaded = {}
    for kind in ("jsonl", "csv", "parquet"):
        folder = tmp_path / kind
        folder.mkdir()
        records = _three_clips(folder)
        path = folder / f"metadata.{kind}"
        if kind == "jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in records))
        elif kind == "csv":
            with open(path, "w", newline="", encoding="utf-8-sig") as f:  # with a spreadsheet's byte-order mark
                writer = csv.DictWriter(f, fieldnames=["file_name", "text", "caption", "genre"])
                writer.writeheader()
                writer.writerows(records)
                f.write("\n")  # a trailing empty line is no row
        else:
            columns = ["file_name", "text", "caption", "genre"]  # missing values become nulls
            pq.write_table(pa.table({c: [r.get(c) for r in records] for c in columns}), path)
        assert find_metadata(folder) == path
        with caplog.at_level(logging.WARNING, logger="musicpeft.data.dataset"):
            caplog.clear()
            ds = load_audio_folder(folder, sample_rate=SR, chunk_seconds=None)
        # c.wav has no caption: named by its place, the file's line (the CSV's header is line 1) or the table's row
        place = {"jsonl": 3, "csv": 4, "parquet": 3}[kind]
        assert f"metadata.{kind}:{place}: caption_from_metadata" in caplog.text
        loaded[kind] = ds
    assert list(loaded["jsonl"]["text"]) == ["a calm koto melody", "a fast koto melody. genre: folk"]
    for kind in ("csv", "parquet"):
        assert list(loaded[kind]["text"]) == list(loaded["jsonl"]["text"]), kind
        for row, expected in zip(loaded[kind], loaded["jsonl"], strict=True):
            np.testing.assert_array_equal(row["audio"], expected["audio"])


def test_metadata_files_refused_by_name(tmp_path, caplog):
    import logging

    from musicpeft.data import find_metadata, load_audio_folder, load_metadata

    records = _three_clips(tmp_path)
    assert find_metadata(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="no metadata file .expected metadata.jsonl or metadata.csv"):
        load_audio_folder(tmp_path, sample_rate=SR)
    (tmp_path / "metadata.csv").write_text(
        "file_name,text\n"
        f"{records[0]['file_name']},{records[0]['text']}\n"
        "b.wav,one value,too many\n"
        "c.wav,a third melody\n"
    )
    with caplog.at_level(logging.WARNING, logger="musicpeft.data.dataset"):
        ds = load_audio_folder(tmp_path, sample_rate=SR, chunk_seconds=None)
    assert list(ds["text"]) == ["a calm koto melody", "a third melody"]
    assert "metadata.csv:3: 2 columns in the header, more values in this row" in caplog.text
    with pytest.raises(ValueError, match="metadata.csv:3: 2 columns"):
        load_metadata(tmp_path / "metadata.csv")
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.wav", "text": "x"}\n')
    with pytest.raises(ValueError, match="holds metadata.jsonl and metadata.csv; keep one metadata file"):
        load_audio_folder(tmp_path, sample_rate=SR)
    (tmp_path / "metadata.jsonl").unlink()
    (tmp_path / "metadata.csv").unlink()
    (tmp_path / "metadata.parquet").write_bytes(b"PAR1 but not parquet")
    with pytest.raises(ValueError, match=r"metadata.parquet: not a readable Parquet file"):
        load_audio_folder(tmp_path, sample_rate=SR)
    with pytest.raises(ValueError, match=r"notes.txt: unknown metadata format '.txt'"):
        load_metadata(tmp_path / "notes.txt")


def test_make_rendered_dataset():
    from musicpeft.data import make_rendered_dataset

    ds = make_rendered_dataset(2, 1.5, SR, program=73, seed=0)
    assert len(ds) == 2 and ds[1]["audio"].shape == (int(1.5 * SR),)
    assert ds[0]["text"] == "classical music played on flute"
    named = make_rendered_dataset(2, 1.5, SR, program=73, seed=0, caption=lambda i: f"clip {i}")
    assert list(named["text"]) == ["clip 0", "clip 1"]
    assert np.array_equal(named[0]["audio"], ds[0]["audio"])


def test_mix_to_mono_is_the_one_in_memory_convention():
    from musicpeft.data import mix_to_mono

    left, right = np.ones(100, dtype=np.float32), -np.ones(100, dtype=np.float32) * 0.5
    assert np.allclose(mix_to_mono(np.stack([left, right])), 0.25)
    assert mix_to_mono(left) is left
    with pytest.raises(ValueError, match=r"generated: .*\(channels, samples\).*pass its transpose"):
        mix_to_mono(np.zeros((100, 2), dtype=np.float32), "generated")
    with pytest.raises(ValueError, match="generated: audio must be 1-D"):
        mix_to_mono(np.zeros((1, 2, 3)), "generated")
