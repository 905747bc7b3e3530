"""MusicGen-Melody and stereo MusicGen, each added through one family file: detection, soft prompt, LoRA preset,
pivotal tuning, generation and save/load round trips on tiny random-weight models built here."""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import perturb_adapter

import musicpeft
from musicpeft.evaluation.generation import base_family, generate_clips, load_base
from musicpeft.families import (
    FAMILIES,
    MUSICGEN,
    MUSICGEN_MELODY,
    MUSICGEN_STEREO,
    TINY_MUSICGEN_MELODY,
    TINY_MUSICGEN_STEREO,
    LoadedBase,
    family_of,
    get_family,
    unwrap_peft,
)
from musicpeft.tiny import make_t5_tokenizer, tiny_musicgen, tiny_musicgen_processor
from musicpeft.tiny.musicgen_variants import tiny_musicgen_melody, tiny_musicgen_stereo
from musicpeft.training.presets import list_presets, lora_config, preset_modules
from musicpeft.tuners.pivotal_mask import PivotalMaskConfig

PROMPTS = ["a cheerful jig on the violin", "slow piano"]
LAYERS = [f"decoder.model.decoder.layers.{i}" for i in range(2)]


@cache
def _built(kind: str):
    return tiny_musicgen_melody(seed=0) if kind == "melody" else tiny_musicgen_stereo(seed=0)


def build(kind: str):
    return copy.deepcopy(_built(kind))


def processor(kind: str):
    return make_t5_tokenizer() if kind == "melody" else tiny_musicgen_processor()


FAMILY = {"melody": MUSICGEN_MELODY, "stereo": MUSICGEN_STEREO}
KINDS = list(FAMILY)


def logits(model, inputs, steps: int = 3) -> torch.Tensor:
    """Logits of the last `steps` decoder positions (MusicGen-Melody also returns its prepended positions').

    Inference: eval mode (each module's own mode is restored after), as a loaded adapter runs.
    """
    rows = inputs["input_ids"].shape[0] * unwrap_peft(model).decoder.num_codebooks
    dec = torch.arange(rows * steps).reshape(rows, steps) % 64
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            return model(**inputs, decoder_input_ids=dec).logits[:, -steps:]
    finally:
        for module, mode in modes.items():
            module.training = mode


# ------------------------------------------------------------------------------------------------ detection


def test_each_variant_is_found_from_the_model_its_files_and_its_tiny_name(tmp_path):
    assert family_of(tiny_musicgen()) is MUSICGEN  # the stereo variant does not claim mono checkpoints
    for kind, family in FAMILY.items():
        model = build(kind)
        assert family_of(model) is family
        model.save_pretrained(tmp_path / kind)
        assert base_family(str(tmp_path / kind)) == family.name
    assert base_family(TINY_MUSICGEN_MELODY) == "musicgen-melody"
    assert base_family(TINY_MUSICGEN_STEREO) == "musicgen-stereo"
    assert MUSICGEN_STEREO.variant_of == MUSICGEN.name and get_family("musicgen-stereo") is MUSICGEN_STEREO


def test_melody_targets_follow_its_layout_without_cross_attention():
    model = build("melody")
    names = [n for n, _ in model.named_modules()]
    assert not any("encoder_attn" in n for n in names)
    assert MUSICGEN_MELODY.module_names(model, MUSICGEN_MELODY.self_attention_value) == [
        f"{layer}.self_attn.v_proj" for layer in LAYERS]
    # The text reaches the decoder only through enc_to_dec_proj (24 -> 32), prepended to the audio tokens.
    assert MUSICGEN_MELODY.module_names(model, MUSICGEN_MELODY.cross_attention_key_value) == ["enc_to_dec_proj"]
    assert tuple(model.enc_to_dec_proj.weight.shape) == (32, 24)
    assert sorted(preset_modules(model, "self_attn")) == sorted(
        f"{layer}.self_attn.{p}_proj" for layer in LAYERS for p in ("q", "k", "v", "out"))
    assert sorted(preset_modules(model, "attn")) == sorted([*preset_modules(model, "self_attn"), "enc_to_dec_proj"])
    assert sorted(preset_modules(model, "attn_mlp")) == sorted(
        [*preset_modules(model, "attn"), *(f"{layer}.{fc}" for layer in LAYERS for fc in ("fc1", "fc2"))])


