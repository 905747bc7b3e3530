"""SoftMusicPromptConfig on MusicGen: registration, training, save/load, peft behaviours, errors."""

from __future__ import annotations

import json
import os

import pytest
import torch
from fixtures import make_t5_tokenizer, perturb_adapter, tiny_musicgen, tiny_musicgen_processor, train_steps
from peft import PeftConfig, PeftModel, PeftType, get_peft_model

import musicpeft
from musicpeft import AdapterFileError, SoftMusicPromptConfig, UnsupportedModelError


@pytest.fixture(scope="module")
def processor():
    return tiny_musicgen_processor()


@pytest.fixture(scope="module")
def batch(processor):
    inputs = processor(text=["a cheerful jig on koto", "haegeum sanjo"], return_tensors="pt", padding=True)
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 64, (2, 12, 4), generator=generator)
    decoder_input_ids = torch.randint(0, 64, (8, 6), generator=generator)
    return inputs, labels, decoder_input_ids


def logits(model, inputs, decoder_input_ids):
    with torch.no_grad():
        return model(**inputs, decoder_input_ids=decoder_input_ids).logits


def test_peft_type_is_registered():
    assert PeftType.SOFT_MUSIC_PROMPT == "SOFT_MUSIC_PROMPT"
    assert "SOFT_MUSIC_PROMPT" in [t.value for t in PeftType]
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.SOFT_MUSIC_PROMPT] is SoftMusicPromptConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.SOFT_MUSIC_PROMPT] is musicpeft.SoftMusicPromptModel


def test_only_the_prompt_trains(capsys):
    model = tiny_musicgen()
    pm = get_peft_model(model, SoftMusicPromptConfig(num_virtual_tokens=30))
    trainable = {n: p.numel() for n, p in pm.named_parameters() if p.requires_grad}
    assert list(trainable) == ["base_model.model.text_encoder.soft_prompt.soft_prompt_embeddings.default"]
    assert sum(trainable.values()) == 30 * 32
    pm.print_trainable_parameters()
    assert "trainable params: 960 " in capsys.readouterr().out


def test_training_lowers_loss_and_keeps_base_bit_identical(batch):
    inputs, labels, _ = batch
    model = tiny_musicgen()
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    pm = get_peft_model(model, SoftMusicPromptConfig(num_virtual_tokens=8))
    losses, _ = train_steps(pm, inputs, labels, steps=15, lr=0.5)
    assert losses[-1] < losses[0] - 0.05, losses
    unloaded = pm.unload()
    for key, value in unloaded.state_dict().items():
        assert torch.equal(value, base_state[key]), key


def test_save_load_round_trip_is_exact(tmp_path, batch, processor):
    inputs, _, dec = batch
    pm = get_peft_model(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=30, init_seed=3))
    perturb_adapter(pm)
    pm.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == "SOFT_MUSIC_PROMPT" and saved["token_dim"] == 32
    assert saved["base_family"] == "musicgen"
    assert isinstance(PeftConfig.from_pretrained(tmp_path), SoftMusicPromptConfig)

    reloaded = PeftModel.from_pretrained(tiny_musicgen(), tmp_path)
    assert torch.equal(logits(pm, inputs, dec), logits(reloaded, inputs, dec))
    generate_kwargs = dict(guidance_scale=3.0, do_sample=True, max_new_tokens=8)
    torch.manual_seed(11)
    first = pm.generate(**inputs, **generate_kwargs)
    torch.manual_seed(11)
    second = reloaded.generate(**inputs, **generate_kwargs)
    assert first.shape[0] == 2 and torch.equal(first, second)


def test_adapter_file_size_for_musicgen_small_width(tmp_path):
    pm = get_peft_model(tiny_musicgen(text_width=768), SoftMusicPromptConfig(num_virtual_tokens=30))
    pm.save_pretrained(tmp_path)
    size = os.path.getsize(tmp_path / "adapter_model.safetensors")
    assert 30 * 768 * 4 <= size <= 100_000, size


