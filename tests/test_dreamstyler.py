"""The dreamstyler recipe and the paper's baselines on tiny MusicGen and AudioLDM2; concept diagnostics."""

from __future__ import annotations

import copy
from functools import cache

import numpy as np
import pytest
import torch
from fixtures import tiny_musicgen, tiny_musicgen_processor

import musicpeft
from musicpeft.training.collator import init_codebooks_from_audio
from musicpeft.training.dreamstyler import ConceptData, DreamStylerArguments, train_dreamstyler
from musicpeft.tuners.concept_identifier import ConceptIdentifierConfig, binding
from musicpeft.tuners.concept_identifier.diagnostics import concept_similarity

RATE = 16000


def tones(base: float, n: int, seconds: float = 0.5) -> list[np.ndarray]:
    t = np.arange(int(RATE * seconds)) / RATE
    return [(0.5 * np.sin(2 * np.pi * base * (1 + 0.1 * i) * t)).astype(np.float32) for i in range(n)]


CONCEPTS = [
    ConceptData("koto", tones(440, 4), RATE, prompts=["<koto>", "a <koto> melody"], init_word="koto"),
    ConceptData("shamisen", tones(220, 4), RATE),
]
SMALL = dict(mask_epochs=1, tuning_steps=2, train_batch_size=4)


@cache
def _built():
    model = tiny_musicgen()
    init_codebooks_from_audio(model, [a for c in CONCEPTS for a in c.audio])
    return model


def musicgen():
    return copy.deepcopy(_built())


def test_paper_defaults():
    args = DreamStylerArguments()
    assert (args.tuning_steps, args.mask_epochs, args.train_batch_size) == (1500, 100, 32)
    assert (args.adam_beta1, args.adam_beta2, args.weight_decay, args.max_grad_norm) == (0.9, 0.95, 0.1, 1.0)
    assert (args.learning_rate, args.token_learning_rate, args.tokens_per_concept, args.percent) == (1e-5, 1e-4, 3, 5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="recipe must be one of"):
        DreamStylerArguments(recipe="lora")
    with pytest.raises(ValueError, match="must contain <koto>"):
        ConceptData("koto", tones(440, 1), RATE, prompts=["a melody"]).rows()
    with pytest.raises(ValueError, match="need the model's processor"):
        train_dreamstyler(musicgen(), CONCEPTS, DreamStylerArguments(**SMALL))
    with pytest.raises(ValueError, match="each concept once"):
        train_dreamstyler(musicgen(), CONCEPTS + CONCEPTS[:1], DreamStylerArguments(**SMALL))


def test_dreamstyler_recipe_on_musicgen():
    model, processor = musicgen(), tiny_musicgen_processor()
    result = train_dreamstyler(model, CONCEPTS, DreamStylerArguments(**SMALL), processor=processor)
    peft_model = result.model
    assert list(peft_model.peft_config) == ["default"]  # the stage-1 masks are gone
    assert result.selected["koto"] == result.selected["shamisen"] == round(0.05 * 2048)
    assert max(result.selected["koto"], result.selected["shamisen"]) <= result.selected["union"] <= 2 * 102
    assert result.trainable == {"mask": 0, "self_attention_values": result.selected["union"],
                                "cross_attention": 4096, "tokens": 2 * 3 * 32}
    assert result.optimizer_state_numel == 2 * sum(result.trainable.values())
    assert len(result.losses) == 2 and set(result.mask_losses) == {"koto", "shamisen"}
    groups = peft_model.base_model  # the token group and the weight group train at their own rates
    assert groups.peft_config["default"].num_selected == result.selected["union"]
    inputs = processor(text=["<koto> and <shamisen> duet"], return_tensors="pt")
    assert peft_model.generate(**inputs, guidance_scale=3.0, max_new_tokens=4).shape[0] == 1


@pytest.mark.parametrize(
    ("recipe", "expected"),
    [
        ("tokens_only", {"tokens": 192}),
        ("cross_attn_kv", {"mask": 0, "self_attention_values": 0, "cross_attention": 4096, "tokens": 192}),
        ("full", None),
    ],
)
def test_baselines(recipe, expected):
    model, processor = musicgen(), tiny_musicgen_processor()
    args = DreamStylerArguments(recipe=recipe, **SMALL)
    before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    result = train_dreamstyler(model, CONCEPTS, args, processor=processor)
    if expected is not None:
        assert result.trainable == expected
        assert result.optimizer_state_numel == 2 * sum(expected.values())
        return
    # All decoder weights trained in place; each concept is a fixed rare word.
    assert result.model is model and result.adapter_name is None
    assert result.trainable == {"full": sum(p.numel() for p in model.decoder.parameters())}
    assert any(not torch.equal(v, before[k]) for k, v in model.decoder.state_dict().items())
    assert processor(text="<koto>")["input_ids"] == processor(text="sks")["input_ids"]
    assert processor(text="<shamisen>")["input_ids"] == processor(text="zwx")["input_ids"]


def test_random_selection_recipe_needs_no_mask():
    args = DreamStylerArguments(selection="random", percent=10, per_layer=True, **SMALL)
    result = train_dreamstyler(musicgen(), CONCEPTS, args, processor=tiny_musicgen_processor())
    assert result.mask_losses == {} and result.selected == {"union": 2 * round(0.1 * 1024)}


