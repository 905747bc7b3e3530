"""transformers' false alarm on MusicGen's special token ids is hidden where musicpeft loads MusicGen, and only it."""

import logging

import pytest
from transformers import MusicgenConfig, T5Config
from transformers.utils import logging as hf_logging

from musicpeft import cli
from musicpeft.families.musicgen_config_notes import CONFIG_LOGGER, musicgen_config_notes_hidden
from musicpeft.tiny.musicgen import tiny_musicgen_config

NOTE = "must be `None` or an integer within the vocabulary"


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def notes():
    """The config notes that get past the logger's filters; transformers' once-only cache cleared around the test."""
    hf_logging.warning_once.cache_clear()
    handler = _Records()
    logger = logging.getLogger(CONFIG_LOGGER)
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)
    hf_logging.warning_once.cache_clear()


def _musicgen_config(**decoder_changes):
    config = tiny_musicgen_config().to_dict()
    config["decoder"].update(decoder_changes)
    hf_logging.warning_once.cache_clear()  # building the parts above hid, and so cached, the same messages
    return MusicgenConfig.from_dict(config)


def test_plain_transformers_prints_the_note_for_a_musicgen_config(notes):
    _musicgen_config()  # positive control: without the filter the check can fail
    assert [m for m in notes if NOTE in m and "got 64" in m] and len(notes) == 3


def test_the_note_is_hidden_inside_and_the_filter_is_removed_after(notes):
    with musicgen_config_notes_hidden():
        _musicgen_config()
    assert notes == []
    assert not logging.getLogger(CONFIG_LOGGER).filters
    _musicgen_config()
    assert len(notes) == 3


def test_other_notes_pass_inside(notes):
    with musicgen_config_notes_hidden():
        _musicgen_config(pad_token_id=70)  # MusicGen, but an id past the one extra row
        T5Config(vocab_size=10, pad_token_id=10)  # not a MusicGen config: a real misconfiguration
    assert any("got 10" in m for m in notes)
    assert any("got 70" in m for m in notes)
    assert not any("got 64" in m for m in notes)


def test_every_command_runs_with_the_note_hidden(notes, monkeypatch):
    build_parser = cli.build_parser

    def parser_whose_commands_build_a_musicgen_config():
        parser = build_parser()
        for command in parser._subparsers._group_actions[0].choices.values():
            command.set_defaults(run=lambda namespace: _musicgen_config() and 0)
        return parser

    monkeypatch.setattr(cli, "build_parser", parser_whose_commands_build_a_musicgen_config)
    assert cli.main(["demo"]) == 0
    assert notes == []
