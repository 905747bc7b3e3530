"""Named LoRA presets and full fine-tuning on stock peft, for MusicGen and AudioLDM2."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer

from musicpeft.families import AUDIOLDM2, MUSICGEN
from musicpeft.families.audioldm2 import attention_streams
from musicpeft.tiny import tiny_musicgen
from musicpeft.tiny.audioldm2 import tiny_audioldm2_pipeline
from musicpeft.training.presets import (
    adapted_module,
    full_finetune_parameters,
    list_presets,
    lora_config,
    prepare_full_finetune,
    preset_modules,
)

R = 4
PROJ = ("to_q", "to_k", "to_v", "to_out.0")




def _lora_modules(root: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: m for name, m in root.named_modules() if isinstance(m, LoraLayer)}


def _expected_lora_count(root: torch.nn.Module, names: list[str]) -> int:
    return sum(R * (root.get_submodule(n).in_features + root.get_submodule(n).out_features) for n in names)


# ----------------------------------------------------------------------------------------------- MusicGen


def _musicgen_expected(preset: str) -> set[str]:
    layers = [f"decoder.model.decoder.layers.{i}" for i in range(2)]
    proj = ("q_proj", "k_proj", "v_proj", "out_proj")
    attn = {"self_attn": ("self_attn",), "attn": ("self_attn", "encoder_attn"),
            "attn_mlp": ("self_attn", "encoder_attn")}[preset]
    names = {f"{layer}.{a}.{p}" for layer in layers for a in attn for p in proj}
    if preset == "attn_mlp":
        names |= {f"{layer}.{fc}" for layer in layers for fc in ("fc1", "fc2")}
    return names


@pytest.mark.parametrize("preset", ["self_attn", "attn", "attn_mlp"])
def test_musicgen_preset_wraps_exactly_its_modules(preset):
    base = tiny_musicgen()
    reference = tiny_musicgen()
    config = lora_config(base, preset, r=R, alpha=8)
    assert isinstance(config, LoraConfig) and config.target_modules == MUSICGEN.lora_presets[preset]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (R, 8, 0.0)
    expected = _musicgen_expected(preset)
    assert set(preset_modules(base, preset)) == expected
    model = get_peft_model(base, config)
    wrapped = {n.removeprefix("base_model.model.") for n in _lora_modules(model)}
    assert wrapped == expected
    trainable, _ = model.get_nb_trainable_parameters()
    assert trainable == _expected_lora_count(reference, sorted(expected))
    assert all(("lora_" in n) == p.requires_grad for n, p in model.named_parameters())
    # Forward works, and a fresh LoRA (B = 0) leaves the output unchanged.
    inputs = {"input_ids": torch.tensor([[5, 6, 7, 1]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
              "decoder_input_ids": torch.full((4, 3), 64)}
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, reference(**inputs).logits)


# ---------------------------------------------------------------------------------------------- AudioLDM2


def _audioldm2_expected(unet: torch.nn.Module, preset: str) -> set[str]:
    streams = attention_streams(unet)
    attn = {"self_attn": streams["self"], "cross_attn": streams["generated"] + streams["t5"],
            "attn": streams["self"] + streams["generated"] + streams["t5"]}.get(preset)
    if attn is None:  # attn_ff
        attn = streams["self"] + streams["generated"] + streams["t5"]
        blocks = {n.rsplit(".", 1)[0] for n in attn}
        return {f"{a}.{p}" for a in attn for p in PROJ} | {f"{b}.ff.net.{i}" for b in blocks for i in ("0.proj", "2")}
    return {f"{a}.{p}" for a in attn for p in PROJ}


@pytest.mark.parametrize("preset", ["self_attn", "cross_attn", "attn", "attn_ff"])
def test_audioldm2_preset_wraps_exactly_its_unet_modules(preset):
    pipe = tiny_audioldm2_pipeline()
    reference = tiny_audioldm2_pipeline().unet
    assert adapted_module(pipe) is pipe.unet
    config = lora_config(pipe, preset, r=R)
    assert config.target_modules == AUDIOLDM2.lora_presets[preset]
    expected = _audioldm2_expected(pipe.unet, preset)
    assert set(preset_modules(pipe, preset)) == expected == set(preset_modules(pipe.unet, preset))
    model = get_peft_model(pipe.unet, config)
    assert set(_lora_modules(pipe.unet)) == expected  # injected in place: the pipeline's U-Net is adapted
    assert model.get_nb_trainable_parameters()[0] == _expected_lora_count(reference, sorted(expected))
    torch.manual_seed(0)
    sample, t = torch.randn(1, 4, 8, 8), torch.tensor([10])
    states, states_1 = torch.randn(1, 8, 24), torch.randn(1, 5, 32)
    with torch.no_grad():
        out = pipe.unet(sample, t, encoder_hidden_states=states, encoder_hidden_states_1=states_1).sample
        ref = reference(sample, t, encoder_hidden_states=states, encoder_hidden_states_1=states_1).sample
    torch.testing.assert_close(out, ref)


def test_presets_are_listed_with_descriptions_and_unknown_names_fail_clearly():
    pipe_presets = list_presets("audioldm2")
    assert set(pipe_presets) == {"self_attn", "cross_attn", "attn", "attn_ff"}
    assert all(desc and "U-Net" in desc for desc in pipe_presets.values())
    assert set(list_presets(MUSICGEN)) == {"self_attn", "attn", "attn_mlp"}
    with pytest.raises(ValueError, match=r"Unknown LoRA preset 'qkv' for audioldm2; known presets: attn, attn_ff, "
                                         r"cross_attn, self_attn"):
        lora_config(AUDIOLDM2, "qkv")
    with pytest.raises(ValueError, match="sets target_modules from the preset"):
        lora_config(MUSICGEN, "attn", target_modules=["q_proj"])
    assert lora_config("musicgen", "attn", use_rslora=True).use_rslora


def test_full_finetune_trains_only_the_musicgen_decoder():
    model = tiny_musicgen()
    params = prepare_full_finetune(model)
    decoder_ids = {id(p) for p in model.decoder.parameters()}
    assert {id(p) for p in params} == decoder_ids == {id(p) for p in full_finetune_parameters(model)}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == decoder_ids
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    assert not any(p.requires_grad for p in model.audio_encoder.parameters())


def test_full_finetune_trains_only_the_audioldm2_unet():
    pipe = tiny_audioldm2_pipeline()
    params = prepare_full_finetune(pipe)
    assert {id(p) for p in params} == {id(p) for p in pipe.unet.parameters()}
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            flags = {p.requires_grad for p in component.parameters()}
            assert flags == ({True} if name == "unet" else {False}), name
    assert sum(p.numel() for p in params) == sum(p.numel() for p in pipe.unet.parameters())
