"""The Hugging Face libraries' own bars follow the package's rule: none in logs, and the caller's choice restored."""

from __future__ import annotations

import io
import sys
import warnings

import datasets.utils as datasets_utils
import diffusers.utils.logging as diffusers_logging
import huggingface_hub.utils as hub_utils
import pytest
import transformers.utils.logging as transformers_logging
from datasets import Dataset

import musicpeft.cli as cli
from musicpeft.training.progress import library_bars_follow_rule


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def _states() -> dict[str, bool]:
    """Which libraries draw bars right now."""
    return {
        "huggingface_hub": not hub_utils.are_progress_bars_disabled(),
        "transformers": transformers_logging.is_progress_bar_enabled(),
        "datasets": not datasets_utils.are_progress_bars_disabled(),
        "diffusers": diffusers_logging.is_progress_bar_enabled(),
    }


ALL_ON = {"huggingface_hub": True, "transformers": True, "datasets": True, "diffusers": True}
ALL_OFF = dict.fromkeys(ALL_ON, False)


@pytest.fixture(autouse=True)
def bars_on(monkeypatch):
    """Every library's bars on (as in a fresh process), and on again after the test whatever it did."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    for switch_on in (hub_utils.enable_progress_bars, transformers_logging.enable_progress_bar,
                      datasets_utils.enable_progress_bars, diffusers_logging.enable_progress_bar):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            switch_on()
    if _states() != ALL_ON:
        pytest.skip("an HF_*_DISABLE_PROGRESS_BARS variable pins a library's bars off in this process")
    yield
    for switch_on in (transformers_logging.enable_progress_bar, hub_utils.enable_progress_bars,
                      datasets_utils.enable_progress_bars, diffusers_logging.enable_progress_bar):
        switch_on()


def test_bars_are_off_inside_when_stderr_is_a_log_and_back_on_after(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Stream(tty=False))
    with library_bars_follow_rule():
        assert _states() == ALL_OFF
    assert _states() == ALL_ON


def test_tqdm_disable_switches_them_off_on_a_terminal_too(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Stream(tty=True))
    with library_bars_follow_rule():
        assert _states() == ALL_ON
    monkeypatch.setenv("TQDM_DISABLE", "1")
    with library_bars_follow_rule():
        assert _states() == ALL_OFF
    assert _states() == ALL_ON


def test_the_callers_own_choice_is_put_back(monkeypatch):
    """Off stays off, and transformers' switches (which flip huggingface_hub's too) do not leak into it."""
    monkeypatch.setattr(sys, "stderr", _Stream(tty=False))
    datasets_utils.disable_progress_bars()
    hub_utils.disable_progress_bars()  # transformers' own flag stays on
    before = _states()
    assert before == {"huggingface_hub": False, "transformers": True, "datasets": False, "diffusers": True}
    with library_bars_follow_rule():
        assert _states() == ALL_OFF
    assert _states() == before


def test_state_is_restored_when_the_step_fails(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Stream(tty=False))
    with pytest.raises(RuntimeError, match="step failed"), library_bars_follow_rule():
        raise RuntimeError("step failed")
    assert _states() == ALL_ON


def test_a_dataset_map_draws_nothing_into_a_log_inside(monkeypatch):
    log = _Stream(tty=False)
    monkeypatch.setattr(sys, "stderr", log)
    rows = Dataset.from_dict({"x": list(range(8))})
    rows.map(lambda row: {"y": row["x"] + 1}, desc="Outside the rule")
    with library_bars_follow_rule():
        mapped = rows.map(lambda row: {"y": row["x"] + 1}, desc="Inside the rule")
    assert mapped["y"] == list(range(1, 9))
    assert "Outside the rule" in log.getvalue()  # the bar a plain datasets call draws, so the check can fail
    assert "Inside the rule" not in log.getvalue()


def test_every_command_runs_inside_the_rule(monkeypatch):
    """``musicpeft.cli.main`` wraps whichever command it runs, so no command can forget to."""
    monkeypatch.setattr(sys, "stderr", _Stream(tty=False))
    seen = []
    build_parser = cli.build_parser

    def parser_whose_commands_report_the_bars():
        parser = build_parser()
        for command in parser._subparsers._group_actions[0].choices.values():
            command.set_defaults(run=lambda namespace: seen.append(_states()) or 0)
        return parser

    monkeypatch.setattr(cli, "build_parser", parser_whose_commands_report_the_bars)
    assert cli.main(["demo"]) == 0
    assert cli.main(["demo"], raise_errors=False) == 0
    assert seen == [ALL_OFF, ALL_OFF]
    assert _states() == ALL_ON