def test_prompt_changes_conditioning_and_disable_restores_base(batch):
    inputs, _, dec = batch
    base = logits(tiny_musicgen(), inputs, dec)
    pm = get_peft_model(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=5))
    assert not torch.allclose(logits(pm, inputs, dec), base)
    with pm.disable_adapter():
        assert torch.equal(logits(pm, inputs, dec), base)
    assert not torch.allclose(logits(pm, inputs, dec), base)


def test_named_adapters_and_unload(batch):
    inputs, _, dec = batch
    base = logits(tiny_musicgen(), inputs, dec)
    pm = get_peft_model(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=5, init_seed=1))
    pm.add_adapter("other", SoftMusicPromptConfig(num_virtual_tokens=7, init_seed=2))
    first = logits(pm, inputs, dec)
    pm.set_adapter("other")
    second = logits(pm, inputs, dec)
    assert not torch.allclose(first, second)
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert trainable == ["base_model.model.text_encoder.soft_prompt.soft_prompt_embeddings.other"]
    model = pm.unload()
    assert not any("soft_prompt" in name for name, _ in model.named_modules())
    assert not model.text_encoder._forward_pre_hooks and not model._forward_pre_hooks
    assert torch.equal(logits(model, inputs, dec), base)
    with pytest.raises(NotImplementedError, match="unload"):
        get_peft_model(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=2)).merge_and_unload()


def test_guidance_null_branch_stays_fully_masked():
    pm = get_peft_model(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=3))
    layer = pm.base_model.model.text_encoder.soft_prompt
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    assert layer.extend_attention_mask(mask).tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0]]


def test_encoder_output_position(batch):
    inputs, labels, dec = batch
    pm = get_peft_model(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=4, position="encoder_output"))
    out = pm(**inputs, decoder_input_ids=dec)
    assert out.encoder_last_hidden_state.shape[1] == inputs["input_ids"].shape[1] + 4
    prompt = pm.base_model.model.text_encoder.soft_prompt.soft_prompt_embeddings["default"]
    assert torch.equal(out.encoder_last_hidden_state[0, -4:], prompt)
    pm(**inputs, labels=labels).loss.backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0


def test_initialisations(tmp_path):
    model = tiny_musicgen()
    table = model.text_encoder.get_input_embeddings().weight
    tokenizer = make_t5_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    cfg = SoftMusicPromptConfig(
        num_virtual_tokens=5, init="text", init_text="korean folk", tokenizer_name_or_path=str(tmp_path)
    )
    prompt = musicpeft.SoftMusicPromptModel(model, cfg, "default").prompt_embeddings()
    ids = tokenizer("korean folk", add_special_tokens=False)["input_ids"]
    expected = table[torch.tensor((ids * 5)[:5])]
    assert torch.equal(prompt, expected)

    vocab = get_peft_model(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=6, init="vocab"))
    rows = vocab.base_model.prompt_embeddings()
    assert all(any(torch.equal(row, t) for t in table) for row in rows)

    rand = get_peft_model(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=200)).base_model
    assert rand.prompt_embeddings().std().item() == pytest.approx(table.std().item(), rel=0.2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_base(batch, dtype):
    inputs, labels, _ = batch
    pm = get_peft_model(tiny_musicgen().to(dtype), SoftMusicPromptConfig(num_virtual_tokens=4))
    prompt = pm.base_model.model.text_encoder.soft_prompt.soft_prompt_embeddings["default"]
    assert prompt.dtype == torch.float32  # peft autocasts adapter weights for stable training
    out = pm(**inputs, labels=labels)
    assert out.logits.dtype == dtype and torch.isfinite(out.loss)


@pytest.mark.parametrize("offload", ["cpu", "disk"])
def test_offloaded_base(tmp_path, batch, offload):
    from accelerate import cpu_offload, disk_offload

    inputs, _, dec = batch
    reference = get_peft_model(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=4))
    perturb_adapter(reference)
    reference.save_pretrained(tmp_path / "adapter")
    expected = logits(reference, inputs, dec)
    model = tiny_musicgen()
    if offload == "cpu":
        cpu_offload(model, execution_device=torch.device("cpu"))
    else:
        disk_offload(model, offload_dir=str(tmp_path / "offload"), execution_device=torch.device("cpu"))
    loaded = PeftModel.from_pretrained(model, tmp_path / "adapter")
    assert torch.allclose(logits(loaded, inputs, dec), expected, atol=1e-6)


