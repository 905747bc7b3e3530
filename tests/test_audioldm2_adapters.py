"""Every adapter kind on AudioLDM2 through musicpeft.add_adapter / save_adapter / load_adapter."""

from __future__ import annotations

import json
import os

import datasets
import numpy as np
import pytest
import torch
from fixtures import perturb_adapter, tiny_audioldm2_pipeline, tiny_musicgen
from peft import PeftModel

import musicpeft
from musicpeft import AdapterFileError, SoftMusicPromptConfig, UnsupportedModelError
from musicpeft.data.render import render_clips
from musicpeft.training.diffusion import DiffusionTrainingArguments, train_audioldm2
from musicpeft.training.presets import lora_config, prepare_full_finetune

SR = 16000


@pytest.fixture(scope="module")
def clips() -> datasets.Dataset:
    audio = render_clips(2, 1.28, sample_rate=SR, program=107, seed=1)
    return datasets.Dataset.from_dict(
        {"audio": audio, "sampling_rate": [SR] * 2, "text": ["a folk melody on koto", "a slow koto tune"]}
    )


def generate(pipe, seed: int = 0, **kwargs) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    return pipe("a cheerful jig", num_inference_steps=2, audio_length_in_s=1.28, generator=generator, **kwargs).audios


def weights(pipe) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value.detach().clone()
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
        for key, value in module.state_dict().items()
    }


def train_one_step(pipe, clips) -> None:
    args = DiffusionTrainingArguments(
        max_steps=1, per_device_train_batch_size=2, audio_length_s=1.28, learning_rate=1e-2, logging_steps=1
    )
    train_audioldm2(pipe, clips, args=args)


def assert_only_changed(before: dict, after: dict, marker: str) -> None:
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(marker in k for k in changed), sorted(changed)[:5]


@pytest.mark.parametrize("encoder", ["t5", "clap"])
def test_soft_prompt_train_save_load(tmp_path, clips, encoder):
    pipe = tiny_audioldm2_pipeline()
    base_audio = generate(pipe)
    peft_model = musicpeft.add_adapter(pipe, SoftMusicPromptConfig(num_virtual_tokens=4, text_encoder=encoder))
    assert {n for n, p in peft_model.named_parameters() if p.requires_grad} == {
        f"base_model.model.{'encoder' if encoder == 't5' else 'text_model'}.soft_prompt.soft_prompt_embeddings.default"
    }
    before = weights(pipe)
    train_one_step(pipe, clips)
    assert_only_changed(before, weights(pipe), "soft_prompt_embeddings")

    adapted = generate(pipe)
    assert np.abs(adapted - base_audio).max() > 1e-4 * np.abs(base_audio).max()
    musicpeft.save_adapter(pipe, tmp_path / "prompt")
    manifest = json.loads((tmp_path / "prompt" / "musicpeft_adapter.json").read_text())
    component = "text_encoder_2" if encoder == "t5" else "text_encoder"
    assert manifest == {"family": "audioldm2", "components": {component: component}}

    fresh = tiny_audioldm2_pipeline()
    musicpeft.load_adapter(fresh, tmp_path / "prompt")
    np.testing.assert_array_equal(generate(fresh), adapted)
    # peft's own loader on the adapted component reads the same subfolder.
    stock = PeftModel.from_pretrained(getattr(tiny_audioldm2_pipeline(), component), tmp_path / "prompt" / component)
    loaded = [p for n, p in stock.named_parameters() if "soft_prompt" in n]
    trained = [p for n, p in peft_model.named_parameters() if "soft_prompt" in n]
    assert len(loaded) == len(trained) == 1 and torch.equal(loaded[0], trained[0])


def test_soft_prompt_keeps_negative_branch_and_waveform_ranking():
    pipe = tiny_audioldm2_pipeline()
    peft_model = musicpeft.add_adapter(pipe, SoftMusicPromptConfig(num_virtual_tokens=3))
    embeds, mask, generated = pipe.encode_prompt("a cheerful jig", "cpu", 2, True, negative_prompt="loud")
    with peft_model.disable_adapter():
        short = pipe.encode_prompt("a cheerful jig", "cpu", 2, True, negative_prompt="loud")
        # AudioLDM2 pads the negative prompt to the conditional length; a base prompt 3 tokens longer
        # ("on the koto") gives the base unconditional branch at the prompted length.
        long = pipe.encode_prompt("a cheerful jig on the koto", "cpu", 2, True, negative_prompt="loud")
    assert embeds.shape[1] == short[0].shape[1] + 3 == long[0].shape[1]
    # Negative half (first 2 rows): exactly the base pipeline's.
    assert torch.equal(mask[:2], long[1][:2])
    assert torch.allclose(embeds[:2], long[0][:2], atol=1e-6)
    assert torch.allclose(generated[:2], long[2][:2], atol=1e-6)
    # Conditional half: the prompt's 3 positions come first and are attended to; the conditioning changed.
    assert mask[2:].all() and not torch.allclose(generated[2:], short[2][2:])
    assert peft_model.base_model.model.encoder.soft_prompt.soft_prompt_embeddings["default"].requires_grad
    audio = generate(pipe, negative_prompt="loud", num_waveforms_per_prompt=2)
    assert audio.shape[0] == 2 and np.isfinite(audio).all()


