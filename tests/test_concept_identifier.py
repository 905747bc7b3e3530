"""ConceptIdentifierConfig on MusicGen: placeholders, added tokens without resizing, training, save/load, merge."""

from __future__ import annotations

import copy
from functools import cache

import pytest
import torch
from fixtures import perturb_adapter, tiny_musicgen, tiny_musicgen_processor, train_steps
from peft import PeftType
from safetensors.torch import load_file

import musicpeft
from musicpeft.tuners.concept_identifier import (
    ConceptIdentifierConfig,
    ConceptIdentifierModel,
    binding,
    loading,
    placeholders,
)
from musicpeft.tuners.concept_identifier.placeholders import UnknownConceptError, expand_placeholders

PROMPTS = ["a cheerful <koto> jig", "<shamisen> and <koto> duet"]


@cache
def _built(seed: int):
    return tiny_musicgen(seed)


def musicgen(seed: int = 0):
    """A fresh tiny MusicGen (copied: building one costs ~1 s, copying ~50 ms)."""
    return copy.deepcopy(_built(seed))


def attach(seed: int = 0, **kwargs):
    model, processor = musicgen(seed), tiny_musicgen_processor()
    binding.bind_processor(model, processor)
    config = ConceptIdentifierConfig(concepts=["koto", "shamisen"], **kwargs)
    return musicpeft.add_adapter(model, config), processor


def logits(model, inputs):
    dec = torch.arange(24).reshape(8, 3) % 64
    with torch.no_grad():
        return model(**inputs, decoder_input_ids=dec).logits


def test_registered_with_peft():
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.CONCEPT_IDENTIFIER] is ConceptIdentifierConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.CONCEPT_IDENTIFIER] is ConceptIdentifierModel


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concepts": ["koto", "koto"]}, "Duplicate concept names \\['koto'\\]"),
        ({"concepts": []}, "concepts is empty"),
        ({"concepts": ["ko to"]}, "'ko to' is not usable"),
        ({"concepts": "koto"}, "list of names"),
        ({"concepts": ["koto"], "tokens_per_concept": 0}, "tokens_per_concept must be a positive integer, got 0"),
        ({"concepts": ["koto"], "init_words": {"harp": "harp"}}, "init_words names concepts \\['harp'\\]"),
    ],
)
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConceptIdentifierConfig(**kwargs)


def test_placeholder_expansion_and_unknown_names():
    definitions = {"<koto>": "<koto:0><koto:1>", "<shamisen>": "<shamisen:0><shamisen:1>"}
    assert expand_placeholders(PROMPTS, definitions) == [
        "a cheerful <koto:0><koto:1> jig",
        "<shamisen:0><shamisen:1> and <koto:0><koto:1> duet",
    ]
    with pytest.raises(UnknownConceptError, match=r"\['<guitar>'\].*known placeholders: <koto>, <shamisen>"):
        expand_placeholders("a <guitar> solo", definitions)
    # Existing tokens that look like placeholders are left alone.
    tokenizer = tiny_musicgen_processor().tokenizer
    assert expand_placeholders("<unk> <koto>", definitions, tokenizer) == "<unk> <koto:0><koto:1>"


