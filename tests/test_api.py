"""musicpeft.add_adapter / save_adapter / load_adapter on MusicGen."""

from __future__ import annotations

import os

import pytest
import torch
from fixtures import musicgen_inputs, musicgen_logits, perturb_adapter, tiny_musicgen
from peft import PeftModel

import musicpeft
from musicpeft import AdapterFileError, SoftMusicPromptConfig


@pytest.fixture(scope="module")
def inputs():
    return musicgen_inputs()


_logits = musicgen_logits


def test_round_trip_through_public_verbs(tmp_path, inputs):
    model = tiny_musicgen()
    peft_model = musicpeft.add_adapter(model, SoftMusicPromptConfig(num_virtual_tokens=6), adapter_name="korean")
    assert isinstance(peft_model, PeftModel)
    perturb_adapter(peft_model)
    # The model itself is adapted in place: calling it directly uses the prompt too.
    assert torch.equal(_logits(model, inputs), _logits(peft_model, inputs))
    musicpeft.save_adapter(model, tmp_path / "korean-prompt", adapter_name="korean")
    assert sorted(os.listdir(tmp_path / "korean-prompt")) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "musicpeft_adapter.json",
    ]

    loaded = musicpeft.load_adapter(tiny_musicgen(), tmp_path / "korean-prompt")
    assert torch.equal(_logits(loaded, inputs), _logits(peft_model, inputs))
    # peft's own loader reads the same folder.
    stock = PeftModel.from_pretrained(tiny_musicgen(), tmp_path / "korean-prompt")
    assert torch.equal(_logits(stock, inputs), _logits(peft_model, inputs))


def test_second_adapter_on_the_same_model(tmp_path, inputs):
    first = musicpeft.add_adapter(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=4, init_seed=1))
    perturb_adapter(first, seed=1)
    musicpeft.save_adapter(first, tmp_path / "a")
    second = musicpeft.add_adapter(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=4, init_seed=2))
    perturb_adapter(second, seed=2)
    musicpeft.save_adapter(second, tmp_path / "b")

    model = musicpeft.load_adapter(tiny_musicgen(), tmp_path / "a", adapter_name="a")
    model = musicpeft.load_adapter(model, tmp_path / "b", adapter_name="b")
    assert model.active_adapters == ["b"]
    assert torch.equal(_logits(model, inputs), _logits(second, inputs))
    model.set_adapter("a")
    assert torch.equal(_logits(model, inputs), _logits(first, inputs))
    with pytest.raises(ValueError, match="already exists"):
        musicpeft.add_adapter(model, SoftMusicPromptConfig(num_virtual_tokens=2), adapter_name="a")


def test_save_leaves_no_partial_files(tmp_path):
    peft_model = musicpeft.add_adapter(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=3))
    with pytest.raises(ValueError, match="No adapter named 'missing'.*default"):
        musicpeft.save_adapter(peft_model, tmp_path / "out", adapter_name="missing")
    musicpeft.save_adapter(peft_model, tmp_path / "out")
    assert not [name for name in os.listdir(tmp_path / "out") if name.startswith(".musicpeft-")]


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(AdapterFileError, match="no adapter_config.json"):
        musicpeft.load_adapter(tiny_musicgen(), tmp_path)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(AdapterFileError, match="is a file"):
        musicpeft.load_adapter(tiny_musicgen(), tmp_path / "file.txt")
    with pytest.raises(ValueError, match="no adapter to save"):
        musicpeft.save_adapter(tiny_musicgen(), tmp_path / "x")


def test_pickle_needs_allow_pickle(tmp_path, inputs):
    peft_model = musicpeft.add_adapter(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=3))
    perturb_adapter(peft_model)
    peft_model.save_pretrained(tmp_path, safe_serialization=False)
    with pytest.raises(AdapterFileError, match="pickle"):
        musicpeft.load_adapter(tiny_musicgen(), tmp_path)
    loaded = musicpeft.load_adapter(tiny_musicgen(), tmp_path, allow_pickle=True)
    assert torch.equal(_logits(loaded, inputs), _logits(peft_model, inputs))


def test_attaching_hides_only_peft_s_read_of_a_deprecated_attribute():
    """peft 0.21 reads `is_gradient_checkpointing`, deprecated in transformers 5.23+: add_adapter hides that one
    FutureWarning (the caller never used the attribute); plain peft still shows it, and other warnings pass."""
    import warnings

    from peft import get_peft_model

    with warnings.catch_warnings(record=True) as plain:
        warnings.simplefilter("always")
        get_peft_model(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=2))
    if not any("is_gradient_checkpointing" in str(w.message) for w in plain):
        pytest.skip("these peft / transformers versions raise no such warning")
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        musicpeft.add_adapter(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=2))
        warnings.warn("a warning of the caller's own", FutureWarning, stacklevel=1)
    messages = [str(w.message) for w in ours]
    assert not any("is_gradient_checkpointing" in m for m in messages)
    assert "a warning of the caller's own" in messages