def test_stereo_shares_musicgens_targets_and_interleaves_two_channels():
    model = build("stereo")
    assert model.config.decoder.audio_channels == 2 and model.decoder.num_codebooks == 8
    assert list_presets(model) == list_presets(MUSICGEN)
    for preset in list_presets(MUSICGEN):
        assert preset_modules(model, preset) == preset_modules(tiny_musicgen(), preset)


# ------------------------------------------------------------------------------------------------ adapters


@pytest.mark.parametrize("kind", KINDS)
def test_soft_prompt_changes_forward_and_generate_and_round_trips(kind, tmp_path):
    tokenizer = processor(kind)
    inputs = tokenizer(text=PROMPTS, padding=True, return_tensors="pt")
    base = logits(build(kind), inputs)
    model = build(kind)
    peft_model = musicpeft.add_adapter(model, musicpeft.SoftMusicPromptConfig(num_virtual_tokens=3))
    perturb_adapter(peft_model, seed=1, scale=0.5)
    prompted = logits(peft_model, inputs)
    assert prompted.shape == base.shape and not torch.allclose(prompted, base)

    def first_scores(m):
        with torch.no_grad():
            out = m.generate(**inputs, do_sample=False, guidance_scale=3.0, max_new_tokens=2,
                             return_dict_in_generate=True, output_scores=True)
        return out.scores[0]

    with_prompt = first_scores(peft_model)
    with peft_model.disable_adapter():
        without = first_scores(peft_model)
    assert with_prompt.shape == without.shape and not torch.allclose(with_prompt, without)

    musicpeft.save_adapter(peft_model, tmp_path / "prompt")
    loaded = musicpeft.load_adapter(build(kind), tmp_path / "prompt")
    assert torch.equal(logits(loaded, inputs), prompted)
    assert torch.equal(first_scores(loaded), with_prompt)


@pytest.mark.parametrize("kind", KINDS)
def test_lora_preset_round_trips(kind, tmp_path):
    tokenizer = processor(kind)
    inputs = tokenizer(text=PROMPTS, padding=True, return_tensors="pt")
    base = logits(build(kind), inputs)
    model = build(kind)
    peft_model = musicpeft.add_adapter(model, lora_config(model, "attn", r=2))
    perturb_adapter(peft_model, seed=2, scale=0.2)
    adapted = logits(peft_model, inputs)
    assert not torch.allclose(adapted, base)
    musicpeft.save_adapter(peft_model, tmp_path / "lora")
    loaded = musicpeft.load_adapter(build(kind), tmp_path / "lora")
    assert torch.equal(logits(loaded, inputs), adapted)


@pytest.mark.parametrize("kind", KINDS)
def test_pivotal_mask_and_tuning_target_the_family_modules_and_round_trip(kind, tmp_path):
    family = FAMILY[kind]
    model, tokenizer = build(kind), processor(kind)
    musicpeft.bind_processor(model, tokenizer)
    masked = musicpeft.add_adapter(model, PivotalMaskConfig(concepts=["koto"], stage="mask"), "mask_koto")
    mask_targets = sorted(n for n, m in masked.base_model.named_modules() if hasattr(m, "pivotal_mask")
                          and "mask_koto" in m.pivotal_mask)
    assert [n.removeprefix("model.") for n in mask_targets] == [f"{layer}.self_attn.v_proj" for layer in LAYERS]

    model, tokenizer = build(kind), processor(kind)
    musicpeft.bind_processor(model, tokenizer)
    config = PivotalMaskConfig(concepts=["koto"], stage="tune", selection="random", percent=10)
    peft_model = musicpeft.add_adapter(model, config)
    cross = family.module_names(build(kind), family.cross_attention_key_value)
    expected_cross = sum(build(kind).get_submodule(n).weight.numel() for n in cross)
    counts = peft_model.base_model.trainable_counts("default")
    assert counts["cross_attention"] == expected_cross and counts["self_attention_values"] > 0
    perturb_adapter(peft_model, seed=3, scale=0.2)
    text = ["a <koto> jig", "slow <koto> waltz"]
    inputs = tokenizer(text=text, padding=True, return_tensors="pt")
    adapted = logits(peft_model, inputs)
    musicpeft.save_adapter(peft_model, tmp_path / "pivotal")
    fresh_tokenizer = processor(kind)
    loaded = musicpeft.load_adapter(build(kind), tmp_path / "pivotal", processor=fresh_tokenizer)
    fresh = fresh_tokenizer(text=text, padding=True, return_tensors="pt")
    assert torch.equal(fresh["input_ids"], inputs["input_ids"])
    assert torch.equal(logits(loaded, fresh), adapted)


