"""Saving and loading adapters when something is wrong: faults, bad files, refused loads (issue 9).

Every refused load is checked to leave the model or pipeline exactly as it was: state dict, module tree,
requires_grad flags, hooks and outputs.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from fixtures import musicgen_inputs, musicgen_logits, tiny_audioldm2_pipeline, tiny_musicgen
from fixtures import perturb_adapter as perturb
from peft import PeftModel
from safetensors.torch import load_file, save_file

import musicpeft
from musicpeft import AdapterFileError, PivotalMaskConfig, SoftMusicPromptConfig
from musicpeft.adapters import lifecycle
from musicpeft.training.presets import lora_config
from musicpeft.tuners.concept_identifier import placeholders

WEIGHTS = "adapter_model.safetensors"


@pytest.fixture(scope="module")
def inputs():
    return musicgen_inputs()


def saved_prompt(tmp_path, num_virtual_tokens: int = 3):
    """A trained-looking MusicGen soft prompt saved with musicpeft; returns (folder, PeftModel)."""
    peft_model = musicpeft.add_adapter(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=num_virtual_tokens))
    perturb(peft_model)
    folder = tmp_path / "prompt"
    musicpeft.save_adapter(peft_model, folder)
    return folder, peft_model


def edit_weights(folder, edit) -> None:
    path = folder / WEIGHTS
    weights = load_file(path)
    edit(weights)
    save_file(weights, path, metadata={"format": "pt"})


def base_tensor(name: str) -> torch.Tensor:
    """A tensor shaped like a base weight of the tiny MusicGen (so loading it would silently succeed)."""
    return torch.zeros_like(tiny_musicgen().state_dict()[name])


def edit_json(path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def module_state(module: torch.nn.Module) -> dict:
    """Everything a refused load must leave alone."""
    return {
        "state": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "tree": [(name, type(m).__name__) for name, m in module.named_modules()],
        "grad": {name: p.requires_grad for name, p in module.named_parameters()},
        "hooks": [(n, len(m._forward_pre_hooks), len(m._forward_hooks)) for n, m in module.named_modules()],
        "attrs": sorted(vars(module)),
    }


def assert_same(before: dict, after: dict) -> None:
    for key in ("tree", "grad", "hooks", "attrs"):
        assert before[key] == after[key], key
    assert before["state"].keys() == after["state"].keys()
    for name, value in before["state"].items():
        assert torch.equal(value, after["state"][name]), name


def pipe_state(pipe) -> dict:
    return {
        "components": {n: module_state(m) for n, m in pipe.components.items() if isinstance(m, torch.nn.Module)},
        "attrs": sorted(vars(pipe)),
    }


def assert_same_pipe(before: dict, after: dict) -> None:
    assert before["attrs"] == after["attrs"]
    assert before["components"].keys() == after["components"].keys()
    for name in before["components"]:
        assert_same(before["components"][name], after["components"][name])


def encode(pipe):
    return pipe.encode_prompt("a cheerful jig", "cpu", 1, True, negative_prompt="loud")


def generate(pipe) -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    return pipe("a cheerful jig", num_inference_steps=2, audio_length_in_s=1.28, generator=generator).audios


def adapted_pipeline(seed: int = 0):
    """An AudioLDM2 pipeline with a (perturbed) soft prompt on T5 and a LoRA on the U-Net."""
    pipe = tiny_audioldm2_pipeline()
    musicpeft.add_adapter(pipe, SoftMusicPromptConfig(num_virtual_tokens=2))
    musicpeft.add_adapter(pipe, lora_config(pipe, "cross_attn", r=2))
    for component in ("text_encoder_2", "unet"):
        perturb(getattr(pipe, component), seed)
    return pipe


def files_of(folder) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), "rb").read()
        for root, _, names in os.walk(folder)
        for name in names
    }


# -- 1. saving is all or nothing for the folder -------------------------------------------------------------
def test_a_failed_save_leaves_the_previous_adapter_whole(tmp_path, monkeypatch):
    import safetensors.torch

    folder = tmp_path / "adapter"
    musicpeft.save_adapter(adapted_pipeline(seed=1), folder)
    before = files_of(folder)
    real_save, calls = safetensors.torch.save_file, []

    def failing_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second component's weights
            raise OSError("No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    with pytest.raises(OSError, match="No space left"):
        musicpeft.save_adapter(adapted_pipeline(seed=2), folder)
    assert files_of(folder) == before  # not one component new and one old
    assert sorted(os.listdir(tmp_path)) == ["adapter"]  # no staging folder left behind


def test_a_save_replaces_the_whole_adapter_and_keeps_other_files(tmp_path):
    folder = tmp_path / "adapter"
    musicpeft.save_adapter(adapted_pipeline(), folder)
    (folder / "notes.txt").write_text("mine")
    (tmp_path / ".adapter.musicpeft-staging-killed").mkdir()  # left by a killed save
    pipe = tiny_audioldm2_pipeline()
    musicpeft.add_adapter(pipe, SoftMusicPromptConfig(num_virtual_tokens=2))
    musicpeft.save_adapter(pipe, folder)
    # The U-Net LoRA of the earlier save is gone: it would otherwise load beside the new prompt.
    assert sorted(os.listdir(folder)) == ["musicpeft_adapter.json", "notes.txt", "text_encoder_2"]
    assert (folder / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["adapter"]


def test_a_failed_model_save_leaves_the_previous_adapter(tmp_path, monkeypatch):
    folder, _ = saved_prompt(tmp_path)
    before = files_of(folder)
    other = musicpeft.add_adapter(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=5))

    def fail(*args, **kwargs):
        raise OSError("killed")

    monkeypatch.setattr(lifecycle, "write_manifest", fail)  # after the weights and config are written
    with pytest.raises(OSError, match="killed"):
        musicpeft.save_adapter(other, folder)
    assert files_of(folder) == before


# -- 2. only the keys the config creates ------------------------------------------------------------------
def test_a_key_naming_a_base_weight_is_refused(tmp_path):
    folder, _ = saved_prompt(tmp_path)
    stray = {"base_model.model.text_encoder.shared.weight": base_tensor("text_encoder.shared.weight")}
    edit_weights(folder, lambda w: w.update(stray))
    for load in (PeftModel.from_pretrained, musicpeft.load_adapter):
        model = tiny_musicgen()
        before = module_state(model)
        with pytest.raises(ValueError, match=r"safetensors.*text_encoder\.shared\.weight.*does not create"):
            load(model, folder)
        assert_same(before, module_state(model))


def test_a_lora_file_cannot_replace_a_head(tmp_path):
    peft_model = musicpeft.add_adapter(tiny_musicgen(), lora_config(tiny_musicgen(), "attn", r=2))
    perturb(peft_model)
    musicpeft.save_adapter(peft_model, tmp_path)
    stray = {"base_model.model.decoder.lm_heads.0.weight": base_tensor("decoder.lm_heads.0.weight")}
    edit_weights(tmp_path, lambda w: w.update(stray))
    model = tiny_musicgen()
    before = module_state(model)
    with pytest.raises(AdapterFileError, match=r"lm_heads\.0\.weight.*does not create"):
        musicpeft.load_adapter(model, tmp_path)
    assert_same(before, module_state(model))


def test_a_pivotal_file_with_a_stray_key_is_refused_by_peft_too(tmp_path):
    peft_model = musicpeft.add_adapter(
        tiny_musicgen(), PivotalMaskConfig(concepts=["koto"], stage="tune", selection="random", percent=5.0)
    )
    perturb(peft_model)
    musicpeft.save_adapter(peft_model, tmp_path)
    stray = {"base_model.model.decoder.lm_heads.0.weight": base_tensor("decoder.lm_heads.0.weight")}
    edit_weights(tmp_path, lambda w: w.update(stray))
    for load in (PeftModel.from_pretrained, musicpeft.load_adapter):
        model = tiny_musicgen()
        before = module_state(model)
        with pytest.raises(ValueError, match=r"lm_heads\.0\.weight.*does not create"):
            load(model, tmp_path)
        assert_same(before, module_state(model))  # no PivotalLinear or concept wrapper left behind


def test_a_refused_concept_load_leaves_the_pipeline_tokenizers_alone(tmp_path):
    from musicpeft import ConceptIdentifierConfig

    pipe = tiny_audioldm2_pipeline()
    peft_model = musicpeft.add_adapter(pipe, ConceptIdentifierConfig(concepts=["koto"], tokens_per_concept=2))
    perturb(peft_model)
    musicpeft.save_adapter(pipe, tmp_path)
    good = tmp_path / "good"
    musicpeft.save_adapter(pipe, good)
    edit_weights(tmp_path, lambda w: next(v for k, v in sorted(w.items()) if v.is_floating_point()).fill_(float("nan")))
    fresh = tiny_audioldm2_pipeline()
    encode(fresh)
    before = pipe_state(fresh)
    with pytest.raises(ValueError, match="NaN"):
        musicpeft.load_adapter(fresh, tmp_path)
    assert_same_pipe(before, pipe_state(fresh))
    # No placeholder expansion left on the tokenizers (it would raise for unknown placeholders).
    for name in ("tokenizer", "tokenizer_2"):
        tokenizer = getattr(fresh, name)
        assert placeholders.placeholder_definitions(tokenizer) == {}
        assert not {"_encode_plus", "tokenize"} & set(vars(tokenizer)), name
    assert "<koto>" in fresh.tokenizer_2.decode(fresh.tokenizer_2("a <koto> jig")["input_ids"])
    # The identifier tokens the refused load added stay in the vocabulary as the pipeline's own: the good
    # adapter of the same concept loads afterwards (they are not taken for foreign tokens).
    musicpeft.load_adapter(fresh, good)
    assert "<koto>" in placeholders.placeholder_definitions(fresh.tokenizer_2)


# -- 3. a refused load leaves everything as it was --------------------------------------------------------
def test_size_mismatch_leaves_no_prompt_attached(tmp_path, inputs):
    folder, _ = saved_prompt(tmp_path, num_virtual_tokens=3)
    edit_json(folder / "adapter_config.json", lambda c: c.update(num_virtual_tokens=4))
    for load in (PeftModel.from_pretrained, musicpeft.load_adapter):
        model = tiny_musicgen()
        before, logits = module_state(model), musicgen_logits(model, inputs)
        with pytest.raises(ValueError, match=r"shape \[3, 32\]; this adapter's config makes it \[4, 32\]"):
            load(model, folder)
        assert_same(before, module_state(model))
        assert torch.equal(musicgen_logits(model, inputs), logits)


def test_a_refused_second_adapter_leaves_the_first_untouched(tmp_path, inputs):
    first, _ = saved_prompt(tmp_path / "a")
    second, _ = saved_prompt(tmp_path / "b", num_virtual_tokens=4)
    stray = {"base_model.model.text_encoder.shared.weight": base_tensor("text_encoder.shared.weight")}
    edit_weights(second, lambda w: w.update(stray))
    peft_model = musicpeft.load_adapter(tiny_musicgen(), first, adapter_name="a")
    before, logits = module_state(peft_model), musicgen_logits(peft_model, inputs)
    with pytest.raises(AdapterFileError, match="shared.weight"):
        musicpeft.load_adapter(peft_model, second, adapter_name="b")
    assert list(peft_model.peft_config) == ["a"]
    assert_same(before, module_state(peft_model))
    assert torch.equal(musicgen_logits(peft_model, inputs), logits)


def test_a_refused_pipeline_load_leaves_the_pipeline_working(tmp_path):
    folder = tmp_path / "adapter"
    musicpeft.save_adapter(adapted_pipeline(), folder)
    # The prompt (loaded first) is fine; the U-Net LoRA is broken.
    edit_weights(folder / "unet", lambda w: w.update({k: torch.full_like(v, float("nan")) for k, v in w.items()}))
    pipe = tiny_audioldm2_pipeline()
    encoded = encode(pipe)  # first: transformers adds its output-capturing hooks on a model's first call
    before = pipe_state(pipe)
    with pytest.raises(AdapterFileError, match=r"unet/adapter_model.safetensors.*NaN"):
        musicpeft.load_adapter(pipe, folder)
    assert_same_pipe(before, pipe_state(pipe))
    for got, want in zip(encode(pipe), encoded, strict=True):
        assert torch.equal(got, want)


# -- 4. NaN/Inf and non-float values ----------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["nan", "inf", "int"])
def test_broken_values_are_refused_naming_file_and_key(tmp_path, bad):
    folder, _ = saved_prompt(tmp_path)
    key = "base_model.model.text_encoder.soft_prompt.soft_prompt_embeddings"

    def spoil(weights):
        if bad == "int":
            weights[key] = weights[key].to(torch.int32)
        else:
            weights[key][0, 0] = float(bad)

    edit_weights(folder, spoil)
    message = r"adapter_model.safetensors.*soft_prompt_embeddings.*" + ("NaN/Inf" if bad != "int" else "I32")
    for load in (PeftModel.from_pretrained, musicpeft.load_adapter):
        model = tiny_musicgen()
        before = module_state(model)
        with pytest.raises(ValueError, match=message):
            load(model, folder)
        assert_same(before, module_state(model))


def test_nan_in_a_lora_file_is_refused(tmp_path):
    peft_model = musicpeft.add_adapter(tiny_musicgen(), lora_config(tiny_musicgen(), "attn", r=2))
    perturb(peft_model)
    musicpeft.save_adapter(peft_model, tmp_path)
    edit_weights(tmp_path, lambda w: next(v for k, v in sorted(w.items()) if "lora_B" in k).fill_(float("inf")))
    with pytest.raises(AdapterFileError, match=r"adapter_model.safetensors.*lora_B.*NaN/Inf"):
        PeftModel.from_pretrained(tiny_musicgen(), tmp_path)
    with pytest.raises(AdapterFileError, match=r"adapter_model.safetensors.*lora_B.*NaN/Inf"):
        musicpeft.load_adapter(tiny_musicgen(), tmp_path)


# -- 5. manifests and configs -----------------------------------------------------------------------------
MANIFEST_DAMAGE = {
    "empty components": (lambda m: m.update(components={}), "'components' is empty"),
    "parent path": (lambda m: m.update(components={"text_encoder_2": "../outside"}), "outside the adapter folder"),
    "absolute path": (lambda m: m.update(components={"text_encoder_2": "/etc"}), "outside the adapter folder"),
    "components not a mapping": (lambda m: m.update(components=["unet"]), "'components' must map"),
    "family not a string": (lambda m: m.update(family=["audioldm2"]), "string 'family'"),
    "not an object": (lambda m: m.clear() or m.update(x=1), "string 'family'"),
}


@pytest.mark.parametrize("damage", sorted(MANIFEST_DAMAGE))
def test_bad_manifests_are_named(tmp_path, damage):
    folder = tmp_path / "adapter"
    pipe = tiny_audioldm2_pipeline()
    musicpeft.add_adapter(pipe, SoftMusicPromptConfig(num_virtual_tokens=2))
    musicpeft.save_adapter(pipe, folder)
    (tmp_path / "outside").mkdir()
    config = (folder / "text_encoder_2" / "adapter_config.json").read_text()
    (tmp_path / "outside" / "adapter_config.json").write_text(config)
    edit, message = MANIFEST_DAMAGE[damage]
    edit_json(folder / "musicpeft_adapter.json", edit)
    fresh = tiny_audioldm2_pipeline()
    before = pipe_state(fresh)
    with pytest.raises(AdapterFileError, match=f"musicpeft_adapter.json.*{message}"):
        musicpeft.load_adapter(fresh, folder)
    assert_same_pipe(before, pipe_state(fresh))


def test_a_model_manifest_naming_components_is_refused(tmp_path):
    folder, _ = saved_prompt(tmp_path)
    edit_json(folder / "musicpeft_adapter.json", lambda m: m.update(components={"decoder": "../x"}))
    with pytest.raises(AdapterFileError, match="musicpeft_adapter.json.*'components' must be empty"):
        musicpeft.load_adapter(tiny_musicgen(), folder)


@pytest.mark.parametrize(
    "damage",
    [
        ("musicpeft_adapter.json", "{not json", "musicpeft_adapter.json: unreadable manifest"),
        ("adapter_config.json", "{not json", "adapter_config.json: not readable JSON"),
        ("adapter_config.json", json.dumps({"peft_type": "NO_SUCH_METHOD"}), "NO_SUCH_METHOD.*pip install musicpeft"),
        ("adapter_config.json", json.dumps({"peft_type": "SOFT_MUSIC_PROMPT", "num_virtual_tokens": "many"}),
         "adapter_config.json: invalid SoftMusicPromptConfig .num_virtual_tokens must be a positive integer"),
        ("adapter_config.json", "[1, 2]", "adapter_config.json: expected a JSON object"),
    ],
    ids=["manifest json", "config json", "unknown peft_type", "wrong type", "config not an object"],
)
def test_bad_config_files_are_named(tmp_path, damage):
    name, text, message = damage
    folder, _ = saved_prompt(tmp_path)
    (folder / name).write_text(text)
    model = tiny_musicgen()
    before = module_state(model)
    with pytest.raises(AdapterFileError, match=message):
        musicpeft.load_adapter(model, folder)
    assert_same(before, module_state(model))


# -- 6. the config is checked against the file before anything is allocated ------------------------------
def test_a_huge_num_virtual_tokens_is_refused_before_allocating(tmp_path, monkeypatch):
    from musicpeft.tuners.soft_prompt import layer

    folder, _ = saved_prompt(tmp_path)
    edit_json(folder / "adapter_config.json", lambda c: c.update(num_virtual_tokens=10**9))
    real = layer.initial_prompt

    def guarded(config, embedding):
        assert config.num_virtual_tokens < 1000, "allocating the prompt the config claims"
        return real(config, embedding)

    monkeypatch.setattr(layer, "initial_prompt", guarded)
    for load in (PeftModel.from_pretrained, musicpeft.load_adapter):
        with pytest.raises(AdapterFileError, match=r"shape \[3, 32\]; this adapter's config makes it \[10+, 32\]"):
            load(tiny_musicgen(), folder)


# -- 7. low_cpu_mem_usage ---------------------------------------------------------------------------------
def test_low_cpu_mem_usage_loads_a_soft_prompt(tmp_path, inputs):
    folder, trained = saved_prompt(tmp_path)
    loaded = PeftModel.from_pretrained(tiny_musicgen(), folder, low_cpu_mem_usage=True)
    assert torch.equal(musicgen_logits(loaded, inputs), musicgen_logits(trained, inputs))


# -- 8. a cached pickle offline needs the opt-in ----------------------------------------------------------
def test_an_offline_cached_pickle_needs_the_opt_in(tmp_path, inputs):
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE  # conftest: the suite runs offline
    peft_model = musicpeft.add_adapter(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=3))
    perturb(peft_model)
    snapshot = tmp_path / "cache" / "models--someone--prompt" / "snapshots" / ("0" * 40)
    peft_model.save_pretrained(snapshot, safe_serialization=False)
    (tmp_path / "cache" / "models--someone--prompt" / "refs").mkdir()
    (tmp_path / "cache" / "models--someone--prompt" / "refs" / "main").write_text("0" * 40)
    assert (snapshot / "adapter_model.bin").exists() and not (snapshot / WEIGHTS).exists()
    cache = str(tmp_path / "cache")
    with pytest.raises(AdapterFileError, match="someone/prompt has no adapter_model.safetensors.*allow_pickle"):
        PeftModel.from_pretrained(tiny_musicgen(), "someone/prompt", cache_dir=cache)
    with musicpeft.allow_pickle_adapters():
        loaded = PeftModel.from_pretrained(tiny_musicgen(), "someone/prompt", cache_dir=cache)
    assert torch.equal(musicgen_logits(loaded, inputs), musicgen_logits(peft_model, inputs))


# -- 9. what a plain peft user needs to know --------------------------------------------------------------
def test_the_config_says_what_loads_it(tmp_path):
    folder, _ = saved_prompt(tmp_path)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert "pip install musicpeft; import musicpeft" in config["requires"]
    assert isinstance(PeftModel.from_pretrained(tiny_musicgen(), folder), PeftModel)  # the field loads back


# -- 10. only the adapter trains on a pipeline ------------------------------------------------------------
@pytest.mark.parametrize("method", ["soft_prompt", "lora"])
def test_only_the_adapter_trains_on_a_pipeline(method):
    pipe = tiny_audioldm2_pipeline()
    config = SoftMusicPromptConfig(num_virtual_tokens=2) if method == "soft_prompt" else lora_config(pipe, "attn", r=2)
    musicpeft.add_adapter(pipe, config)
    trainable = [
        f"{name}.{p_name}"
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
        for p_name, p in module.named_parameters()
        if p.requires_grad
    ]
    marker = "soft_prompt_embeddings" if method == "soft_prompt" else ".lora_"
    assert trainable and all(marker in name for name in trainable), trainable[:5]


# -- 11. AudioLDM2: save_pretrained and plain peft on a component -----------------------------------------
def test_save_pretrained_of_an_adapted_pipeline_is_refused(tmp_path):
    pipe = adapted_pipeline()
    with pytest.raises(RuntimeError, match="carries musicpeft adapters .text_encoder_2, unet.*musicpeft.save_adapter"):
        pipe.save_pretrained(tmp_path / "pipe")
    assert not (tmp_path / "pipe").exists()


def test_plain_peft_on_the_t5_component_explains_itself(tmp_path):
    pipe = tiny_audioldm2_pipeline()
    musicpeft.add_adapter(pipe, SoftMusicPromptConfig(num_virtual_tokens=2))
    perturb(pipe.text_encoder_2)
    adapted = generate(pipe)
    musicpeft.save_adapter(pipe, tmp_path)
    fresh = tiny_audioldm2_pipeline()
    PeftModel.from_pretrained(fresh.text_encoder_2, tmp_path / "text_encoder_2")
    with pytest.raises(RuntimeError, match="text_encoder_2 text encoder carries a soft prompt.*musicpeft.load_adapter"):
        generate(fresh)
    # Loaded as a pipeline adapter, the same folder generates what was saved.
    np.testing.assert_array_equal(generate(musicpeft.load_adapter(tiny_audioldm2_pipeline(), tmp_path)), adapted)


def test_a_save_through_a_link_keeps_the_link_and_normal_permissions(tmp_path):
    real = tmp_path / "real"
    musicpeft.save_adapter(adapted_pipeline(seed=1), real)
    os.symlink(real, tmp_path / "link")
    musicpeft.save_adapter(adapted_pipeline(seed=2), tmp_path / "link")
    assert os.path.islink(tmp_path / "link") and os.path.realpath(tmp_path / "link") == str(real)
    os.makedirs(tmp_path / "plain")
    assert os.stat(real).st_mode & 0o777 == os.stat(tmp_path / "plain").st_mode & 0o777  # not mkdtemp's 0700
    assert sorted(os.listdir(tmp_path)) == ["link", "plain", "real"]


def test_concept_and_pivotal_configs_say_what_loads_them(tmp_path):
    from musicpeft import ConceptIdentifierConfig, PivotalMaskConfig

    for config in (ConceptIdentifierConfig(concepts=["koto"]), PivotalMaskConfig(concepts=["koto"])):
        model = musicpeft.add_adapter(tiny_musicgen(), config)
        folder = tmp_path / type(config).__name__
        musicpeft.save_adapter(model, folder)
        saved = json.loads((folder / "adapter_config.json").read_text())
        assert "pip install musicpeft; import musicpeft" in saved["requires"]
        assert isinstance(musicpeft.load_adapter(tiny_musicgen(), folder), PeftModel)  # the field loads back
