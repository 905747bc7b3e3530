import json
import os

import pytest

from musicpeft.io import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text


def test_writes_replace_whole_files(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert os.listdir(target.parent) == ["out.json"]


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "clip.wav"
    target.write_bytes(b"old")

    def half_write(tmp):
        with open(tmp, "wb") as handle:
            handle.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_write)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["clip.wav"]
    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": object()})
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["clip.wav"]


def test_temporary_name_keeps_suffix(tmp_path):
    seen = []
    atomic_write(tmp_path / "a.png", lambda tmp: (seen.append(tmp), open(tmp, "wb").close()))
    assert seen[0].endswith(".png") and os.path.dirname(seen[0]) == str(tmp_path)
