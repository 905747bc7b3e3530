"""PivotalMaskConfig on MusicGen: masks, top-P% selection, sparse stage 2, memory, save/load, merge, errors."""

from __future__ import annotations

import copy
import warnings
from functools import cache

import numpy as np
import pytest
import torch
from fixtures import tiny_musicgen, tiny_musicgen_processor, train_steps
from safetensors.torch import load_file

import musicpeft
from musicpeft.tuners.concept_identifier import binding, loading, placeholders
from musicpeft.tuners.pivotal_mask import PivotalMaskConfig, random_percent, selected_count, top_percent, union

SELF_V = [f"decoder.model.decoder.layers.{i}.self_attn.v_proj" for i in range(2)]
CROSS_KV = [f"decoder.model.decoder.layers.{i}.encoder_attn.{p}_proj" for i in range(2) for p in ("k", "v")]
ENTRIES = 2 * 32 * 32  # self-attention value entries of the tiny decoder
PROMPTS = {"koto": ["a <koto> jig", "<koto> melody"], "shamisen": ["a <shamisen> reel", "slow <shamisen> waltz"]}


@cache
def _built(seed: int):
    return tiny_musicgen(seed)


def musicgen(seed: int = 0):
    return copy.deepcopy(_built(seed))


def labels(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 64, (n, 10, 4), generator=torch.Generator().manual_seed(seed))


def train(peft_model, batch, target, steps: int = 3, lr: float = 1e-2) -> torch.optim.Optimizer:
    return train_steps(peft_model, batch, target, steps=steps, lr=lr)[1]


def logits(model, inputs):
    """Inference logits: eval mode (every module's own mode is restored after), no autograd."""
    dec = torch.arange(24).reshape(8, 3) % 64
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            return model(**inputs, decoder_input_ids=dec).logits
    finally:
        for module, mode in modes.items():
            module.training = mode


@pytest.fixture(scope="module")
def run():
    """Algorithm 1 on the tiny MusicGen: one mask per concept, union, joint stage 2 (a few steps each)."""
    model, processor = musicgen(), tiny_musicgen_processor()
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    binding.bind_processor(model, processor)
    peft_model = None
    after_mask = {}
    for i, name in enumerate(PROMPTS):
        config = PivotalMaskConfig(concepts=[name], stage="mask")
        peft_model = musicpeft.add_adapter(model, config, f"mask_{name}")
        batch = processor(text=PROMPTS[name], return_tensors="pt", padding=True)
        train(peft_model, batch, labels(2, i))
        after_mask[name] = {k: v.detach().clone() for k, v in peft_model.state_dict().items()}
    tuner = peft_model.base_model
    singles = {name: tuner.select(f"mask_{name}", 5.0) for name in PROMPTS}
    config = PivotalMaskConfig(concepts=list(PROMPTS), stage="tune", mask_adapters=[f"mask_{n}" for n in PROMPTS])
    peft_model = musicpeft.add_adapter(model, config)
    initial = {k: v.detach().clone() for k, v in peft_model.state_dict().items()}
    texts = PROMPTS["koto"] + PROMPTS["shamisen"] + ["<koto> and <shamisen> duet"]
    batch = processor(text=texts, return_tensors="pt", padding=True)
    optimizer = train(peft_model, batch, labels(5, 7), lr=1e-2)
    return dict(model=model, processor=processor, peft_model=peft_model, base=base, after_mask=after_mask,
                singles=singles, config=config, optimizer=optimizer, initial=initial, batch=batch)


@pytest.mark.parametrize("percent", [0, -1, 100.5, float("nan")])
def test_percent_outside_0_100_is_refused(percent):
    with pytest.raises(ValueError, match=f"percent must be in \\(0, 100\\], got {percent}"):
        PivotalMaskConfig(concepts=["koto"], percent=percent)


