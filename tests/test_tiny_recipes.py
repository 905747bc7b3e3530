"""The tiny-model recipes' shared training loop: wall-time budget, schedule, resumable safetensors checkpoints."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from musicpeft.tiny.recipes.codec import EmaRvq, new_codec, train_codec
from musicpeft.tiny.recipes.loop import Schedule, load_checkpoint, save_checkpoint, train_for_budget


def test_schedule_is_a_cosine_from_lr_to_its_floor_with_linear_warmup():
    s = Schedule(2.0, floor=0.1)
    assert s(0, 0.0) == pytest.approx(2.0) and s(500, 1.0) == pytest.approx(0.2)
    assert s(7, 0.5) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))
    warm = Schedule(1.0, floor=0.05, warmup_steps=10)
    assert warm(0, 0.0) == pytest.approx(0.1) and warm(9, 0.0) == pytest.approx(1.0)


def _regression():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    target = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def step(rng: np.random.Generator):
        x = torch.from_numpy(rng.standard_normal((8, 4)).astype(np.float32))
        loss = ((model(x) - x @ target) ** 2).mean()
        return loss, {"loss": loss}

    return model, torch.optim.AdamW(model.parameters(), lr=0.05), step


def test_train_for_budget_checkpoints_and_resumes_the_same_run(tmp_path):
    ckpt = tmp_path / "run.safetensors"
    model, opt, step = _regression()
    info = train_for_budget(ckpt, model, opt, step, 0.01, Schedule(0.05), log=lambda _: None)
    assert info["step"] > 0 and info["elapsed_s"] >= 0.6 and info["train_loss"] == info["losses"]["loss"]
    saved = json.loads(ckpt.with_suffix(".json").read_text())
    assert saved["step"] == info["step"]
    tensors = load_file(str(ckpt))
    assert torch.equal(tensors["model.weight"], model.weight.detach())
    assert "opt.weight.exp_avg_sq" in tensors

    # a fresh process (new model + optimiser) resumes: same weights and Adam moments, more steps
    model2, opt2, step2 = _regression()
    assert load_checkpoint(ckpt, model2, opt2)["step"] == info["step"]
    assert torch.equal(model2.weight, model.weight)
    assert torch.equal(opt2.state[model2.weight]["exp_avg"], opt.state[model.weight]["exp_avg"])
    model3, opt3, step3 = _regression()
    more = train_for_budget(ckpt, model3, opt3, step3, 0.02, Schedule(0.05), log=lambda _: None)
    assert more["step"] > info["step"] and more["elapsed_s"] >= 1.2

    # budget already spent: the model is restored, the checkpoint left exactly as it was
    before = ckpt.read_bytes()
    model4, opt4, step4 = _regression()
    done = train_for_budget(ckpt, model4, opt4, step4, 0.02, Schedule(0.05), log=lambda _: None)
    assert done["step"] == more["step"] and ckpt.read_bytes() == before
    assert torch.equal(model4.weight, model3.weight)


def test_save_checkpoint_is_safetensors_plus_json(tmp_path):
    model, opt, _ = _regression()
    save_checkpoint(tmp_path / "c.safetensors", model, opt, {"step": 3, "elapsed_s": 1.0})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.safetensors"]
    assert load_checkpoint(tmp_path / "missing.safetensors", model, opt) is None


def test_codec_phase2_needs_phase1_and_rvq_sees_loaded_codebooks(tmp_path):
    with pytest.raises(FileNotFoundError, match="codec_ckpt.safetensors.*phase 2 needs an earlier phase"):
        train_codec(tmp_path, np.zeros((2, 16000), np.float32), 0.01, phase=2)
    model = new_codec(0)
    rvq = EmaRvq(model)
    assert not rvq.ready
    model.quantizer.layers[0].codebook.cluster_size.fill_(1.0)  # what loading a trained checkpoint does
    assert rvq.ready


def test_codec_decoder_phase_keeps_encoder_codebooks_and_codes(tmp_path):
    """Phase 3 trains the decoder only, so the codes (and a MusicGen trained on them) stay valid."""
    clips = np.random.default_rng(0).normal(0, 0.1, (4, 16000)).astype(np.float32)
    with pytest.raises(FileNotFoundError, match="phase 3 needs an earlier phase"):
        train_codec(tmp_path, clips, 0.01, phase=3)
    with pytest.raises(ValueError, match="phase must be one of"):
        train_codec(tmp_path, clips, 0.01, phase=4)
    before, _ = train_codec(tmp_path, clips, 0.005, batch=2, crop=3200, log=lambda m: None)
    after, info = train_codec(tmp_path, clips, 0.005, batch=2, crop=3200, lr=1e-2, log=lambda m: None, phase=3)
    assert info["step"] >= 1 and (tmp_path / "codec_decoder_ckpt.safetensors").is_file()
    b, a = before.state_dict(), after.state_dict()
    decoder = [k for k in b if k.startswith("decoder.")]
    assert all(torch.equal(b[k], a[k]) for k in b if not k.startswith("decoder."))
    assert any(not torch.equal(b[k], a[k]) for k in decoder)
    x = torch.from_numpy(clips[:1, None, :])
    with torch.no_grad():
        assert torch.equal(before.encode(x).audio_codes, after.encode(x).audio_codes)
