"""An adapter file missing weights that its config creates is an error for every musicpeft method."""

from __future__ import annotations

import pytest
import torch
from fixtures import tiny_musicgen
from peft import PeftModel
from safetensors.torch import load_file, save_file

import musicpeft
from musicpeft import ConceptIdentifierConfig, PivotalMaskConfig, SoftMusicPromptConfig

CONFIGS = {
    "soft_prompt": lambda: SoftMusicPromptConfig(num_virtual_tokens=3),
    "concept": lambda: ConceptIdentifierConfig(concepts=["koto"], tokens_per_concept=2),
    "pivotal": lambda: PivotalMaskConfig(concepts=["koto"], stage="tune", selection="random", percent=5.0),
}


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_a_weights_file_missing_an_adapter_tensor_is_refused(tmp_path, method):
    peft_model = musicpeft.add_adapter(tiny_musicgen(), CONFIGS[method]())
    musicpeft.save_adapter(peft_model, tmp_path)
    weights_path = tmp_path / "adapter_model.safetensors"
    weights = load_file(weights_path)
    dropped = sorted(k for k in weights if weights[k].is_floating_point())[0]
    del weights[dropped]
    save_file(weights, weights_path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="adapter weights lack"):
        PeftModel.from_pretrained(tiny_musicgen(), tmp_path)


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_a_complete_file_loads_identically(tmp_path, method):
    peft_model = musicpeft.add_adapter(tiny_musicgen(), CONFIGS[method]())
    with torch.no_grad():
        for param in (p for p in peft_model.parameters() if p.requires_grad):
            param.add_(0.01)  # move away from the initial values, so a silent re-init would show
    musicpeft.save_adapter(peft_model, tmp_path)
    loaded = musicpeft.load_adapter(tiny_musicgen(), tmp_path)
    trained = {k: v for k, v in peft_model.state_dict().items() if k in dict(loaded.named_parameters())}
    assert trained
    for key, value in loaded.state_dict().items():
        if key in trained:
            assert torch.equal(value, trained[key]), key