def test_config_errors():
    with pytest.raises(ValueError, match="needs the stage-1 masks.*selection='random'"):
        PivotalMaskConfig(concepts=["koto"], stage="tune")
    with pytest.raises(ValueError, match="stage must be one of"):
        PivotalMaskConfig(concepts=["koto"], stage="both")
    with pytest.raises(ValueError, match="selection must be one of"):
        PivotalMaskConfig(concepts=["koto"], selection="best")
    with pytest.raises(ValueError, match="Duplicate concept names"):
        PivotalMaskConfig(concepts=["koto", "koto"])
    PivotalMaskConfig(concepts=["koto"], stage="tune", selection="random")  # random needs no mask


def test_stage2_naming_absent_masks_is_refused():
    model = musicgen()
    config = PivotalMaskConfig(concepts=["koto"], stage="tune", mask_adapters=["mask_koto"])
    with pytest.raises(ValueError, match=r"needs the stage-1 masks \['mask_koto'\]"):
        musicpeft.add_adapter(model, config)


def test_stage1_changes_only_the_mask(run):
    first = run["after_mask"]["koto"]
    base = run["base"]
    changed = []
    for key, value in first.items():
        original = base.get(key.removeprefix("base_model.model.").replace(".base_layer", ""))
        if original is not None and "pivotal_" not in key and "concept_" not in key:
            assert torch.equal(value, original), key
        elif "concept_embeddings" in key:
            pass  # checked below
        elif not torch.equal(value, torch.ones_like(value)):
            changed.append(key)
    assert sorted(changed) == sorted(f"base_model.model.{n}.pivotal_mask.mask_koto" for n in SELF_V)
    # The identifier tokens stay at their initial values during stage 1.
    tokens = "base_model.model.text_encoder.shared.concept_embeddings.mask_koto"
    assert torch.equal(first[tokens], run["initial"][tokens])


def test_selected_count_is_round_p_percent():
    deltas = {n: torch.rand(32, 32, generator=torch.Generator().manual_seed(i)) for i, n in enumerate(SELF_V)}
    for percent in (1, 5, 12.5, 100):
        assert sum(v.numel() for v in top_percent(deltas, percent).values()) == round(ENTRIES * percent / 100)
        per_layer = top_percent(deltas, percent, per_layer=True)
        assert all(v.numel() == round(1024 * percent / 100) for v in per_layer.values())
    # Global selection ranks across layers: double one layer's deltas and it takes the whole budget.
    deltas[SELF_V[0]] = deltas[SELF_V[0]] + 10
    assert {n: v.numel() for n, v in top_percent(deltas, 5).items()} == {SELF_V[0]: 102, SELF_V[1]: 0}
    shapes = {n: (32, 32) for n in SELF_V}
    assert sum(v.numel() for v in random_percent(shapes, 5, seed=1).values()) == selected_count(ENTRIES, 5) == 102


def test_selection_from_trained_masks(run):
    for selection in run["singles"].values():
        assert sum(v.numel() for v in selection.values()) == round(0.05 * ENTRIES)


def test_union_selection_equals_union_of_single_selections(run):
    tuner = run["peft_model"].base_model
    stored = tuner.selection_of("default")
    for name in SELF_V:
        expected = set(run["singles"]["koto"][name].tolist()) | set(run["singles"]["shamisen"][name].tolist())
        assert set(stored[name].tolist()) == expected
    assert run["config"].num_selected == sum(len(v) for v in stored.values())
    assert union(*run["singles"].values()).keys() == stored.keys()


def test_stage2_changes_exactly_the_selected_entries_and_cross_attention(run):
    peft_model, base = run["peft_model"], run["base"]
    selection = peft_model.base_model.selection_of("default")
    merged = copy.deepcopy(peft_model).merge_and_unload()
    state = merged.state_dict()
    for key, value in base.items():
        module = key.rsplit(".", 1)[0]
        if module in SELF_V:
            diff = (state[key] != value).reshape(-1).nonzero().reshape(-1)
            assert set(diff.tolist()) <= set(selection[module].tolist()) and diff.numel() > 0, key
        elif module in CROSS_KV:
            assert (state[key] != value).float().mean() > 0.9, key
        elif key in ("text_encoder.shared.weight", "text_encoder.encoder.embed_tokens.weight"):
            assert torch.equal(state[key][:138], value) and state[key].shape == (144, 32)
        else:
            assert torch.equal(state[key], value), key


