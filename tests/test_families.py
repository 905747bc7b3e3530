"""The typed family API: source detection, training defaults, card snippets and the transitional `extra` view."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
from peft import LoraConfig

from musicpeft.families import (
    AUDIOLDM2,
    DEFAULT_FAMILY,
    FAMILIES,
    LOSS_CODEC_TOKENS,
    LOSS_LATENT_DIFFUSION,
    MUSICGEN,
    MUSICGEN_MELODY,
    MUSICGEN_STEREO,
    SourceIndex,
    UnsupportedModelError,
    check_base_source,
    family_of_source,
    get_family,
    load_base,
    read_source_index,
)
from musicpeft.model_card import render_model_card
from musicpeft.training.diffusion import DiffusionTrainingArguments
from musicpeft.training.musicgen_trainer import PAPER_DEFAULTS


def test_training_defaults_are_the_trainers_defaults():
    """One recipe per family: the trainers' defaults are the family's, so they cannot drift apart."""
    mg = MUSICGEN.training
    assert mg.loss == LOSS_CODEC_TOKENS and mg.resumable
    paper = (PAPER_DEFAULTS[k] for k in ("learning_rate", "per_device_train_batch_size", "num_train_epochs"))
    assert (mg.learning_rate, mg.batch_size, mg.epochs) == tuple(paper)
    ldm, args = AUDIOLDM2.training, DiffusionTrainingArguments()
    assert ldm.loss == LOSS_LATENT_DIFFUSION and not ldm.resumable
    assert (ldm.learning_rate, ldm.batch_size, ldm.epochs, ldm.clip_seconds) == (
        args.learning_rate, args.per_device_train_batch_size, args.num_train_epochs, args.audio_length_s)


def test_sources_are_told_apart_by_their_files(tmp_path):
    pipeline = tmp_path / "pipe"
    pipeline.mkdir()
    (pipeline / "model_index.json").write_text(json.dumps({"_class_name": "AudioLDM2Pipeline"}))
    assert family_of_source(str(pipeline)) is AUDIOLDM2
    for name, config, family in (
        ("mono", {"model_type": "musicgen", "decoder": {"audio_channels": 1}}, MUSICGEN),
        ("stereo", {"model_type": "musicgen", "decoder": {"audio_channels": 2}}, MUSICGEN_STEREO),
        ("melody", {"model_type": "musicgen_melody", "decoder": {"audio_channels": 2}}, MUSICGEN_MELODY),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        assert family_of_source(str(tmp_path / name)) is family, name
    # A folder nothing claims is tried as the default family, whose loader names what is missing.
    (tmp_path / "empty").mkdir()
    assert family_of_source(str(tmp_path / "empty")) is DEFAULT_FAMILY
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(UnsupportedModelError, match="'StableDiffusionPipeline' pipeline; supported pipelines: "
                                                    "AudioLDM2Pipeline"):
        family_of_source(str(other))


def test_unreachable_hub_ids_are_judged_by_name_only(monkeypatch):
    import musicpeft.families as families

    monkeypatch.setattr(families, "read_source_index", lambda name: SourceIndex(name, reachable=False))
    assert family_of_source("cvssp/audioldm2-music") is AUDIOLDM2
    assert family_of_source("facebook/musicgen-melody") is MUSICGEN_MELODY
    assert family_of_source("facebook/musicgen-stereo-small") is MUSICGEN_STEREO
    assert family_of_source("facebook/musicgen-small") is MUSICGEN
    monkeypatch.undo()
    assert read_source_index("tiny-musicgen") == SourceIndex("tiny-musicgen")  # tiny names need no files


def test_a_base_that_cannot_load_is_refused_naming_base_and_the_offline_choices(tmp_path):
    assert check_base_source("tiny-musicgen") == SourceIndex("tiny-musicgen")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "musicgen"}))
    assert check_base_source(str(folder)).config == {"model_type": "musicgen"}
    with pytest.raises(FileNotFoundError, match=r"base: .*no-such-model: no such folder, and not a Hub repo id"):
        check_base_source(str(tmp_path / "no-such-model"))
    with pytest.raises(NotADirectoryError, match=r"base: .*config.json is a file"):
        check_base_source(str(folder / "config.json"))
    # The suite runs offline: a Hub id that is not in the cache cannot load, and loading says so at once.
    for call in (lambda: check_base_source("someone/not-cached"), lambda: load_base("someone/not-cached", "cpu")):
        with pytest.raises(OSError, match="base: cannot load 'someone/not-cached': it is not a local folder") as info:
            call()
        assert "tiny-musicgen-trained" in str(info.value) and "HF_HUB_OFFLINE" in str(info.value)


def test_a_load_that_fails_later_names_base(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "musicgen"}))  # no weights, no sub-configs
    with pytest.raises(OSError, match=r"base: cannot load .*model' as a musicgen base \("):
        load_base(str(folder), "cpu")


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_every_family_is_complete(family):
    """A registered family answers every question the package asks (a new family file is checked here)."""
    assert get_family(family.name) is family and family.class_names and family.text_encoders
    assert family.self_attention_value and family.cross_attention_key_value and family.lora_presets
    assert set(family.lora_preset_descriptions) == set(family.lora_presets)
    assert family.full_finetune_module and family.card is not None and family.tiny_sources
    assert family.training is None or family.training.clip_seconds > 0
    assert family.is_pipeline == (family.adapted_component is not None)
    for stream in family.cross_attention_streams.values():
        assert stream.kwarg and stream.regex


def test_model_card_loads_the_base_with_the_familys_class():
    card = render_model_card(LoraConfig(target_modules="x", r=2), "musicgen-melody", repo_id="user/x")
    assert "from transformers import MusicgenMelodyForConditionalGeneration" in card
    assert "model = MusicgenMelodyForConditionalGeneration.from_pretrained(" in card
    assert "musicgen-melody" in card.split("---")[1]  # the family tag


def test_families_have_no_untyped_extra():
    assert not hasattr(AUDIOLDM2, "extra") and "extra" not in {f.name for f in fields(AUDIOLDM2)}
