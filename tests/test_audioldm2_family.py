"""AudioLDM2: the tiny pipeline, the family description, and generation under transformers 5."""

import json
import os

import numpy as np
import pytest
import torch

from musicpeft.families import AUDIOLDM2, MUSICGEN, family_of, get_submodule
from musicpeft.families.audioldm2 import T5_MASK_FLOW, attention_streams, check_unet_layout
from musicpeft.families.audioldm2_loading import ensure_audioldm2_compat, load_audioldm2_pipeline
from musicpeft.tiny import tiny_musicgen
from musicpeft.tiny.audioldm2 import make_roberta_tokenizer, tiny_audioldm2_pipeline

PROMPTS = ["a cheerful jig on the violin", "slow piano"]




@pytest.fixture(scope="module")
def pipe():
    return tiny_audioldm2_pipeline()


# ------------------------------------------------------------------------------------------- tiny pipeline


def test_roberta_tokenizer_is_word_level_for_known_words_and_total():
    tok = make_roberta_tokenizer()
    assert tok.tokenize("a cheerful jig on the violin") == ["a", "\u0120cheerful", "\u0120jig", "\u0120on",
                                                           "\u0120the", "\u0120violin"]
    ids = tok("unknown wörds tokenize byte by byte").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids
    assert tok("jig", padding="max_length").input_ids[-1] == tok.pad_token_id  # pads to model_max_length


def test_tiny_pipeline_generates_default_length_with_guidance_and_scoring(pipe):
    audio = pipe(PROMPTS[0], num_inference_steps=2, generator=torch.Generator().manual_seed(0)).audios
    # unet.sample_size 32 x VAE factor 4 x hop 160 = 20480 samples = 1.28 s at 16 kHz.
    assert audio.shape == (1, 20480)
    assert pipe.vae_scale_factor == 4 and pipe.vocoder.config.sampling_rate == 16000
    several = pipe(PROMPTS, num_inference_steps=2, num_waveforms_per_prompt=2, audio_length_in_s=0.64).audios
    assert several.shape == (4, 10240)  # CLAP's audio branch ranked the candidates
    assert np.isfinite(several).all()


def test_tiny_pipeline_is_deterministic_per_seed():
    a, b = tiny_audioldm2_pipeline(seed=3), tiny_audioldm2_pipeline(seed=3)
    for (name, p), (_, q) in zip(a.unet.named_parameters(), b.unet.named_parameters(), strict=True):
        assert torch.equal(p, q), name
    c = tiny_audioldm2_pipeline(seed=4)
    assert not torch.equal(a.unet.conv_in.weight, c.unet.conv_in.weight)


# ---------------------------------------------------------------------------------------------- family


def test_family_registry_finds_audioldm2_and_keeps_musicgen(pipe):
    assert family_of(pipe) is AUDIOLDM2
    assert family_of(tiny_musicgen()) is MUSICGEN
    assert AUDIOLDM2.adapted_component == "unet" and AUDIOLDM2.full_finetune_module == "unet"


def test_text_encoder_slots_point_at_encoders_with_input_embeddings(pipe):
    t5, clap = AUDIOLDM2.text_encoder("t5"), AUDIOLDM2.text_encoder("clap")
    assert AUDIOLDM2.text_encoder() is t5 and t5.takes_soft_prompt_by_default and not clap.takes_soft_prompt_by_default
    assert get_submodule(pipe, t5.module) is pipe.text_encoder_2
    assert get_submodule(pipe, clap.module) is pipe.text_encoder.text_model
    assert getattr(pipe, t5.tokenizer) is pipe.tokenizer_2 and getattr(pipe, clap.tokenizer) is pipe.tokenizer
    for slot, width in ((t5, 32), (clap, 16)):
        encoder = get_submodule(pipe, slot.module)
        embeds = encoder.get_input_embeddings()(torch.tensor([[3, 4, 5]]))
        assert embeds.shape == (1, 3, width)
        out = encoder(inputs_embeds=embeds, attention_mask=torch.ones(1, 3, dtype=torch.long))
        assert out.last_hidden_state.shape == (1, 3, width)