def test_optimizer_state_matches_the_trainable_count(run):
    peft_model, optimizer = run["peft_model"], run["optimizer"]
    counts = peft_model.base_model.trainable_counts("default")
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert counts == {"mask": 0, "self_attention_values": run["config"].num_selected,
                      "cross_attention": 4 * 32 * 32, "tokens": 6 * 32}
    assert trainable == sum(counts.values())
    state = sum(t.numel() for s in optimizer.state.values() for t in s.values() if t.dim() > 0)
    assert state == 2 * trainable  # AdamW: exp_avg + exp_avg_sq, nothing of W_V's full size
    values = [p for n, p in peft_model.named_parameters() if "pivotal_values" in n and p.requires_grad]
    assert sum(p.numel() for p in values) == run["config"].num_selected


def _saved(run, tmp_path):
    musicpeft.save_adapter(run["peft_model"], tmp_path / "adapter")
    return tmp_path / "adapter"


def test_save_load_and_merge_give_identical_outputs(run, tmp_path):
    peft_model, processor = run["peft_model"], run["processor"]
    inputs = processor(text=["<koto> and <shamisen> duet", "a <shamisen> reel"], return_tensors="pt", padding=True)
    reference = logits(peft_model, inputs)
    folder = _saved(run, tmp_path)
    saved = load_file(folder / "adapter_model.safetensors")
    kinds = sorted({k.rsplit(".", 1)[-1] for k in saved})
    assert kinds == ["concept_embeddings", "pivotal_delta", "pivotal_indices", "pivotal_values"]
    assert sum(v.numel() for k, v in saved.items() if k.endswith("pivotal_indices")) == run["config"].num_selected
    assert saved[f"base_model.model.{SELF_V[0]}.pivotal_indices"].dtype == torch.int32

    fresh = tiny_musicgen_processor()
    loaded = loading.load_concept_adapter(musicgen(), folder, processor=fresh)
    fresh_inputs = fresh(text=["<koto> and <shamisen> duet", "a <shamisen> reel"], return_tensors="pt", padding=True)
    assert torch.equal(logits(loaded, fresh_inputs), reference)
    merged = loaded.merge_and_unload()
    assert not any("pivotal" in n or "concept" in n for n, _ in merged.named_modules())
    # In eval mode without autograd the unmerged layers multiply by the weight that `merge` writes: bitwise equal.
    assert torch.equal(logits(merged, fresh_inputs), reference)


def test_merging_an_adapter_trained_on_another_base_is_refused(run, tmp_path):
    folder = _saved(run, tmp_path)
    other = musicgen(seed=1)
    binding.bind_processor(other, tiny_musicgen_processor())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = musicpeft.load_adapter(other, folder)
    assert any("different" in str(w.message) or "fingerprint" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="trained on a different base"):
        loaded.merge_and_unload()


def test_random_and_cross_attention_only_variants():
    model, processor = musicgen(), tiny_musicgen_processor()
    binding.bind_processor(model, processor)
    config = PivotalMaskConfig(concepts=["koto"], stage="tune", selection="random", percent=10, per_layer=True)
    peft_model = musicpeft.add_adapter(model, config)
    assert {n: v.numel() for n, v in peft_model.base_model.selection_of("default").items()} == {
        n: round(0.1 * 1024) for n in SELF_V
    }
    custom = PivotalMaskConfig(concepts=["koto"], stage="tune", selection="none")
    peft_model.add_adapter("custom_diffusion", custom)
    counts = peft_model.base_model.trainable_counts("custom_diffusion")
    assert counts == {"mask": 0, "self_attention_values": 0, "cross_attention": 4096, "tokens": 96}


