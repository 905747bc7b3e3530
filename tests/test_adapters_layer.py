"""The adapters layer's shared answers: one pipeline check, one unwrap, one host per kind, and the host (not the
user's config) telling a tuner which family a pipeline component belongs to."""

from __future__ import annotations

import pytest
from fixtures import tiny_audioldm2_pipeline, tiny_musicgen
from peft import get_peft_model

import musicpeft
from musicpeft import SoftMusicPromptConfig, UnsupportedModelError
from musicpeft.adapters import host_of, is_pipeline, peft_model_of, unwrap_peft
from musicpeft.adapters.base import component_family


def test_one_pipeline_check_one_unwrap_one_host_per_kind():
    pipe, model = tiny_audioldm2_pipeline(), tiny_musicgen()
    assert peft_model_of(model) is None
    peft_model = musicpeft.add_adapter(model, SoftMusicPromptConfig(num_virtual_tokens=2))
    assert [is_pipeline(obj) for obj in (pipe, model, peft_model)] == [True, False, False]
    # The model is adapted in place: the bare model finds its PeftModel, and both unwrap to the model.
    assert peft_model_of(model) is peft_model
    assert unwrap_peft(peft_model) is model and unwrap_peft(model) is model
    assert [host_of(obj).kind for obj in (pipe, model, peft_model)] == ["pipeline", "model", "model"]
    assert host_of(peft_model).peft_models() == {".": peft_model}
    with pytest.raises(UnsupportedModelError, match="not a supported base model"):
        host_of(object())


def test_the_host_names_the_family_of_an_adapted_component_only_while_attaching():
    pipe = tiny_audioldm2_pipeline()
    # Alone, AudioLDM2's T5 encoder is a T5EncoderModel of no family: a config that names none is refused.
    with pytest.raises(UnsupportedModelError):
        get_peft_model(pipe.text_encoder_2, SoftMusicPromptConfig(num_virtual_tokens=2))
    t5, clap = SoftMusicPromptConfig(num_virtual_tokens=2), SoftMusicPromptConfig(num_virtual_tokens=2,
                                                                                  text_encoder="clap")
    assert (t5.base_family, t5.text_encoder) == (None, None)
    on_t5, on_clap = musicpeft.add_adapter(pipe, t5), musicpeft.add_adapter(pipe, clap, adapter_name="clap")
    assert on_t5.get_base_model() is pipe.text_encoder_2 and on_clap.get_base_model() is pipe.text_encoder
    assert component_family(pipe.text_encoder_2) is None  # the host's word holds only inside the attach
    # What the tuner records when it attaches (so that plain peft can load the component's folder later).
    assert (t5.base_family, t5.text_encoder, clap.text_encoder) == ("audioldm2", "t5", "clap")
    assert sorted(host_of(pipe).peft_models()) == ["text_encoder", "text_encoder_2"]