def test_attention_streams_match_the_widths_they_read(pipe):
    streams = attention_streams(pipe.unet)
    assert {k: len(v) for k, v in streams.items()} == {"self": 24, "generated": 6, "t5": 6}
    gpt2_width, t5_width = pipe.language_model.config.n_embd, pipe.text_encoder_2.config.d_model
    for name in streams["generated"]:
        assert pipe.unet.get_submodule(name).to_k.in_features == gpt2_width, name
    for name in streams["t5"]:
        assert pipe.unet.get_submodule(name).to_k.in_features == t5_width, name
    for name in streams["self"]:
        attn = pipe.unet.get_submodule(name)
        assert not attn.is_cross_attention and attn.to_k.in_features == attn.to_q.in_features, name
    for stream, spec in AUDIOLDM2.cross_attention_streams.items():
        assert sorted(AUDIOLDM2.module_names(pipe.unet, spec.regex)) == sorted(streams[stream])
    check_unet_layout(pipe.unet)


def test_family_regexes_select_the_documented_projections(pipe):
    streams = attention_streams(pipe.unet)
    v = AUDIOLDM2.module_names(pipe.unet, AUDIOLDM2.self_attention_value)
    assert sorted(v) == sorted(f"{n}.to_v" for n in streams["self"])
    kv = AUDIOLDM2.module_names(pipe.unet, AUDIOLDM2.cross_attention_key_value)
    assert sorted(kv) == sorted(f"{n}.{p}" for n in streams["generated"] + streams["t5"] for p in ("to_k", "to_v"))


def test_each_cross_attention_sees_the_documented_stream_at_run_time(pipe):
    """Hooks on attn2 record what they attend to during a real generation step."""
    seen = {}

    def recorder(name):
        def hook(module, args, kwargs):
            states = kwargs.get("encoder_hidden_states")
            seen[name] = (None if states is None else states.shape[-1], kwargs.get("attention_mask") is not None)
        return hook

    streams = attention_streams(pipe.unet)
    handles = [pipe.unet.get_submodule(n).register_forward_pre_hook(recorder(n), with_kwargs=True)
               for names in streams.values() for n in names if n.endswith("attn2")]
    try:
        pipe(PROMPTS[0], num_inference_steps=1, audio_length_in_s=0.64)
    finally:
        for h in handles:
            h.remove()
    assert all(seen[n] == (24, False) for n in streams["generated"])  # GPT2 states, unmasked
    assert all(seen[n] == (32, True) for n in streams["t5"])  # T5 states with encoder_attention_mask_1
    assert all(seen[n] == (None, False) for n in streams["self"] if n.endswith("attn2"))


def test_t5_mask_flow_is_as_documented(pipe):
    """The tokenizer's T5 mask is what reaches the projection model, GPT2 and the U-Net."""
    captured = {}

    def keep(key, kwarg):
        def hook(module, args, kwargs):
            captured.setdefault(key, kwargs[kwarg].clone())
        return hook

    h1 = pipe.projection_model.register_forward_pre_hook(keep("projection", "attention_mask_1"), with_kwargs=True)
    h2 = pipe.language_model.register_forward_pre_hook(keep("gpt2", "attention_mask"), with_kwargs=True)
    try:
        embeds, mask, generated = pipe.encode_prompt(PROMPTS, "cpu", 1, False)
    finally:
        h1.remove()
        h2.remove()
    tokens = pipe.tokenizer_2(PROMPTS, padding=True, return_tensors="pt")
    assert torch.equal(mask, tokens.attention_mask) and embeds.shape[:2] == mask.shape
    assert mask[1].sum() < mask[0].sum()  # the shorter prompt is padded
    assert torch.equal(captured["projection"], tokens.attention_mask)
    ones = torch.ones(2, 1, dtype=mask.dtype)
    expected_gpt2 = torch.cat([ones, ones, ones, ones, tokens.attention_mask, ones], dim=1)
    assert torch.equal(captured["gpt2"], expected_gpt2)
    assert generated.shape == (2, pipe.language_model.config.max_new_tokens, 24)
    assert set(T5_MASK_FLOW) >= {"source", "projection_model", "language_model", "unet", "guidance", "soft_prompt"}