# -- AudioLDM2: the same tuner on the U-Net (attn1/attn2) and both text encoders, from the family data --


@cache
def _pipe():
    from musicpeft.tiny.audioldm2 import tiny_audioldm2_pipeline

    return tiny_audioldm2_pipeline()


def audioldm2():
    return copy.deepcopy(_pipe())


def generate(pipe, prompt="<koto> and <shamisen> duet"):
    out = pipe(prompt=prompt, num_inference_steps=2, audio_length_in_s=0.64, generator=torch.Generator().manual_seed(0))
    return out.audios


def test_audioldm2_pivotal_tuning_save_load_and_merge(tmp_path):
    from musicpeft.families.audioldm2 import attention_streams

    pipe = audioldm2()
    unet_base = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    peft_model = loading.add_pipeline_adapter(pipe, PivotalMaskConfig(concepts=["koto"], stage="mask"), "mask_koto")
    masks = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    streams = attention_streams(pipe.unet)
    assert sorted(masks) == sorted(f"base_model.model.unet.{n}.to_v.pivotal_mask.mask_koto" for n in streams["self"])
    with torch.no_grad():  # stand-in for stage-1 training: any change of the masks
        for name, p in peft_model.named_parameters():
            if p.requires_grad:
                p.add_(torch.rand(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.1)
    entries = sum(pipe.unet.get_submodule(n).to_v.weight.numel() for n in streams["self"])
    assert entries == 9216
    assert sum(v.numel() for v in peft_model.base_model.select("mask_koto", 5).values()) == round(0.05 * entries)

    config = PivotalMaskConfig(concepts=["koto", "shamisen"], stage="tune", mask_adapters=["mask_koto"])
    peft_model = loading.add_pipeline_adapter(pipe, config)
    peft_model.delete_adapter("mask_koto")
    counts = peft_model.base_model.trainable_counts("default")
    cross = sum(pipe.unet.get_submodule(n).to_k.weight.numel() * 2 for n in streams["generated"] + streams["t5"])
    assert counts == {"mask": 0, "self_attention_values": 461, "cross_attention": cross, "tokens": 2 * 3 * (32 + 16)}
    with torch.no_grad():
        for p in peft_model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    reference = generate(pipe)
    assert not np.array_equal(reference, generate(_pipe()))

    loading.save_pipeline_adapter(pipe, tmp_path)
    loaded = audioldm2()
    loading.load_pipeline_adapter(loaded, tmp_path)
    assert np.array_equal(generate(loaded), reference)
    binding.pipeline_peft_model(loaded).merge_and_unload()
    assert type(loaded.unet.get_submodule(streams["self"][0]).to_v).__name__ == "Linear"
    assert np.array_equal(generate(loaded), reference)
    selection = peft_model.base_model.selection_of("default")
    for key, value in loaded.unet.state_dict().items():
        module = key.rsplit(".", 2)[0]
        if f"unet.{key.rsplit('.', 1)[0]}" in selection:
            changed = (value != unet_base[key]).reshape(-1).nonzero().reshape(-1)
            assert set(changed.tolist()) <= set(selection[f"unet.{key.rsplit('.', 1)[0]}"].tolist())
        elif module in streams["generated"] + streams["t5"] and key.endswith(("to_k.weight", "to_v.weight")):
            assert not torch.equal(value, unet_base[key])
        else:
            assert torch.equal(value, unet_base[key]), key


def test_selection_files_and_union(tmp_path):
    from musicpeft.tuners.pivotal_mask import load_selection, save_selection

    a = {SELF_V[0]: torch.tensor([1, 5, 9]), SELF_V[1]: torch.tensor([0])}
    b = {SELF_V[0]: torch.tensor([5, 7])}
    merged = union(a, b)
    assert merged[SELF_V[0]].tolist() == [1, 5, 7, 9] and merged[SELF_V[1]].tolist() == [0]
    save_selection(merged, tmp_path / "selection.safetensors")
    loaded = load_selection(tmp_path / "selection.safetensors")
    assert {k: v.tolist() for k, v in loaded.items()} == {k: v.tolist() for k, v in merged.items()}


# -- the stage-2 forward: x @ W^T + x @ ΔW_sparse^T, never a kept W' --


def _sparse_layer(rows: int = 48, cols: int = 64, percent: float = 5.0, bias: bool = True):
    from musicpeft.tuners.pivotal_mask import PivotalLinear

    torch.manual_seed(0)
    base = torch.nn.Linear(cols, rows, bias=bias).requires_grad_(False)
    selection = random_percent({"w": (rows, cols)}, percent, seed=3)["w"]
    layer = PivotalLinear(base, "default", "sparse", selection)
    with torch.no_grad():
        layer.pivotal_values["default"].normal_()
    layer.pivotal_values["default"].requires_grad_(True)
    return layer, selection


def _dense_reference(layer, x):
    """The old forward: rebuild W' = W + ΔW, then one linear."""
    import torch.nn.functional as F

    weight = layer.base_layer.weight
    merged = weight.reshape(-1).index_add(0, layer.pivotal_indices["default"].long(), layer.pivotal_values["default"])
    return F.linear(x, merged.view_as(weight), layer.base_layer.bias)


@pytest.mark.parametrize("shape", [(2, 1), (2, 500)], ids=["decoding", "training"])
def test_sparse_forward_equals_the_dense_rebuild_and_trains_only_the_selection(shape):
    layer, selection = _sparse_layer()
    values = layer.pivotal_values["default"]
    assert layer.pivotal_indices["default"].dtype == torch.int32
    x = torch.randn(*shape, 64, requires_grad=True)
    out = layer(x)
    torch.testing.assert_close(out, _dense_reference(layer, x), atol=1e-6, rtol=0)
    grad = torch.randn_like(out)
    dx, dv = torch.autograd.grad(out, [x, values], grad)
    ref_dx, ref_dv = torch.autograd.grad(_dense_reference(layer, x), [x, values], grad)
    torch.testing.assert_close(dx, ref_dx, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dv, ref_dv, atol=1e-5, rtol=1e-5)
    assert dv.shape == (selection.numel(),) and not layer.base_layer.weight.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(layer(x), _dense_reference(layer, x), atol=1e-6, rtol=0)


def test_sparse_forward_keeps_nothing_of_the_weights_size_for_backward():
    layer, _ = _sparse_layer(rows=96, cols=128)
    layer.base_layer.weight.requires_grad_(False)
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    x = torch.randn(2, 100, 128, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x).sum().backward()
    weight = layer.base_layer.weight
    kept = {t.data_ptr(): t for t in saved if t.data_ptr() not in (weight.data_ptr(), x.data_ptr())}
    assert sum(t.numel() for t in kept.values()) < weight.numel() / 2  # the selection, not a 96x128 W'
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _dense_reference(layer, x).sum().backward()
    kept = {t.data_ptr(): t for t in saved if t.data_ptr() not in (weight.data_ptr(), x.data_ptr())}
    assert sum(t.numel() for t in kept.values()) >= weight.numel()  # the old path keeps W': the check can fail


def test_selection_indices_are_checked():
    from musicpeft.tuners.pivotal_mask import PivotalLinear

    base = torch.nn.Linear(8, 4)
    with pytest.raises(ValueError, match=r"\[3, 32\] fall outside a weight of 32 entries \(4, 8\)"):
        PivotalLinear(base, "default", "sparse", torch.tensor([3, 32]))
    with pytest.raises(ValueError, match="sorted and unique"):
        PivotalLinear(base, "default", "sparse", torch.tensor([5, 2]))
    with pytest.raises(TypeError, match="integer tensor"):
        PivotalLinear(base, "default", "sparse", torch.tensor([1.0, 2.0]))


def test_adapter_files_with_int64_indices_still_load(run, tmp_path):
    from safetensors.torch import save_file

    peft_model, processor = run["peft_model"], run["processor"]
    inputs = processor(text=["<koto> and <shamisen> duet"], return_tensors="pt", padding=True)
    reference = logits(peft_model, inputs)
    folder = _saved(run, tmp_path)
    path = folder / "adapter_model.safetensors"
    tensors = load_file(path)
    old = {k: v.to(torch.int64) if k.endswith("pivotal_indices") else v for k, v in tensors.items()}
    save_file(old, path, metadata={"format": "pt"})
    fresh = tiny_musicgen_processor()
    loaded = loading.load_concept_adapter(musicgen(), folder, processor=fresh)
    assert torch.equal(logits(loaded, fresh(text=["<koto> and <shamisen> duet"], return_tensors="pt")), reference)
    assert loaded.base_model.selection_of("default")[SELF_V[0]].dtype == torch.int32


def test_loading_a_random_selection_does_not_redraw_it(tmp_path, monkeypatch):
    model, processor = musicgen(), tiny_musicgen_processor()
    binding.bind_processor(model, processor)
    config = PivotalMaskConfig(concepts=["koto"], stage="tune", selection="random", percent=10)
    peft_model = musicpeft.add_adapter(model, config)
    with torch.no_grad():
        for p in peft_model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    selection = peft_model.base_model.selection_of("default")
    inputs = processor(text=["a <koto> jig"], return_tensors="pt")
    reference = logits(peft_model, inputs)
    musicpeft.save_adapter(peft_model, tmp_path)

    def no_permutation(*args, **kwargs):
        raise AssertionError("the random selection was drawn again")

    monkeypatch.setattr(torch, "randperm", no_permutation)
    fresh = tiny_musicgen_processor()
    loaded = loading.load_concept_adapter(musicgen(), tmp_path, processor=fresh)
    assert {k: v.tolist() for k, v in loaded.base_model.selection_of("default").items()} == {
        k: v.tolist() for k, v in selection.items()
    }
    assert torch.equal(logits(loaded, fresh(text=["a <koto> jig"], return_tensors="pt")), reference)
    # The same config object attached again reuses its selection (it does not come from a file then).
    again = musicgen()
    binding.bind_processor(again, tiny_musicgen_processor())
    reused = musicpeft.add_adapter(again, copy.deepcopy(config))
    assert {k: v.tolist() for k, v in reused.base_model.selection_of("default").items()} == {
        k: v.tolist() for k, v in selection.items()
    }


@pytest.mark.parametrize("offload", ["disk_offload", "device_map"])
def test_loads_onto_a_base_offloaded_to_disk(run, tmp_path, offload):
    """Issue 9: the load failed on meta weights (`Tensor.item()`), after a false fingerprint warning."""
    from accelerate import disk_offload
    from transformers import MusicgenForConditionalGeneration

    peft_model, processor = run["peft_model"], run["processor"]
    text = ["<koto> and <shamisen> duet", "a <shamisen> reel"]
    reference = logits(peft_model, processor(text=text, return_tensors="pt", padding=True))
    folder = _saved(run, tmp_path)
    if offload == "disk_offload":  # every module, text encoder included
        model = musicgen()
        disk_offload(model, offload_dir=str(tmp_path / "offload"), execution_device=torch.device("cpu"))
    else:  # the decoder on disk, as from_pretrained(device_map=...) does it
        musicgen().save_pretrained(tmp_path / "base")
        device_map = {"text_encoder": "cpu", "audio_encoder": "cpu", "decoder": "disk"}
        model = MusicgenForConditionalGeneration.from_pretrained(
            tmp_path / "base", device_map=device_map, offload_folder=str(tmp_path / "offload")
        )
    fresh = tiny_musicgen_processor()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = loading.load_concept_adapter(model, folder, processor=fresh)
    assert not [w for w in caught if "fingerprint" in str(w.message)]
    v_proj = loaded.base_model.model.get_submodule(SELF_V[0])
    assert v_proj.base_layer.weight.device.type == "meta"  # still offloaded
    assert v_proj.pivotal_values["default"].device.type == "cpu"
    out = logits(loaded, fresh(text=text, return_tensors="pt", padding=True))
    torch.testing.assert_close(out, reference, atol=1e-6, rtol=0)


def _plain_state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("damage", ["missing_values", "indices_out_of_range", "unsorted_indices"])
def test_a_refused_load_leaves_the_model_as_it_was(run, tmp_path, damage):
    """Issue 9: after a refused load the pivotal and concept wrappers stayed in the model."""
    from safetensors.torch import save_file

    from musicpeft.tuners.concept_identifier import ConceptEmbeddingLayer
    from musicpeft.tuners.pivotal_mask import PivotalLinear

    folder = _saved(run, tmp_path)
    path = folder / "adapter_model.safetensors"
    tensors = load_file(path)
    key = f"base_model.model.{SELF_V[0]}.pivotal_indices"
    if damage == "missing_values":
        del tensors[f"base_model.model.{SELF_V[0]}.pivotal_values"]
    elif damage == "indices_out_of_range":
        tensors[key] = tensors[key] + 10_000
    else:
        tensors[key] = tensors[key].flip(0).contiguous()
    save_file(tensors, path, metadata={"format": "pt"})

    model, processor = musicgen(), tiny_musicgen_processor()
    binding.bind_processor(model, processor)
    before, modules = _plain_state(model), [type(m) for m in model.modules()]
    inputs = processor(text=["a jig"], return_tensors="pt")
    reference = logits(model, inputs)
    with pytest.raises(ValueError, match="lack .*pivotal_values|fall outside a weight|sorted and unique"):
        musicpeft.load_adapter(model, folder)
    assert not any(isinstance(m, (PivotalLinear, ConceptEmbeddingLayer)) for m in model.modules())
    assert [type(m) for m in model.modules()] == modules
    after = _plain_state(model)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert not hasattr(model, "peft_config")
    assert placeholders.placeholder_definitions(processor.tokenizer) == {}
    assert torch.equal(logits(model, inputs), reference)


def test_a_refused_second_adapter_leaves_the_first_as_it_was(run, tmp_path):
    from safetensors.torch import save_file

    good = _saved(run, tmp_path / "good")
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(good, bad)
    tensors = load_file(bad / "adapter_model.safetensors")
    del tensors[f"base_model.model.{CROSS_KV[0]}.pivotal_delta"]
    save_file(tensors, bad / "adapter_model.safetensors", metadata={"format": "pt"})

    fresh = tiny_musicgen_processor()
    loaded = loading.load_concept_adapter(musicgen(), good, processor=fresh)
    inputs = fresh(text=["<koto> and <shamisen> duet"], return_tensors="pt")
    reference = logits(loaded, inputs)
    state = {k: v.clone() for k, v in loaded.state_dict().items()}
    definitions = placeholders.placeholder_definitions(fresh.tokenizer)
    with pytest.raises(ValueError, match="lack .*pivotal_delta"):
        musicpeft.load_adapter(loaded.get_base_model(), bad, adapter_name="second")
    assert list(loaded.peft_config) == ["default"] and loaded.active_adapters == ["default"]
    after = loaded.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    assert placeholders.placeholder_definitions(fresh.tokenizer) == definitions
    assert torch.equal(logits(loaded, inputs), reference)


@pytest.mark.parametrize("rows", [4, 400], ids=["sparse_product", "fused"])
def test_sparse_forward_under_bf16_autocast(rows):
    """Mixed precision training (accelerate's autocast) must work on both paths."""
    layer, _ = _sparse_layer()
    values = layer.pivotal_values["default"]
    x = torch.randn(rows, 64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
        reference = _dense_reference(layer, x)
    torch.testing.assert_close(out.float(), reference.float(), atol=0.1, rtol=0.05)
    dx, dv = torch.autograd.grad(out.float().sum(), [x, values])
    ref_dx, ref_dv = torch.autograd.grad(reference.float().sum(), [x, values])
    assert dx.dtype == x.dtype and dv.dtype == values.dtype
    torch.testing.assert_close(dv, ref_dv, atol=0.5, rtol=0.05)
    torch.testing.assert_close(dx, ref_dx, atol=0.5, rtol=0.05)


def test_inference_forward_equals_the_merged_weight_and_follows_changes():
    """Eval mode without autograd reuses the adapted weight across calls (decoding): bitwise what `merge` computes,
    rebuilt when the values change in place, and dropped by train() so training memory never holds it."""
    import torch.nn.functional as F

    layer, _ = _sparse_layer()
    layer.eval()
    x = torch.randn(2, 1, 64)
    with torch.no_grad():
        first = layer(x)
        cached = layer._inference_weight.weight
        assert torch.equal(layer(x), first) and layer._inference_weight.weight is cached  # reused, not rebuilt
        merged = copy.deepcopy(layer)
        merged.merge()
        assert torch.equal(first, F.linear(x, merged.base_layer.weight, merged.base_layer.bias))
        layer.pivotal_values["default"].mul_(2)  # an optimizer step or a load changes values in place
        torch.testing.assert_close(layer(x), _dense_reference(layer, x), atol=1e-6, rtol=0)
        assert layer._inference_weight.weight is not cached
        values = layer.pivotal_values["default"]
        values.data = values.data * 3  # a new storage without an in-place version bump
        torch.testing.assert_close(layer(x), _dense_reference(layer, x), atol=1e-6, rtol=0)
        layer.enable_adapters(False)
        assert torch.equal(layer(x), layer.base_layer(x))  # disabled: the base alone, not the cached weight
        layer.enable_adapters(True)
        torch.testing.assert_close(layer(x), _dense_reference(layer, x), atol=1e-6, rtol=0)
    layer.train()
    assert layer._inference_weight is None
    out = layer(torch.randn(2, 500, 64, requires_grad=True))  # training: the fused path, nothing cached
    out.sum().backward()
    assert layer._inference_weight is None and layer.pivotal_values["default"].grad is not None
    layer.eval()
    y = torch.randn(3, 64, requires_grad=True)
    layer(y).sum().backward()  # eval mode with autograd (e.g. gradient checks): no cache either
    assert layer._inference_weight is None


def test_a_layer_that_ran_the_sparse_product_can_be_deep_copied():
    layer, _ = _sparse_layer()
    x = torch.randn(2, 1, 64)
    with torch.no_grad():
        before = layer(x)  # training mode, few rows: the CSR product, whose matrix is cached
    assert layer._plans["default"]._csr_cache is not None
    copied = copy.deepcopy(layer)
    with torch.no_grad():
        assert torch.equal(copied(x), before)


def test_generation_of_an_unmerged_pivotal_adapter_equals_the_merged_model(run):
    peft_model, processor = run["peft_model"], run["processor"]
    inputs = processor(text=["a <koto> jig"], return_tensors="pt")
    unmerged = copy.deepcopy(peft_model).eval()
    merged = copy.deepcopy(peft_model).merge_and_unload().eval()
    for scale in (1.0, 3.0):
        with torch.no_grad():
            a = unmerged.generate(**inputs, do_sample=False, guidance_scale=scale, max_new_tokens=6)
            b = merged.generate(**inputs, do_sample=False, guidance_scale=scale, max_new_tokens=6)
        assert torch.equal(a, b), scale