def test_concept_similarity_diagnostic():
    model, processor = musicgen(), tiny_musicgen_processor()
    binding.bind_processor(model, processor)
    same = ConceptIdentifierConfig(concepts=["koto", "shamisen"], init_words={"koto": "koto", "shamisen": "koto"})
    musicpeft.add_adapter(model, same)
    twins = concept_similarity(model, "koto", "shamisen", "a slow folk song")
    assert set(twins) == {"tokens", "tokens+description"}
    assert twins["tokens"] == pytest.approx(1.0) and twins["tokens+description"] == pytest.approx(1.0)
    model, processor = musicgen(), tiny_musicgen_processor()
    binding.bind_processor(model, processor)
    musicpeft.add_adapter(model, ConceptIdentifierConfig(concepts=["koto", "shamisen"]))
    apart = concept_similarity(model, "koto", "shamisen")
    assert set(apart) == {"tokens"} and -1.0 <= apart["tokens"] < 0.99


def test_dreamstyler_recipe_on_audioldm2():
    from musicpeft.tiny.audioldm2 import tiny_audioldm2_pipeline

    pipe = tiny_audioldm2_pipeline()
    clips = [ConceptData(c.name, tones(440 if c.name == "koto" else 220, 2, 0.64), RATE) for c in CONCEPTS]
    args = DreamStylerArguments(mask_epochs=1, tuning_steps=1, train_batch_size=2, audio_length_s=0.64)
    result = train_dreamstyler(pipe, clips, args)
    assert result.selected["koto"] == round(0.05 * 9216)
    assert result.optimizer_state_numel == 2 * sum(result.trainable.values())
    assert result.trainable["tokens"] == 2 * 3 * (32 + 16)
    audio = pipe(prompt="<koto> and <shamisen> duet", num_inference_steps=2, audio_length_in_s=0.64).audios
    assert audio.shape[0] == 1
    similarity = concept_similarity(pipe, "koto", "shamisen", "a slow folk song", text_encoder="clap")
    assert set(similarity) == {"tokens", "tokens+description"}


def test_arguments_parse_from_the_command_line():
    from transformers import HfArgumentParser

    parser = HfArgumentParser(DreamStylerArguments)
    assert "--tuning_steps" in parser.format_help()
    (args,) = parser.parse_args_into_dataclasses(["--recipe", "cross_attn_kv", "--percent", "10", "--per_layer"])
    assert (args.recipe, args.percent, args.per_layer) == ("cross_attn_kv", 10.0, True)


@pytest.mark.parametrize("name", ["learning_rate", "token_learning_rate", "mask_learning_rate"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0])
def test_non_finite_or_negative_learning_rates_are_refused(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0, got {value}"):
        DreamStylerArguments(**{name: value})


class _NanGradient(torch.autograd.Function):
    """Zero in the forward pass, NaN in the backward pass: a gradient that diverged."""

    @staticmethod
    def forward(ctx, x):
        return x.sum() * 0

    @staticmethod
    def backward(ctx, grad):
        return torch.full((1,), float("nan"))


def test_nan_gradient_stops_before_the_update(monkeypatch):
    from musicpeft.training import dreamstyler
    from musicpeft.training.dreamstyler import NonFiniteTrainingError

    model, processor = musicgen(), tiny_musicgen_processor()
    real = dreamstyler._MusicgenBackend.loss

    def loss(self, *args):
        table = self.peft_model.base_model.model.text_encoder.shared.concept_embeddings["default"]
        return real(self, *args) + _NanGradient.apply(table[0, :1])

    monkeypatch.setattr(dreamstyler._MusicgenBackend, "loss", loss)
    args = DreamStylerArguments(recipe="tokens_only", **SMALL)
    stopped = r"tokens_only \(2 steps\): training stopped at step 1: the gradient of \S*concept_embeddings\S* is not"
    with pytest.raises(NonFiniteTrainingError, match=stopped):
        train_dreamstyler(model, CONCEPTS, args, processor=processor)
    table = model._musicpeft_peft_model.base_model.model.text_encoder.shared.concept_embeddings["default"]
    assert torch.isfinite(table).all()


def test_nan_loss_stops_before_any_update(monkeypatch):
    from musicpeft.training import dreamstyler
    from musicpeft.training.dreamstyler import NonFiniteTrainingError

    model, processor = musicgen(), tiny_musicgen_processor()
    real = dreamstyler._MusicgenBackend.loss
    monkeypatch.setattr(dreamstyler._MusicgenBackend, "loss", lambda self, *a: real(self, *a) * float("nan"))
    args = DreamStylerArguments(recipe="tokens_only", **SMALL)
    with pytest.raises(NonFiniteTrainingError,
                       match=r"tokens_only \(2 steps\): training stopped at step 1: the loss is nan"):
        train_dreamstyler(model, CONCEPTS, args, processor=processor)
    peft_model = model._musicpeft_peft_model
    table = peft_model.base_model.model.text_encoder.shared.concept_embeddings["default"]
    assert torch.isfinite(table).all()
