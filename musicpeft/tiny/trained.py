"""Loaders of the tiny models trained on the micro-world (:mod:`musicpeft.tiny.world`) and shipped in the package.

Why: nothing pretrained can be downloaded here, and random weights cannot show that a PEFT method
teaches anything. These models were trained on CPU by ``scripts/build_tiny_models.py`` (see
``docs/tiny_models.md`` and each folder's README.md model card) and load offline, from files inside
the package: safetensors, JSON and tokenizer files only, nothing is unpickled.

Every call returns a fresh instance in eval mode, so callers may fine-tune what they get.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
REBUILD = "python scripts/build_tiny_models.py"
_STAGES = {"codec": "data,codec", "musicgen": "data,musicgen", "clap": "data,clap",
           "instrument_classifier": "data,classifier"}


def _folder(name: str, files: tuple[str, ...]) -> Path:
    path = WEIGHTS_DIR / name
    for file in files:
        if not (path / file).is_file():
            raise FileNotFoundError(
                f"{path / file}: the trained tiny {name} is missing from the package; rebuild it with "
                f"`{REBUILD} --stages {_STAGES[name]}` from the repository root (see docs/tiny_models.md)"
            )
    return path


def trained_musicgen_path() -> str:
    """Folder of the trained tiny MusicGen (``MusicgenForConditionalGeneration`` + ``AutoProcessor`` loadable)."""
    return str(_folder("musicgen", ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json")))


def load_trained_musicgen():
    """(MusicgenForConditionalGeneration, MusicgenProcessor) trained on base-instrument captions, eval mode."""
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    path = trained_musicgen_path()
    model = MusicgenForConditionalGeneration.from_pretrained(path, local_files_only=True)
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    return model.eval(), processor


def trained_clap_path() -> str:
    """Folder of the trained tiny CLAP (``ClapModel`` + ``ClapProcessor`` loadable)."""
    return str(_folder("clap", ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json")))


def load_trained_clap():
    """(ClapModel, ClapProcessor) trained contrastively on every world instrument, eval mode."""
    from transformers import ClapModel, ClapProcessor

    path = trained_clap_path()
    model = ClapModel.from_pretrained(path, local_files_only=True)
    processor = ClapProcessor.from_pretrained(path, local_files_only=True)
    return model.eval(), processor


def trained_codec_path() -> str:
    """Folder of the trained tiny EnCodec (16 kHz mono, 4 codebooks; ``EncodecModel.from_pretrained``)."""
    return str(_folder("codec", ("config.json", "model.safetensors")))


def load_trained_codec():
    """The trained tiny ``EncodecModel`` (the same weights as the trained MusicGen's audio encoder), eval mode."""
    from transformers import EncodecModel

    return EncodecModel.from_pretrained(trained_codec_path(), local_files_only=True).eval()


def trained_classifier_path() -> str:
    """Folder of the instrument classifier (``model.safetensors`` + ``config.json``)."""
    return str(_folder("instrument_classifier", ("config.json", "model.safetensors")))


def load_instrument_classifier():
    """The world's :class:`~musicpeft.tiny.classifier.InstrumentClassifier` (labels: every world instrument)."""
    from .classifier import InstrumentClassifier

    return InstrumentClassifier.load(trained_classifier_path())