def test_tokens_are_added_without_resizing_the_embedding():
    peft_model, processor = attach()
    encoder = peft_model.get_base_model().text_encoder
    vocab = 138  # the tiny T5 vocabulary
    assert encoder.get_input_embeddings().weight.shape == (vocab, 32)
    assert encoder.config.vocab_size == vocab
    assert len(processor.tokenizer) == vocab + 6
    ids = peft_model.base_model.concept_token_ids()
    assert sorted(ids.values()) == list(range(vocab, vocab + 6))
    trainable = {n: p.numel() for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable == {"base_model.model.text_encoder.shared.concept_embeddings.default": 6 * 32}
    # T5 keeps its input embedding in two modules; both answer the concept ids from the same table.
    batch = processor(text=PROMPTS, return_tensors="pt", padding=True)
    table = encoder.shared.concept_embeddings["default"]
    assert encoder.encoder.embed_tokens.concept_embeddings["default"] is table
    embedded = encoder.encoder.embed_tokens(batch["input_ids"])
    koto = batch["input_ids"][0].tolist().index(ids["<koto:0>"])
    assert torch.equal(embedded[0, koto : koto + 3], table[:3])


def test_unknown_placeholder_names_the_known_ones():
    _, processor = attach()
    with pytest.raises(UnknownConceptError, match="<guitar>.*<koto>, <shamisen>"):
        processor(text=["a <guitar> solo"])


def test_placeholder_colliding_with_a_vocabulary_token_is_refused_before_any_change():
    model, processor = musicgen(), tiny_musicgen_processor()
    binding.bind_processor(model, processor)
    with pytest.raises(ValueError, match="<pad>.*collides"):
        musicpeft.add_adapter(model, ConceptIdentifierConfig(concepts=["koto", "pad"]))
    assert type(model.text_encoder.shared).__name__ == "Embedding"
    assert len(processor.tokenizer) == 138


def test_training_changes_only_the_tokens():
    peft_model, processor = attach()
    base = {k: v.clone() for k, v in musicgen().state_dict().items()}
    batch = processor(text=PROMPTS, return_tensors="pt", padding=True)
    labels = torch.randint(0, 64, (2, 10, 4), generator=torch.Generator().manual_seed(0))
    table = peft_model.get_base_model().text_encoder.shared.concept_embeddings["default"]
    start = table.detach().clone()
    losses, _ = train_steps(peft_model, batch, labels, steps=10, lr=0.1)
    assert losses[-1] < losses[0]
    assert not torch.equal(table, start)
    unloaded = peft_model.unload()
    assert all(torch.equal(v, base[k]) for k, v in unloaded.state_dict().items())


def test_two_placeholders_generate_with_guidance():
    peft_model, processor = attach()
    batch = processor(text=PROMPTS, return_tensors="pt", padding=True)
    torch.manual_seed(0)
    codes = peft_model.generate(**batch, guidance_scale=3.0, do_sample=True, max_new_tokens=4)
    assert codes.shape[0] == 2
    with peft_model.disable_adapter():  # the same prompts without placeholders: the base model's output
        plain = processor(text=["a cheerful jig", "duet"], return_tensors="pt", padding=True)
        torch.manual_seed(0)
        assert peft_model.generate(**plain, guidance_scale=3.0, do_sample=True, max_new_tokens=4).shape[0] == 2


def test_save_load_and_merge_give_identical_outputs(tmp_path):
    peft_model, processor = attach(init_seed=3)
    with torch.no_grad():
        peft_model.get_base_model().text_encoder.shared.concept_embeddings["default"].mul_(2.0)
    reference = logits(peft_model, processor(text=PROMPTS, return_tensors="pt", padding=True))
    musicpeft.save_adapter(peft_model, tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert {k: tuple(v.shape) for k, v in saved.items()} == {
        "base_model.model.text_encoder.shared.concept_embeddings": (6, 32)
    }

    model, fresh = musicgen(), tiny_musicgen_processor()
    loaded = loading.load_concept_adapter(model, tmp_path, processor=fresh)
    inputs = fresh(text=PROMPTS, return_tensors="pt", padding=True)
    assert torch.equal(logits(loaded, inputs), reference)

    merged = loaded.merge_and_unload()
    assert type(merged).__name__ == "MusicgenForConditionalGeneration"
    assert merged.text_encoder.shared.weight.shape == (144, 32)
    assert merged.text_encoder.encoder.embed_tokens.weight is merged.text_encoder.shared.weight
    assert merged.config.text_encoder.vocab_size == 144
    assert torch.equal(logits(merged, inputs), reference)


def test_public_load_adapter_takes_the_processor(tmp_path):
    peft_model, processor = attach()
    perturb_adapter(peft_model)
    musicpeft.save_adapter(peft_model, tmp_path)
    fresh = tiny_musicgen_processor()
    loaded = musicpeft.load_adapter(musicgen(), tmp_path, processor=fresh)
    inputs = fresh(text=PROMPTS, return_tensors="pt", padding=True)
    assert torch.equal(logits(loaded, inputs), logits(peft_model, processor(text=PROMPTS, return_tensors="pt",
                                                                            padding=True)))


def test_binding_after_attaching_and_init_words():
    model, processor = musicgen(), tiny_musicgen_processor()
    peft_model = musicpeft.add_adapter(model, ConceptIdentifierConfig(concepts=["koto"], tokens_per_concept=2))
    binding.bind_processor(model, processor)
    assert processor(text="<koto>")["input_ids"] == [138, 139, 1]

    model, processor = musicgen(), tiny_musicgen_processor()
    with pytest.raises(ValueError, match="needs the t5 tokenizer"):
        musicpeft.add_adapter(model, ConceptIdentifierConfig(concepts=["koto"], init_words={"koto": "koto"}))
    binding.bind_processor(model, processor)
    peft_model = musicpeft.add_adapter(model, ConceptIdentifierConfig(concepts=["koto"], init_words={"koto": "koto"}))
    encoder = peft_model.get_base_model().text_encoder
    word = encoder.shared.get_base_layer().weight[processor.tokenizer.convert_tokens_to_ids("\u2581koto")]
    assert torch.equal(encoder.shared.concept_embeddings["default"], word.expand(3, -1))


def test_placeholders_of_an_inactive_or_disabled_adapter_raise():
    model, processor = musicgen(), tiny_musicgen_processor()
    binding.bind_processor(model, processor)
    peft_model = musicpeft.add_adapter(model, ConceptIdentifierConfig(concepts=["koto"]), "a")
    musicpeft.add_adapter(model, ConceptIdentifierConfig(concepts=["shamisen"]), "b")
    inputs = processor(text=["<koto> jig"], return_tensors="pt")
    with pytest.raises(ValueError, match=r"<koto:0>.*adapter\(s\) \['a'\].*active: \['b'\]"):
        logits(peft_model, inputs)
    peft_model.set_adapter("a")
    logits(peft_model, inputs)
    with peft_model.disable_adapter(), pytest.raises(ValueError, match="adapters are disabled"):
        logits(peft_model, inputs)
    plain = peft_model.unload()
    assert type(plain.text_encoder.shared).__name__ == "Embedding"
    # The tokenizer is back to plain text: no identifier ids reach the base model.
    assert max(processor(text="<koto> jig")["input_ids"]) < 138


# -- AudioLDM2: tokens in both text encoders (T5 and CLAP), placeholders through the pipeline's tokenizers --


def test_audioldm2_tokens_in_both_text_encoders(tmp_path):
    from musicpeft.tiny.audioldm2 import tiny_audioldm2_pipeline

    pipe = tiny_audioldm2_pipeline()
    t5_vocab, clap_vocab = len(pipe.tokenizer_2), len(pipe.tokenizer)
    peft_model = loading.add_pipeline_adapter(pipe, ConceptIdentifierConfig(concepts=["koto", "shamisen"]))
    trainable = {n: p.numel() for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable == {
        "base_model.model.text_encoder.text_model.embeddings.word_embeddings.concept_embeddings.default": 6 * 16,
        "base_model.model.text_encoder_2.shared.concept_embeddings.default": 6 * 32,
    }
    assert pipe.text_encoder_2.get_input_embeddings().weight.shape[0] == t5_vocab
    assert pipe.tokenizer_2("<koto>").input_ids == [t5_vocab, t5_vocab + 1, t5_vocab + 2, 1]
    assert pipe.tokenizer("<shamisen>").input_ids == [0, clap_vocab + 3, clap_vocab + 4, clap_vocab + 5, 2]
    with pytest.raises(UnknownConceptError, match="<guitar>"):
        pipe(prompt="a <guitar> solo", num_inference_steps=1, audio_length_in_s=0.64)

    with torch.no_grad():
        for p in peft_model.parameters():
            if p.requires_grad:
                p.mul_(3.0)

    def run(pipeline):
        generator = torch.Generator().manual_seed(0)
        return pipeline(prompt="<koto> and <shamisen> duet", num_inference_steps=2, audio_length_in_s=0.64,
                        generator=generator).audios

    reference = run(pipe)
    loading.save_pipeline_adapter(pipe, tmp_path)
    loaded = tiny_audioldm2_pipeline()
    loading.load_pipeline_adapter(loaded, tmp_path)
    assert torch.equal(torch.as_tensor(run(loaded)), torch.as_tensor(reference))


def test_hooked_tokenizer_pickles_and_copies(tmp_path):
    import pickle

    _, processor = attach()
    expected = processor(text="<koto> jig")["input_ids"]
    assert pickle.loads(pickle.dumps(processor))(text="<koto> jig")["input_ids"] == expected
    copied = copy.deepcopy(processor)
    assert copied(text="<koto> jig")["input_ids"] == expected
    assert copied.tokenizer._encode_plus.tokenizer is copied.tokenizer
    processor.save_pretrained(tmp_path)  # the added tokens are saved with the tokenizer
    from transformers import MusicgenProcessor

    assert MusicgenProcessor.from_pretrained(tmp_path)(text="<koto:0>")["input_ids"] == expected[:1] + [1]


def test_concept_adapters_are_recognised(tmp_path):
    from musicpeft.tuners.pivotal_mask import PivotalMaskConfig

    assert binding.is_concept_adapter(ConceptIdentifierConfig(concepts=["koto"]))
    assert binding.is_concept_adapter(PivotalMaskConfig(concepts=["koto"]))
    assert not binding.is_concept_adapter(musicpeft.SoftMusicPromptConfig())
    ConceptIdentifierConfig(concepts=["koto"]).save_pretrained(tmp_path)
    assert binding.is_concept_adapter(tmp_path) and not binding.is_concept_adapter(tmp_path / "missing")


def test_merged_and_saved_model_and_processor_keep_the_placeholders(tmp_path):
    """Issue 9: after merge + save, a reloaded processor read `<koto>` as characters (silently wrong)."""
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    peft_model, processor = attach(init_seed=5)
    with torch.no_grad():
        peft_model.get_base_model().text_encoder.shared.concept_embeddings["default"].mul_(3.0)
    prompt = ["a jig on <koto>", "<shamisen> and <koto> duet"]
    reference = logits(peft_model, processor(text=prompt, return_tensors="pt", padding=True))
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)

    model = MusicgenForConditionalGeneration.from_pretrained(tmp_path)
    reloaded = placeholders.load_processor(tmp_path)
    assert torch.equal(logits(model, reloaded(text=prompt, return_tensors="pt", padding=True)), reference)
    assert placeholders.placeholder_definitions(reloaded.tokenizer)["<koto>"] == "<koto:0><koto:1><koto:2>"
    # transformers alone reloads the tokens but not the rule; restore_placeholders puts it back.
    plain = AutoProcessor.from_pretrained(tmp_path)
    chars = plain(text=prompt, return_tensors="pt", padding=True)
    assert not torch.equal(logits(model, chars), reference)
    assert set(placeholders.restore_placeholders(plain)) == {"<koto>", "<shamisen>"}
    assert torch.equal(logits(model, plain(text=prompt, return_tensors="pt", padding=True)), reference)
    # Binding the reloaded processor to a model restores the rule too, and the tokens count as ours (no clash).
    again = AutoProcessor.from_pretrained(tmp_path)
    fresh_model = musicgen()
    binding.bind_processor(fresh_model, again)
    musicpeft.add_adapter(fresh_model, ConceptIdentifierConfig(concepts=["koto"]))
    assert again(text="<koto>")["input_ids"] == reloaded(text="<koto>")["input_ids"]


def test_a_saved_placeholder_rule_without_its_tokens_is_refused(tmp_path):
    import json

    _, processor = attach()
    processor.save_pretrained(tmp_path)
    config_path = tmp_path / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["musicpeft_placeholders"]["<harp>"] = "<harp:0><harp:1>"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"identifier tokens \['<harp:0>', '<harp:1>'\] that this tokenizer"):
        placeholders.load_processor(tmp_path)


def test_a_refused_load_leaves_model_and_tokenizer_as_they_were(tmp_path):
    from safetensors.torch import save_file

    peft_model, _ = attach()
    musicpeft.save_adapter(peft_model, tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    save_file({"base_model.model.text_encoder.shared.other": torch.zeros(6, 32)}, weights)
    model, processor = musicgen(), tiny_musicgen_processor()
    binding.bind_processor(model, processor)
    modules = [type(m) for m in model.modules()]
    with pytest.raises(ValueError, match="lack .*concept_embeddings"):
        musicpeft.load_adapter(model, tmp_path)
    assert [type(m) for m in model.modules()] == modules and not hasattr(model, "peft_config")
    assert model.text_encoder.encoder.embed_tokens.weight is model.text_encoder.shared.weight
    assert placeholders.placeholder_definitions(processor.tokenizer) == {}
    assert processor(text="a <koto> jig")["input_ids"] == tiny_musicgen_processor()(text="a <koto> jig")["input_ids"]
    # The same processor can take the (repaired) adapter afterwards.
    musicpeft.save_adapter(peft_model, tmp_path)
    loaded = musicpeft.load_adapter(model, tmp_path)
    assert torch.equal(logits(loaded, processor(text=PROMPTS, return_tensors="pt", padding=True)),
                       logits(peft_model, processor(text=PROMPTS, return_tensors="pt", padding=True)))
