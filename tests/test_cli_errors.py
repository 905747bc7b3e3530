"""Every `musicpeft` subcommand answers a bad flag or file with one line on stderr and exit status 2."""

import json
import os
import subprocess
import sys

import pytest

from musicpeft.cli import main

EXAMPLE_PROMPTS = os.path.join(os.path.dirname(__file__), "..", "examples", "prompts", "four_groups.json")
BAD_FLAGS = [
    ("demo", ["--steps", "many"], "argument --steps: invalid int value: 'many'"),
    ("train", ["--base", "tiny-musicgen", "--data", "rendered:107:2", "--batch-size", "x"], "--batch-size"),
    ("train", ["--data", "rendered:107:2"], "the following arguments are required: --base"),
    ("evaluate", ["--base", "tiny-musicgen", "--adapters", "a", "--prompts", "p.json", "--seconds", "long"],
     "--seconds"),
    ("push", ["--folder", "x", "--repo-id", "u/r", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
]


def assert_one_line(stderr: str, *needles: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize(("command", "argv", "needle"), BAD_FLAGS)
def test_bad_flags_print_one_line_and_exit_2(capsys, command, argv, needle):
    with pytest.raises(SystemExit) as exit_info:
        main([command, *argv])
    assert exit_info.value.code == 2
    assert_one_line(capsys.readouterr().err, f"musicpeft {command}: error:", needle)


def bad_inputs(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    not_adapter = tmp_path / "not-an-adapter"
    not_adapter.mkdir()
    (not_adapter / "notes.txt").write_text("x")
    full = tmp_path / "full"
    full.mkdir()
    (full / "adapter_model.safetensors").write_text("old")
    return [
        ("demo", ["--output-dir", str(a_file)], str(a_file)),
        ("train", ["--base", "tiny-musicgen", "--data", str(tmp_path / "nowhere")], "data: "),
        ("train", ["--base", "tiny-musicgen", "--data", "rendered:107:2", "--output-dir", str(full)],
         "output_dir: ", "--overwrite"),
        ("train", ["--base", "tiny-musicgen", "--data", "rendered:107:2", "--method", "adapterx"], "method: "),
        ("evaluate", ["--base", "tiny-musicgen", "--adapters", "a", "--prompts", str(tmp_path / "missing.json"),
                      "--reference", "rendered:107:2"], "missing.json"),
        ("push", ["--folder", str(not_adapter), "--repo-id", "user/x"], "not an adapter folder"),
        ("train", ["--base", str(tmp_path / "no-such-model"), "--data", "rendered:107:2"], "base: ", "no such folder"),
        ("evaluate", ["--base", "someone/not-cached", "--adapters", "a", "--prompts", str(EXAMPLE_PROMPTS),
                      "--reference", "rendered:107:2"], "base: ", "tiny-musicgen-trained"),
    ]


@pytest.mark.parametrize("case", range(8))
def test_bad_files_print_one_line_and_exit_2(tmp_path, capsys, case):
    command, argv, *needles = bad_inputs(tmp_path)[case]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert main([command, *argv], raise_errors=False) == 2
    assert_one_line(capsys.readouterr().err, f"musicpeft {command}: error:", *needles)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # nothing written or changed


def test_python_callers_still_get_the_exception(tmp_path):
    with pytest.raises(FileNotFoundError, match="data: "):
        main(["train", "--base", "tiny-musicgen", "--data", str(tmp_path / "nowhere")])


def test_the_console_command_exits_2_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    env.pop("MUSICPEFT_DEBUG", None)
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "metadata.jsonl").write_text(json.dumps({"file_name": "gone.wav", "text": "x"}) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "musicpeft.cli", "train", "--base", "tiny-musicgen", "--data", "rendered:107",
         "--output-dir", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert_one_line(result.stderr, "musicpeft train: error: data:", "rendered:<program>:<n>")
    assert not (tmp_path / "out").exists()