# ------------------------------------------------------------------------------------------------ generation


@pytest.mark.parametrize(("name", "channels"), [(TINY_MUSICGEN_MELODY, 1), (TINY_MUSICGEN_STEREO, 2)])
def test_generate_clips_through_the_family(name, channels):
    base = load_base(name, "cpu")
    assert isinstance(base, LoadedBase) and base.family == base_family(name)
    clips = generate_clips(base, base.model, PROMPTS, [5, 6], seconds=0.1, guidance_scale=3.0)
    samples = int(round(0.1 * base.sampling_rate))
    assert [c.shape for c in clips] == [(samples,) if channels == 1 else (2, samples)] * 2
    # A prompt's clip depends on its seed, not on its batch (equal up to the codec's float rounding; MusicGen-
    # Melody batches only prompts of one token length, since its padding is prepended to the decoder input)...
    alone = generate_clips(base, base.model, PROMPTS[1:], [6], seconds=0.1, guidance_scale=3.0, batch_size=1)
    np.testing.assert_allclose(alone[0], clips[1], rtol=0, atol=1e-6)
    # ...and another seed gives another clip, by far more than that rounding.
    reseeded = generate_clips(base, base.model, PROMPTS[1:], [99], seconds=0.1, guidance_scale=3.0)
    assert np.abs(reseeded[0] - clips[1]).max() > 1e-5
    if channels == 2:
        assert np.abs(clips[0][0] - clips[0][1]).max() > 1e-5  # two channels, each from its own codebooks


def test_melody_trains_with_musicgens_recipe_through_the_cli(tmp_path):
    import json

    from musicpeft.cli import main

    out = tmp_path / "adapter"
    assert main(["train", "--output-dir", str(out), "--base", TINY_MUSICGEN_MELODY, "--data", "rendered:107:3",
                 "--eval-fraction", "0", "--max-steps", "1", "--batch-size", "2", "--clip-seconds", "0.5",
                 "--num-virtual-tokens", "2", "--encode-cache", "none"]) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert (summary["family"], summary["steps"], summary["clip_seconds"]) == ("musicgen-melody", 1, 0.5)
    base = load_base(TINY_MUSICGEN_MELODY, "cpu")
    inputs = base.processor(text=PROMPTS, padding=True, return_tensors="pt")
    before = logits(base.model, inputs)
    assert not torch.allclose(logits(musicpeft.load_adapter(base.model, summary["adapter_dir"]), inputs), before)


def test_stereo_has_no_training_recipe_and_train_says_so(tmp_path):
    from musicpeft.training.runner import TrainArguments, run_training

    assert MUSICGEN_STEREO.training is None and MUSICGEN_MELODY.training == MUSICGEN.training
    with pytest.raises(ValueError, match="no training recipe for the musicgen-stereo family"):
        run_training(TrainArguments(base=TINY_MUSICGEN_STEREO, data="rendered:0:2", output_dir=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------ knowledge


def test_no_family_name_is_compared_outside_the_families_package():
    """Family knowledge lives in musicpeft/families: no other module branches on a family's name."""
    root = Path(musicpeft.__file__).parent
    names = "|".join(re.escape(f.name) for f in FAMILIES)
    compared = re.compile(rf"""(==|!=|\bin\b)\s*\(?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    found = [f"{path.relative_to(root)}:{i}" for path in root.rglob("*.py") if "families" not in path.parts
             for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if compared.search(line)]
    assert found == []
