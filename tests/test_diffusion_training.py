"""AudioLDM2 diffusion training: the mel the VAE expects, the loss, and the accelerate loop."""

import json
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from peft import get_peft_model
from safetensors.torch import load_file

from musicpeft.tiny.audioldm2 import tiny_audioldm2_pipeline
from musicpeft.training.diffusion import (
    STATE_FILE,
    BestKeeper,
    DiffusionTrainingArguments,
    evaluate_audioldm2,
    resolve_trainable,
    train_audioldm2,
)
from musicpeft.training.diffusion_data import AudioTextCollator, MelConfig, frame_samples, log_mel
from musicpeft.training.presets import lora_config, prepare_full_finetune

SR = 16000
TEXTS = ["a cheerful jig", "slow piano", "violin waltz", "sad cello"]




def tone(freq: float, n: int, rate: int = SR) -> np.ndarray:
    t = np.arange(n) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * np.sin(2 * np.pi * 3 * freq * t)).astype(np.float32)


def tone_dataset(n: int = 4, samples: int = 20480) -> datasets.Dataset:
    return datasets.Dataset.from_dict({
        "audio": [tone(220.0 * (i + 1), samples + 800 * i) for i in range(n)],
        "sampling_rate": [SR] * n,
        "text": TEXTS[:n],
    })


def lora_pipe(preset: str = "attn"):
    pipe = tiny_audioldm2_pipeline()
    get_peft_model(pipe.unet, lora_config(pipe, preset, r=4))
    return pipe


def state(pipe) -> dict[str, torch.Tensor]:
    return {f"{c}.{k}": v.detach().clone() for c, m in pipe.components.items()
            if isinstance(m, torch.nn.Module) for k, v in m.state_dict().items()}


def args(**kwargs) -> DiffusionTrainingArguments:
    defaults = dict(num_train_epochs=1, per_device_train_batch_size=2, per_device_eval_batch_size=4,
                    audio_length_s=1.28, logging_steps=1)
    return DiffusionTrainingArguments(**{**defaults, **kwargs})


# ------------------------------------------------------------------------------------------------ the mel


def test_mel_parameters_come_from_the_vocoder_and_audioldm_configs():
    pipe = tiny_audioldm2_pipeline()
    assert MelConfig.from_pipeline(pipe) == MelConfig(16000, 1024, 1024, 160, 32, 0.0, 8000.0)
    # The published 16 kHz vocoder: upsample_rates 5*4*2*2*2 = 160, 64 mel bins.
    published = SimpleNamespace(vocoder=SimpleNamespace(config=SimpleNamespace(
        sampling_rate=16000, upsample_rates=[5, 4, 2, 2, 2], model_in_dim=64)))
    assert MelConfig.from_pipeline(published) == MelConfig()
    hires = SimpleNamespace(vocoder=SimpleNamespace(config=SimpleNamespace(
        sampling_rate=48000, upsample_rates=[6, 5, 4, 2, 2], model_in_dim=256)))
    assert MelConfig.from_pipeline(hires) == MelConfig(48000, 2048, 2048, 480, 256, 20.0, 24000.0)
    with pytest.raises(ValueError, match="fmax=9000"):
        MelConfig(fmax=9000.0)


