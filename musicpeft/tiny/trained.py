"""Loaders of the tiny models trained on the micro-world (:mod:`musicpeft.tiny.world`) and shipped in the package.

Why: nothing pretrained can be downloaded here, and random weights cannot show that a PEFT method
teaches anything. These models were trained on CPU by ``scripts/build_tiny_models.py`` (see
``docs/tiny_models.md`` and each folder's README.md model card) and load offline, from files inside
the package: safetensors, JSON and tokenizer files only, nothing is unpickled.

Every call returns a fresh instance in eval mode, so callers may fine-tune what they get.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoProcessor, ClapModel, ClapProcessor, EncodecModel, MusicgenForConditionalGeneration

from .classifier import InstrumentClassifier

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
REBUILD = "python scripts/build_tiny_models.py"
_STAGES = {"codec": "data,codec", "musicgen": "data,musicgen", "clap": "data,clap",
           "instrument_classifier": "data,classifier"}
_WITH_PROCESSOR = ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json")
_FILES = {"musicgen": _WITH_PROCESSOR, "clap": _WITH_PROCESSOR, "codec": ("config.json", "model.safetensors"),
          "instrument_classifier": ("config.json", "model.safetensors")}


def _folder(name: str) -> str:
    """The shipped folder of model ``name``; ``FileNotFoundError`` naming the missing file and the rebuild command."""
    path = WEIGHTS_DIR / name
    for file in _FILES[name]:
        if not (path / file).is_file():
            raise FileNotFoundError(
                f"{path / file}: the trained tiny {name} is missing from the package; rebuild it with "
                f"`{REBUILD} --stages {_STAGES[name]}` from the repository root (see docs/tiny_models.md)"
            )
    return str(path)


def _load(name: str, model_cls, processor_cls=None):
    """``model_cls.from_pretrained`` (eval mode) of the shipped folder, with its processor when one is asked for."""
    from ..families.musicgen_config_notes import musicgen_config_notes_hidden  # lazy: families import this module

    path = _folder(name)
    with musicgen_config_notes_hidden():
        model = model_cls.from_pretrained(path, local_files_only=True).eval()
    if processor_cls is None:
        return model
    return model, processor_cls.from_pretrained(path, local_files_only=True)


def trained_musicgen_path() -> str:
    """Folder of the trained tiny MusicGen (``MusicgenForConditionalGeneration`` + ``AutoProcessor`` loadable)."""
    return _folder("musicgen")


def load_trained_musicgen():
    """(MusicgenForConditionalGeneration, MusicgenProcessor) trained on base-instrument captions, eval mode."""
    return _load("musicgen", MusicgenForConditionalGeneration, AutoProcessor)


def trained_clap_path() -> str:
    """Folder of the trained tiny CLAP (``ClapModel`` + ``ClapProcessor`` loadable)."""
    return _folder("clap")


def load_trained_clap():
    """(ClapModel, ClapProcessor) trained contrastively on every world instrument, eval mode."""
    return _load("clap", ClapModel, ClapProcessor)


def trained_codec_path() -> str:
    """Folder of the trained tiny EnCodec (16 kHz mono, 4 codebooks; ``EncodecModel.from_pretrained``)."""
    return _folder("codec")


def load_trained_codec():
    """The trained tiny ``EncodecModel`` (the same weights as the trained MusicGen's audio encoder), eval mode."""
    return _load("codec", EncodecModel)


def trained_classifier_path() -> str:
    """Folder of the instrument classifier (``model.safetensors`` + ``config.json``)."""
    return _folder("instrument_classifier")


def load_instrument_classifier():
    """The world's :class:`~musicpeft.tiny.classifier.InstrumentClassifier` (labels: every world instrument)."""
    return InstrumentClassifier.load(trained_classifier_path())