def test_layout_check_rejects_unet_the_regexes_do_not_describe():
    from diffusers import AudioLDM2UNet2DConditionModel

    streams = [None, 8, 8]
    unet = AudioLDM2UNet2DConditionModel(
        block_out_channels=(8, 8), layers_per_block=3, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=(streams, streams),
        attention_head_dim=2, norm_num_groups=4, in_channels=4, out_channels=4,
    )
    with pytest.raises(ValueError, match="layout not supported"):
        check_unet_layout(unet)


# ------------------------------------------------------------------------------ transformers 5 compatibility


def test_published_layout_fails_unpatched_and_generates_after_compat():
    pipe = tiny_audioldm2_pipeline(language_model_class="GPT2Model")
    original = pipe.language_model
    transformers5_error = "'GPT2Model' object has no attribute '_update_model_kwargs_for_generation'"
    with pytest.raises(AttributeError, match=transformers5_error):
        pipe(PROMPTS[0], num_inference_steps=2)
    assert ensure_audioldm2_compat(pipe) is pipe
    wrapper = pipe.language_model
    assert type(wrapper).__name__ == "GPT2LMHeadModel" and wrapper.transformer is original
    assert wrapper.lm_head.weight is original.wte.weight
    assert sum(p.numel() for p in wrapper.parameters()) == sum(p.numel() for p in original.parameters())
    assert ensure_audioldm2_compat(pipe).language_model is wrapper  # idempotent
    audio = pipe(PROMPTS, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).audios
    assert audio.shape == (2, 20480) and torch.isfinite(torch.as_tensor(audio)).all()


def test_compat_language_model_generates_what_the_bare_gpt2_computes():
    """Cached generation through the wrapper == step-by-step full recomputation with the GPT2Model."""
    pipe = ensure_audioldm2_compat(tiny_audioldm2_pipeline(language_model_class="GPT2Model"))
    bare = pipe.language_model.transformer
    torch.manual_seed(0)
    prefix = torch.randn(2, 7, 24)
    mask = torch.tensor([[1] * 7, [1, 1, 1, 0, 0, 1, 1]])
    sequence, running = prefix, mask
    with torch.no_grad():
        for _ in range(8):
            last = bare(inputs_embeds=sequence, attention_mask=running).last_hidden_state[:, -1:]
            sequence = torch.cat([sequence, last], dim=1)
            running = torch.cat([running, torch.ones(2, 1, dtype=running.dtype)], dim=1)
        generated = pipe.generate_language_model(prefix, attention_mask=mask, max_new_tokens=8)
    torch.testing.assert_close(generated, sequence[:, -8:], rtol=1e-5, atol=1e-5)


def test_load_audioldm2_pipeline_from_a_saved_folder(tmp_path):
    tiny_audioldm2_pipeline(language_model_class="GPT2Model").save_pretrained(tmp_path / "published")
    index = json.loads((tmp_path / "published" / "model_index.json").read_text())
    assert index["language_model"] == ["transformers", "GPT2Model"]
    pipe = load_audioldm2_pipeline(tmp_path / "published")
    pipe.set_progress_bar_config(disable=True)
    assert pipe(PROMPTS[0], num_inference_steps=2).audios.shape == (1, 20480)
    # Saved again, the pipeline records the generation-capable class and loads natively.
    pipe.save_pretrained(tmp_path / "resaved")
    index = json.loads((tmp_path / "resaved" / "model_index.json").read_text())
    assert index["language_model"] == ["transformers", "GPT2LMHeadModel"]
    assert os.path.exists(tmp_path / "resaved" / "language_model" / "model.safetensors")
    again = load_audioldm2_pipeline(tmp_path / "resaved")
    for (name, p), (_, q) in zip(pipe.language_model.named_parameters(), again.language_model.named_parameters(),
                                 strict=True):
        assert torch.equal(p, q), name


def test_compat_rejects_non_pipelines():
    with pytest.raises(TypeError, match="AudioLDM2Pipeline"):
        ensure_audioldm2_compat(tiny_musicgen())