def test_log_mel_matches_a_librosa_reference():
    import librosa

    config = MelConfig(n_mels=32)
    wave = tone(440.0, 6400)
    ours = log_mel(torch.from_numpy(wave)[None], config)[0, 0].numpy()
    pad = (config.n_fft - config.hop_length) // 2
    spec = np.abs(librosa.stft(np.pad(wave, pad, mode="reflect"), n_fft=1024, hop_length=160, win_length=1024,
                               window="hann", center=False))
    basis = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=32, fmin=0.0, fmax=8000.0)
    reference = np.log(np.maximum(basis @ spec, 1e-5)).T
    assert ours.shape == (6400 // 160, 32)
    np.testing.assert_allclose(ours, reference, atol=2e-3)


def test_mel_has_the_shape_the_vae_and_vocoder_expect():
    pipe = tiny_audioldm2_pipeline()
    config = MelConfig.from_pipeline(pipe)
    wave = torch.from_numpy(tone(330.0, 20480))[None]
    mel = log_mel(wave, config)
    assert mel.shape == (1, 1, 128, pipe.vocoder.config.model_in_dim)  # [batch, 1, frames, n_mels]
    with torch.no_grad():
        latents = pipe.vae.encode(mel).latent_dist.mode()
        # Exactly the latent shape the pipeline samples when generating 1.28 s.
        generation = pipe.prepare_latents(1, pipe.unet.config.in_channels, 128, torch.float32, "cpu", None)
        assert latents.shape == generation.shape == (1, 4, 32, 8)
        decoded = pipe.vae.decode(latents).sample
        assert decoded.shape == mel.shape
        assert pipe.mel_spectrogram_to_waveform(decoded).shape == wave.shape  # the vocoder's hop is the mel hop
    assert frame_samples(config, pipe.vae_scale_factor) == 640


def test_collator_resamples_mixes_down_normalises_and_pads():
    config = MelConfig(n_mels=32)
    collate = AudioTextCollator(config, vae_scale_factor=4, num_samples=16000)
    assert collate.num_samples == 16000  # 25 whole VAE frames of 640 samples
    stereo = np.stack([tone(220.0, 22050, 22050), tone(220.0, 22050, 22050)])  # 1 s at 22.05 kHz
    batch = collate([{"audio": stereo, "sampling_rate": 22050, "text": "stereo", "_index": 0},
                     {"audio": tone(440.0, 40000) + 0.2, "sampling_rate": SR, "text": 7, "_index": 1}])
    wave = batch["waveform"].numpy()
    assert wave.shape == (2, 16000) and batch["text"] == ["stereo", "7"]
    assert abs(np.abs(wave[0]).max() - 0.5) < 1e-4 and abs(wave[1].mean()) < 1e-3  # AudioLDM's normalize_wav
    free = AudioTextCollator(config, vae_scale_factor=4, num_samples=None, normalize=False)
    assert free([{"audio": tone(1.0, 1000), "sampling_rate": SR, "text": ""}])["waveform"].shape == (1, 1280)


def test_too_short_clip_raises_naming_item_and_minimum():
    data = datasets.Dataset.from_dict({"audio": [tone(220.0, 20480), tone(220.0, 600)], "sampling_rate": [SR] * 2,
                                       "text": ["fine", "too short"]})
    with pytest.raises(ValueError, match=r"dataset item 1 \(text 'too short'\) is too short: 600 samples .* "
                                         r"at least 640 samples \(0\.040 s\)"):
        train_audioldm2(lora_pipe(), data, args=args(per_device_train_batch_size=2, random_crop=False))


def test_dataset_columns_are_checked():
    pipe = lora_pipe()
    no_rate = datasets.Dataset.from_dict({"audio": [tone(220.0, 20480)], "text": ["x"]})
    with pytest.raises(ValueError, match="no `sampling_rate` column"):
        train_audioldm2(pipe, no_rate, args=args())
    train_audioldm2(pipe, no_rate, args=args(sampling_rate=SR, max_steps=1))  # a fixed rate instead
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['text'\]"):
        train_audioldm2(pipe, datasets.Dataset.from_dict({"audio": [tone(1, 9000)]}), args=args(sampling_rate=SR))


# ------------------------------------------------------------------------------------------------ training


def test_one_lora_step_changes_only_lora_weights():
    pipe = lora_pipe()
    before = state(pipe)
    flags = {n: p.requires_grad for n, p in pipe.unet.named_parameters()}
    history = train_audioldm2(pipe, tone_dataset(2), args=args(max_steps=1, learning_rate=1e-3))
    after = state(pipe)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    lora = {k for k in before if ".lora_" in k}
    assert changed == lora and len(lora) == 288  # every LoRA matrix moved, nothing else by a single bit
    assert history["global_step"] == 1 and len(history["train_loss"]) == 1
    assert {n: p.requires_grad for n, p in pipe.unet.named_parameters()} == flags


def test_several_steps_lower_the_loss_on_a_fixed_batch():
    pipe = lora_pipe()
    data = tone_dataset(2)
    settings = args(max_steps=12, learning_rate=1e-2, lr_scheduler_type="constant", random_crop=False)
    before = evaluate_audioldm2(pipe, data, settings)
    assert evaluate_audioldm2(pipe, data, settings) == before  # fixed evaluation noise: reproducible
    train_audioldm2(pipe, data, args=settings)
    after = evaluate_audioldm2(pipe, data, settings)
    assert after < before - 0.01, (before, after)


def test_evaluation_each_epoch_keeps_and_restores_the_best_checkpoint(tmp_path):
    pipe = lora_pipe()
    data = tone_dataset(4)
    saved = []
    settings = args(output_dir=str(tmp_path), num_train_epochs=2, learning_rate=3e-3)
    history = train_audioldm2(pipe, data, eval_dataset=data, args=settings,
                              save_fn=lambda p, d: saved.append((p, d)))
    losses = [e["loss"] for e in history["eval_loss"]]
    assert [e["epoch"] for e in history["eval_loss"]] == [1, 2] and history["global_step"] == 4
    best = int(np.argmin(losses))
    assert history["best_eval_loss"] == losses[best] and history["best_epoch"] == best + 1
    info = json.loads((tmp_path / "best" / "trainer_state.json").read_text())
    assert info["epoch"] == best + 1 and info["eval_loss"] == losses[best]
    # The pipeline ends with the best state, which re-evaluates to the best loss exactly.
    stored = load_file(tmp_path / "best" / STATE_FILE)
    named = resolve_trainable(pipe)
    assert set(stored) == set(named) and all(torch.equal(stored[n], p.detach()) for n, p in named.items())
    assert evaluate_audioldm2(pipe, data, settings) == pytest.approx(history["best_eval_loss"], abs=1e-6)
    improvements = sum(1 for i, v in enumerate(losses) if v < min(losses[:i], default=float("inf")))
    assert [d for _, d in saved] == [str(tmp_path / "best")] * improvements + [str(tmp_path / "last")]
    assert all(p is pipe for p, _ in saved)
    assert (tmp_path / "last" / STATE_FILE).exists()


def test_best_keeper_keeps_the_lowest_not_the_last(tmp_path):
    weight = torch.nn.Parameter(torch.zeros(3))
    calls = []
    for directory in (None, str(tmp_path / "best")):
        keeper = BestKeeper({"w": weight}, directory, on_improve=calls.append)
        for epoch, (value, loss) in enumerate([(1.0, 3.0), (2.0, 1.0), (3.0, 2.0), (4.0, 1.0)], start=1):
            with torch.no_grad():
                weight.fill_(value)
            keeper.offer(epoch, epoch * 10, loss)
        keeper.restore()
        assert torch.equal(weight, torch.full((3,), 2.0)) and (keeper.best_epoch, keeper.best_loss) == (2, 1.0)
    assert calls == [str(tmp_path / "best")] * 2  # only the on-disk keeper announces its saves


def test_trainable_parameters_are_resolved_safely():
    pipe = tiny_audioldm2_pipeline()
    with pytest.raises(ValueError, match="Every parameter of the pipeline requires grad"):
        resolve_trainable(pipe)
    prepare_full_finetune(pipe)
    assert {id(p) for p in resolve_trainable(pipe).values()} == {id(p) for p in pipe.unet.parameters()}
    lora = lora_pipe()
    names = resolve_trainable(lora)
    assert names and all(n.startswith("unet.") and ".lora_" in n for n in names)
    chosen = resolve_trainable(lora, [lora.unet.conv_in.weight])
    assert list(chosen) == ["unet.conv_in.weight"]
    with pytest.raises(ValueError, match="save_fn needs"):
        train_audioldm2(lora, tone_dataset(1), args=args(), save_fn=lambda p, d: None)


def test_explicit_parameters_and_v_prediction_train():
    pipe = tiny_audioldm2_pipeline()
    pipe.scheduler.register_to_config(prediction_type="v_prediction")
    before = state(pipe)
    target = pipe.unet.conv_out.bias
    history = train_audioldm2(pipe, tone_dataset(2), args=args(max_steps=2, learning_rate=1e-2),
                              trainable_parameters=[target])
    after = state(pipe)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"unet.conv_out.bias"} and np.isfinite(history["train_loss"][-1]["loss"])
    assert all(p.requires_grad for p in pipe.unet.parameters())  # flags restored


