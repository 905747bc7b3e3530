"""MusicgenCollator: delay-pattern labels, audio vs precomputed codes, loss and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures import tiny_musicgen, tiny_musicgen_processor, tiny_musicgen_with_music

from musicpeft.data import make_rendered_dataset, render_clips
from musicpeft.training.collator import (
    MusicgenCollator,
    delayed_labels,
    encode_audio,
    precompute_codes,
)

SR = 16000
K = 4


@pytest.fixture(scope="module")
def model():
    return tiny_musicgen_with_music(seed=0)


@pytest.fixture(scope="module")
def processor():
    return tiny_musicgen_processor()


@pytest.fixture(scope="module")
def clips():
    return render_clips(3, 0.5, sample_rate=SR, program=73, seed=0)


def test_init_codebooks_makes_codes_follow_the_music(model, clips):
    stock = tiny_musicgen(seed=0)
    assert int(encode_audio(stock, clips[:1])[0].max()) == 0  # zero codebooks: every code is 0
    codes = encode_audio(model, clips[:1])[0]
    assert codes.shape == (K, 50)
    assert all(len(torch.unique(codes[k])) > 5 for k in range(K))


def test_delayed_labels_shift_codebook_k_by_k_frames(model):
    frames = 6
    codes = torch.tensor([[10 * k + t for t in range(frames)] for k in range(K)])
    labels = delayed_labels(model, codes)
    assert labels.shape == (frames + K - 1, K)
    for k in range(K):
        for j in range(frames + K - 1):
            expected = codes[k, j - k].item() if 0 <= j - k < frames else -100
            assert labels[j, k].item() == expected, (j, k)


def test_labels_give_the_decoder_the_sequence_generate_builds(model):
    from transformers.models.musicgen.modeling_musicgen import shift_tokens_right

    pad = start = 64
    codes = torch.randint(0, 64, (K, 7), generator=torch.Generator().manual_seed(0))
    labels = delayed_labels(model, codes)
    decoder_input = shift_tokens_right(labels[None], pad, start)[0]  # what forward(labels=) feeds
    # generation: start column, delay pattern filled with pad, then pads removed to get codes back
    with_start = torch.cat([torch.full((K, 1), start), codes], dim=1)
    _, pattern = model.decoder.build_delay_pattern_mask(with_start, pad_token_id=pad, max_length=7 + K)
    assert torch.equal(decoder_input, pattern[:, :-1])
    assert torch.equal(pattern[pattern != pad].reshape(K, -1), codes)


def test_encoding_does_not_depend_on_the_batch(model, clips):
    alone = encode_audio(model, [clips[0]])[0]
    together = encode_audio(model, [clips[1], clips[0][: SR // 4], clips[0]])
    assert torch.equal(together[2], alone)
    assert together[1].shape == (K, 25)


def test_collator_pads_labels_and_matches_precomputed_codes(model, processor, clips):
    collator = MusicgenCollator(processor, model)
    examples = [
        {"audio": clips[0], "text": "a flute melody"},
        {"audio": clips[1][: SR // 5], "text": "calm"},
    ]
    batch = collator(examples)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["labels"].shape == (2, 50 + K - 1, K)
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["attention_mask"][1].sum() < 4
    short = delayed_labels(model, encode_audio(model, [clips[1][: SR // 5]])[0])  # 20 frames
    assert torch.equal(batch["labels"][1, : 20 + K - 1], short)
    assert (batch["labels"][1, 20 + K - 1 :] == -100).all()
    codes = encode_audio(model, [e["audio"] for e in examples])
    precomputed = collator([{"codes": c.numpy(), "text": e["text"]} for c, e in zip(codes, examples, strict=True)])
    assert all(torch.equal(batch[k], precomputed[k]) for k in batch)


def test_loss_is_finite_and_trains_the_decoder_only(model, processor, clips):
    batch = MusicgenCollator(processor, model)([{"audio": c, "text": "flute"} for c in clips])
    model.train()
    model.zero_grad()
    try:
        loss = model(**batch).loss
        assert torch.isfinite(loss) and 2.0 < loss.item() < 8.0  # about ln(64) = 4.16 for random weights
        loss.backward()
    finally:
        model.eval()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith("decoder."))
    assert all(g is None for n, g in grads.items() if n.startswith("audio_encoder."))
    model.zero_grad()


def test_loss_ignores_the_padding_of_shorter_clips(model, processor, clips):
    collator = MusicgenCollator(processor, model)
    short = {"audio": clips[1][: SR // 5], "text": "flute"}
    with torch.no_grad():
        alone = model(**collator([short])).loss
        # pairing with a longer clip pads the short one; its per-token loss must not change
        padded = collator([short, {"audio": clips[0], "text": "flute"}])
        out = model(**padded)
    logits = out.logits.reshape(2, K, -1, 64)[0]
    labels = padded["labels"][0]
    per_codebook = [torch.nn.functional.cross_entropy(logits[k], labels[:, k]) for k in range(K)]
    assert torch.stack(per_codebook).mean().item() == pytest.approx(alone.item(), rel=1e-5)


def test_precompute_codes_stores_codes_the_collator_reads(model, processor):
    ds = make_rendered_dataset(3, 0.5, SR, program=40, seed=0)
    coded = precompute_codes(ds, model, batch_size=2)
    assert coded.column_names == ["text", "codes"]
    row = coded[0]
    assert isinstance(row["codes"], np.ndarray) and row["codes"].shape == (K, 50)
    collator = MusicgenCollator(processor, model)
    from_audio = collator([ds[i] for i in range(3)])
    from_codes = collator([coded[i] for i in range(3)])
    assert torch.equal(from_audio["labels"], from_codes["labels"])
    assert precompute_codes(ds, model, keep_audio=True).column_names == ["audio", "text", "codes"]


def test_collator_accepts_a_peft_model(model, processor, clips):
    import copy

    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(target_modules=["q_proj", "v_proj"]))
    examples = [{"audio": clips[2], "text": "flute"}]
    batch = MusicgenCollator(processor, peft_model)(examples)
    assert torch.equal(batch["labels"], MusicgenCollator(processor, model)(examples)["labels"])
    with torch.no_grad():
        assert torch.isfinite(peft_model(**batch).loss)


def test_collator_errors_name_the_problem(model, processor, clips):
    collator = MusicgenCollator(processor, model)
    with pytest.raises(ValueError, match="sampling_rate=32000.*expects 16000"):
        collator([{"audio": clips[0], "text": "x", "sampling_rate": 32000}])
    with pytest.raises(KeyError, match="neither 'codes' nor 'audio'"):
        collator([{"text": "x"}])
    with pytest.raises(ValueError, match=r"codes must be \[codebooks=4, frames\]"):
        collator([{"codes": np.zeros((3, 5), dtype=np.int16), "text": "x"}])
    with pytest.raises(ValueError, match="mono"):
        collator([{"audio": np.zeros((2, 100), np.float32), "text": "x"}])


class _CountEncodes:
    """Counts the clips EnCodec encodes (wraps ``audio_encoder.encode`` on the instance)."""

    def __init__(self, model):
        self.clips = 0
        encoder = model.audio_encoder
        original = encoder.encode

        def counting(batch, *args, **kwargs):
            self.clips += batch.shape[0]
            return original(batch, *args, **kwargs)

        encoder.encode = counting
        self.undo = lambda: delattr(encoder, "encode")


def test_codes_cache_encodes_each_clip_once_per_codec(model, processor, tmp_path):
    import copy

    from musicpeft.training.musicgen_trainer import make_musicgen_trainer

    ds = make_rendered_dataset(4, 0.5, SR, program=40, seed=0)
    plain = precompute_codes(ds, model, batch_size=2)
    counter = _CountEncodes(model)
    try:
        first = precompute_codes(ds, model, batch_size=3, cache_dir=tmp_path / "cache")
        assert counter.clips == 4 and len(list((tmp_path / "cache").rglob("*.safetensors"))) == 4
        again = precompute_codes(ds.shuffle(seed=1), model, batch_size=2, cache_dir=tmp_path / "cache")
        assert counter.clips == 4  # a second pass (another run, another order) encodes nothing
        assert all(np.array_equal(first[i]["codes"], plain[i]["codes"]) for i in range(4))
        by_text = {r["text"] + str(r["codes"].sum()) for r in again}
        assert by_text == {r["text"] + str(r["codes"].sum()) for r in first}
        from peft import LoraConfig, get_peft_model

        peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(target_modules=["q_proj", "v_proj"]))
        trainer_counter = _CountEncodes(peft_model.get_base_model())
        trainer = make_musicgen_trainer(
            peft_model, processor, first, early_stopping_patience=None, output_dir=str(tmp_path / "t"),
            use_cpu=True, disable_tqdm=True, num_train_epochs=2, per_device_train_batch_size=2, save_strategy="no",
        )
        trainer.train()
        assert trainer.state.global_step == 4 and trainer_counter.clips == 0  # two epochs, zero encoding
    finally:
        counter.undo()
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.audio_encoder.quantizer.layers[0].codebook.embed[0] += 1.0
    other = _CountEncodes(changed)
    precompute_codes(ds, changed, cache_dir=tmp_path / "cache")
    assert other.clips == 4  # other codec weights: other cache entries
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 8
