"""The micro-world's data definition: split by piece, captions from metadata, clips of the right shape."""

import io
import sys

import numpy as np
import pytest

from musicpeft.tiny.world import (
    BASE_INSTRUMENTS,
    CONCEPT_INSTRUMENTS,
    caption_for,
    piece_era,
    split_pieces,
    world_clips,
)


def test_concepts_are_disjoint_from_base_instruments():
    assert not set(BASE_INSTRUMENTS) & set(CONCEPT_INSTRUMENTS)
    assert not set(BASE_INSTRUMENTS.values()) & set(CONCEPT_INSTRUMENTS.values())
    assert CONCEPT_INSTRUMENTS["koto"] == 107 and CONCEPT_INSTRUMENTS["shakuhachi"] == 77


def test_split_is_by_piece_deterministic_and_covers_every_era():
    split = split_pieces()
    assert not set(split["train"]) & set(split["heldout"])
    assert split == split_pieces(seed=0)
    assert split != split_pieces(seed=1)
    assert len(split["heldout"]) >= 20 and len(split["train"]) >= 4 * len(split["heldout"]) - 10
    train_eras = {piece_era(p) for p in split["train"]}
    held_eras = {piece_era(p) for p in split["heldout"]}
    assert held_eras <= train_eras and {"baroque", "folk", "renaissance"} <= held_eras


def test_caption_for():
    assert caption_for("koto", tempo="slow", era="baroque", mode="minor") == "a slow baroque piece in minor on koto"
    assert caption_for("piano") == "a piece on piano"
    with pytest.raises(ValueError, match="unknown world instrument 'kazoo'"):
        caption_for("kazoo")
    with pytest.raises(ValueError, match="tempo='andante'"):
        caption_for("piano", tempo="andante")


def test_world_clips_shape_caption_and_split(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file, not a terminal: no progress bar in it
    clips = world_clips("koto", "heldout", 2, 1.0, 8000, seed=2)  # seed 2: two quick-to-convert pieces first
    assert "Rendering" not in sys.stderr.getvalue()
    held = set(split_pieces()["heldout"])
    for clip in clips:
        assert clip["audio"].dtype == np.float32 and clip["audio"].shape == (8000,)
        assert 0.99 <= float(np.abs(clip["audio"]).max()) <= 1.0
        assert clip["piece"] in held and clip["instrument"] == "koto"
        assert clip["text"] == caption_for("koto", tempo=clip["tempo"], era=clip["era"], mode=clip["mode"])
    with pytest.raises(ValueError, match="split must be one of"):
        world_clips("koto", "test", 1, 1.0, 8000)


def test_render_clips_draws_no_bar_into_a_log(monkeypatch):
    from musicpeft.data.render import render_clips

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    audio = render_clips(2, 1.28, sample_rate=16000, program=107, seed=1)  # the clips test_audioldm2_adapters uses
    assert len(audio) == 2 and sys.stderr.getvalue() == ""