def test_latent_cache_second_epoch_does_no_vae_encoding(tmp_path):
    pipe = lora_pipe()
    calls = []
    original = pipe.vae.encode

    def counting(mel, *a, **kw):
        calls.append(mel.shape[0])
        return original(mel, *a, **kw)

    pipe.vae.encode = counting
    data = tone_dataset(4, samples=16000)  # shorter than audio_length_s: no random crop, one key per clip
    history = train_audioldm2(pipe, data, args=args(num_train_epochs=2, latent_cache_dir=str(tmp_path / "lat")))
    assert history["global_step"] == 4
    assert sum(calls) == 4  # epoch 1 encodes each clip once, epoch 2 reads them all from the cache
    assert len(list((tmp_path / "lat").rglob("*.safetensors"))) == 4
    train_audioldm2(pipe, data, args=args(num_train_epochs=1, latent_cache_dir=str(tmp_path / "lat")))
    assert sum(calls) == 4  # another run on the same clips and VAE: no encoding at all
    uncached = len(calls)
    train_audioldm2(pipe, data, args=args(num_train_epochs=2))
    assert len(calls) - uncached == 4  # without the cache: every batch of every epoch (2 batches x 2)


def test_cached_latents_give_the_uncached_loss(tmp_path):
    from musicpeft.training.diffusion import _noise_scheduler, diffusion_loss, latent_cache_for

    pipe = lora_pipe()
    mel = MelConfig.from_pipeline(pipe)
    wave = torch.from_numpy(np.stack([tone(330.0, 20480), tone(440.0, 20480)]))
    scheduler, cache = _noise_scheduler(pipe), latent_cache_for(pipe, tmp_path, mel)
    with torch.no_grad():
        plain = diffusion_loss(pipe, wave, TEXTS[:2], scheduler, mel, torch.Generator().manual_seed(3))
        for _ in range(2):  # the first call fills the cache, the second reads it
            cached = diffusion_loss(pipe, wave, TEXTS[:2], scheduler, mel, torch.Generator().manual_seed(3),
                                    latent_cache=cache)
            torch.testing.assert_close(cached, plain, rtol=1e-5, atol=1e-6)