def test_lora_preset_train_save_load(tmp_path, clips):
    pipe = tiny_audioldm2_pipeline()
    musicpeft.add_adapter(pipe, lora_config(pipe, "attn", r=4))
    before = weights(pipe)
    train_one_step(pipe, clips)
    assert_only_changed(before, weights(pipe), ".lora_")
    adapted = generate(pipe)
    musicpeft.save_adapter(pipe, tmp_path / "lora")
    assert sorted(os.listdir(tmp_path / "lora" / "unet")) == ["adapter_config.json", "adapter_model.safetensors"]
    fresh = tiny_audioldm2_pipeline()
    musicpeft.load_adapter(fresh, tmp_path / "lora")
    np.testing.assert_array_equal(generate(fresh), adapted)
    stock = tiny_audioldm2_pipeline()
    PeftModel.from_pretrained(stock.unet, tmp_path / "lora" / "unet")
    np.testing.assert_array_equal(generate(stock), adapted)


def test_soft_prompt_and_lora_together(tmp_path):
    pipe = tiny_audioldm2_pipeline()
    musicpeft.add_adapter(pipe, SoftMusicPromptConfig(num_virtual_tokens=2, init_seed=5))
    musicpeft.add_adapter(pipe, lora_config(pipe, "cross_attn", r=2, init_lora_weights=False))
    perturb_adapter(pipe.text_encoder_2)
    perturb_adapter(pipe.unet)
    adapted = generate(pipe)
    musicpeft.save_adapter(pipe, tmp_path / "both")
    assert sorted(json.loads((tmp_path / "both" / "musicpeft_adapter.json").read_text())["components"]) == [
        "text_encoder_2",
        "unet",
    ]
    fresh = tiny_audioldm2_pipeline()
    musicpeft.load_adapter(fresh, tmp_path / "both")
    np.testing.assert_array_equal(generate(fresh), adapted)


def test_full_finetune_round_trip(tmp_path, clips):
    pipe = tiny_audioldm2_pipeline()
    trainable = prepare_full_finetune(pipe)
    before = weights(pipe)
    train_audioldm2(
        pipe,
        clips,
        args=DiffusionTrainingArguments(max_steps=1, per_device_train_batch_size=2, audio_length_s=1.28),
        trainable_parameters=trainable,
    )
    assert_only_changed(before, weights(pipe), "unet.")
    adapted = generate(pipe)
    pipe.unet.save_pretrained(tmp_path / "unet")
    fresh = tiny_audioldm2_pipeline()
    fresh.unet = type(pipe.unet).from_pretrained(tmp_path / "unet")
    np.testing.assert_array_equal(generate(fresh), adapted)


def test_adapters_do_not_cross_families(tmp_path):
    musicgen_dir, pipe_dir = tmp_path / "musicgen", tmp_path / "pipe"
    musicpeft.save_adapter(
        musicpeft.add_adapter(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=2)), musicgen_dir
    )
    pipe = tiny_audioldm2_pipeline()
    musicpeft.add_adapter(pipe, SoftMusicPromptConfig(num_virtual_tokens=2))
    musicpeft.save_adapter(pipe, pipe_dir)
    with pytest.raises(AdapterFileError, match="for the 'musicgen' family, but the base is of the 'audioldm2' family"):
        musicpeft.load_adapter(tiny_audioldm2_pipeline(), musicgen_dir)
    with pytest.raises(AdapterFileError, match="for the 'audioldm2' family, but the base is of the 'musicgen' family"):
        musicpeft.load_adapter(tiny_musicgen(), pipe_dir)
    # Without the manifest, the config's own family record still stops it.
    os.remove(pipe_dir / "musicpeft_adapter.json")
    with pytest.raises(ValueError, match="made for the 'audioldm2' family"):
        musicpeft.load_adapter(tiny_musicgen(), pipe_dir / "text_encoder_2")


def test_width_mismatch_on_the_pipeline_is_refused(tmp_path):
    pipe = tiny_audioldm2_pipeline()
    musicpeft.add_adapter(pipe, SoftMusicPromptConfig(num_virtual_tokens=2))
    musicpeft.save_adapter(pipe, tmp_path)
    config_path = tmp_path / "text_encoder_2" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["token_dim"] += 8
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"width {config['token_dim']} does not match the t5 text encoder"):
        musicpeft.load_adapter(tiny_audioldm2_pipeline(), tmp_path)


def test_unsupported_pipeline_is_named():
    from diffusers import DDIMScheduler

    with pytest.raises(UnsupportedModelError, match="audioldm2 .AudioLDM2Pipeline"):
        musicpeft.add_adapter(DDIMScheduler(), SoftMusicPromptConfig(num_virtual_tokens=2))


def test_loading_an_adapter_makes_a_gpt2model_pipeline_generate(tmp_path):
    pipe = tiny_audioldm2_pipeline()
    musicpeft.add_adapter(pipe, SoftMusicPromptConfig(num_virtual_tokens=2))
    musicpeft.save_adapter(pipe, tmp_path)
    published = tiny_audioldm2_pipeline(language_model_class="GPT2Model")
    with pytest.raises(AttributeError, match="_update_model_kwargs_for_generation"):
        generate(published)
    musicpeft.load_adapter(published, tmp_path)
    assert type(published.language_model).__name__ == "GPT2LMHeadModel"
    audio = generate(published)
    assert audio.shape == (1, 20480) and np.isfinite(audio).all() and np.abs(audio).max() > 0