def test_unsupported_model_is_named():
    from transformers import T5Config, T5EncoderModel

    encoder = T5EncoderModel(T5Config(vocab_size=32, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2))
    with pytest.raises(UnsupportedModelError, match="musicgen.*MusicgenForConditionalGeneration"):
        get_peft_model(encoder, SoftMusicPromptConfig(num_virtual_tokens=2))


def test_width_mismatch_is_refused_before_touching_weights(tmp_path):
    get_peft_model(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=3)).save_pretrained(tmp_path)
    wider = tiny_musicgen(text_width=48)
    with pytest.raises(ValueError, match="width 32 does not match.*48"):
        PeftModel.from_pretrained(wider, tmp_path)
    assert not hasattr(wider.text_encoder, "soft_prompt")
    assert not hasattr(wider, "peft_config")


def test_family_mismatch_is_refused(tmp_path):
    get_peft_model(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=3)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    config["base_family"] = "audioldm2"
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="made for the 'audioldm2' family"):
        PeftModel.from_pretrained(tiny_musicgen(), tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_safetensors_is_named(tmp_path, damage):
    get_peft_model(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=3)).save_pretrained(tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-10] if damage == "truncate" else b"\x00" * 8 + b"not a header")
    with pytest.raises(AdapterFileError, match="adapter_model.safetensors"):
        PeftModel.from_pretrained(tiny_musicgen(), tmp_path)


def test_pickle_adapter_needs_explicit_opt_in(tmp_path, batch):
    inputs, _, dec = batch
    pm = get_peft_model(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=3))
    perturb_adapter(pm)
    pm.save_pretrained(tmp_path, safe_serialization=False)
    assert (tmp_path / "adapter_model.bin").exists()
    with pytest.raises(AdapterFileError, match="pickle"):
        PeftModel.from_pretrained(tiny_musicgen(), tmp_path)
    with musicpeft.allow_pickle_adapters():
        loaded = PeftModel.from_pretrained(tiny_musicgen(), tmp_path)
    assert torch.equal(logits(loaded, inputs, dec), logits(pm, inputs, dec))


@pytest.mark.parametrize("bad", [0, -3])
def test_num_virtual_tokens_must_be_positive(bad):
    with pytest.raises(ValueError, match=f"num_virtual_tokens must be a positive integer, got {bad}"):
        SoftMusicPromptConfig(num_virtual_tokens=bad)


def test_base_loaded_with_device_map_and_disk_offload(tmp_path, batch):
    from transformers import MusicgenForConditionalGeneration

    inputs, _, dec = batch
    tiny_musicgen().save_pretrained(tmp_path / "base")
    reference = get_peft_model(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=4))
    perturb_adapter(reference)
    reference.save_pretrained(tmp_path / "adapter")
    device_map = {"text_encoder": "disk", "audio_encoder": "cpu", "decoder": "disk"}
    model = MusicgenForConditionalGeneration.from_pretrained(
        tmp_path / "base", device_map=device_map, offload_folder=str(tmp_path / "offload")
    )
    assert model.hf_device_map["text_encoder"] == "disk"
    # musicpeft.load_adapter keeps accelerate's hooks (peft's from_pretrained would re-dispatch the model).
    loaded = musicpeft.load_adapter(model, tmp_path / "adapter")
    assert loaded.base_model.model.text_encoder.shared.weight.device.type == "meta"  # still offloaded
    assert torch.allclose(logits(loaded, inputs, dec), logits(reference, inputs, dec), atol=1e-6)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_weights_file_without_the_prompt_is_an_error(tmp_path):
    from safetensors.torch import save_file

    get_peft_model(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=3)).save_pretrained(tmp_path)
    save_file({"base_model.model.text_encoder.other": torch.zeros(3, 32)}, tmp_path / "adapter_model.safetensors")
    with pytest.raises(
        ValueError, match="safetensors: .*lack .*soft_prompt.soft_prompt_embeddings.*; the file holds: .*other"
    ):
        PeftModel.from_pretrained(tiny_musicgen(), tmp_path)
