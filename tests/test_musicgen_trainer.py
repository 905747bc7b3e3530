"""The Trainer path: LoRA training lowers the loss, early stopping, token cross-entropy."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from fixtures import tiny_musicgen_processor, tiny_musicgen_with_music

from musicpeft.data import make_rendered_dataset
from musicpeft.training import MusicgenCollator, precompute_codes
from musicpeft.training.musicgen_trainer import make_musicgen_trainer, token_cross_entropy

SR = 16000


@pytest.fixture(scope="module")
def base():
    return tiny_musicgen_with_music(seed=0)


@pytest.fixture(scope="module")
def processor():
    return tiny_musicgen_processor()


@pytest.fixture(scope="module")
def koto():
    return make_rendered_dataset(4, 0.5, SR, program=107, seed=0)


def _lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(copy.deepcopy(model), LoraConfig(target_modules=["q_proj", "v_proj"]))


def _quiet(tmp_path, **kw):
    return dict(output_dir=str(tmp_path), use_cpu=True, disable_tqdm=True, report_to="none", seed=0, **kw)


def test_lora_steps_lower_the_loss_on_a_fixed_batch(base, processor, koto, tmp_path):
    model = _lora(base)
    batch = MusicgenCollator(processor, model)([koto[i] for i in range(len(koto))])

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return model(**batch).loss.item()

    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    before = loss()
    trainer = make_musicgen_trainer(
        model, processor, koto, early_stopping_patience=None,
        **_quiet(
            tmp_path, max_steps=25, learning_rate=5e-2, lr_scheduler_type="constant",
            per_device_train_batch_size=4, logging_strategy="steps", logging_steps=5,
        ),
    )
    assert trainer.args.remove_unused_columns is False and trainer.args.label_names == ["labels"]
    trainer.train()
    after = loss()
    assert after < before - 0.15, (before, after)  # measured: 4.31 -> 3.96
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 5 and logged[-1] < logged[0]
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


def test_early_stopping_is_installed_and_stops(base, processor, koto, tmp_path):
    from transformers import EarlyStoppingCallback

    model = _lora(base)
    train, held = koto.select(range(3)), koto.select([3])
    trainer = make_musicgen_trainer(
        model, processor, train, eval_dataset=held, early_stopping_patience=2,
        # lr 0: the eval loss never improves, so training must stop after 1 + patience evaluations
        **_quiet(tmp_path, num_train_epochs=10, learning_rate=0.0, per_device_train_batch_size=3),
    )
    callbacks = [c for c in trainer.callback_handler.callbacks if isinstance(c, EarlyStoppingCallback)]
    assert len(callbacks) == 1 and callbacks[0].early_stopping_patience == 2
    args = trainer.args
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss" and not args.greater_is_better
    assert args.eval_strategy == args.save_strategy == "epoch"
    trainer.train()
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    assert len(evals) == 3 and trainer.state.epoch == pytest.approx(3.0)
    assert all(math.isfinite(e) for e in evals)
    checkpoints = list(tmp_path.glob("checkpoint-*"))
    assert checkpoints and all((c / "training_args.json").is_file() for c in checkpoints)
    for pickled in ("optimizer.pt", "rng_state*.pth", "training_args.bin", "*.pkl"):
        assert not list(tmp_path.rglob(pickled)), pickled
    no_eval = make_musicgen_trainer(model, processor, train, **_quiet(tmp_path / "b", max_steps=1))
    assert not any(isinstance(c, EarlyStoppingCallback) for c in no_eval.callback_handler.callbacks)


def test_given_args_are_fixed_for_musicgen(base, processor, koto, tmp_path):
    from transformers import TrainingArguments

    args = TrainingArguments(**_quiet(tmp_path, max_steps=1, remove_unused_columns=True))
    trainer = make_musicgen_trainer(base, processor, koto, args=args, learning_rate=3e-4)
    assert trainer.args.learning_rate == 3e-4 and trainer.args.max_steps == 1
    assert trainer.args.remove_unused_columns is False and trainer.args.label_names == ["labels"]
    # MusicGen's loss is already a mean: the Trainer must scale it for gradient accumulation itself
    assert trainer.model_accepts_loss_kwargs is False
    batch = trainer.data_collator([koto[0], koto[1]])
    with torch.no_grad():
        assert trainer.compute_loss(base, batch).item() == pytest.approx(base(**batch).loss.item(), rel=1e-6)


def test_paper_defaults_when_no_args(base, processor, koto, tmp_path):
    trainer = make_musicgen_trainer(base, processor, koto, eval_dataset=koto, output_dir=str(tmp_path))
    assert trainer.args.per_device_train_batch_size == 32 and trainer.args.learning_rate == 1e-5
    assert trainer.args.num_train_epochs == 100 and trainer.args.load_best_model_at_end


def test_trainer_bar_follows_the_package_rule(base, processor, koto, tmp_path, monkeypatch):
    import io
    import sys

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file: no bar
    assert make_musicgen_trainer(base, processor, koto, output_dir=str(tmp_path)).args.disable_tqdm is True

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert make_musicgen_trainer(base, processor, koto, output_dir=str(tmp_path)).args.disable_tqdm is False
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert make_musicgen_trainer(base, processor, koto, output_dir=str(tmp_path)).args.disable_tqdm is True


def test_token_cross_entropy_plain_and_peft(base, processor, koto):
    base.train()
    result = token_cross_entropy(base, processor, koto, batch_size=3)
    assert base.training  # mode restored
    base.eval()
    ce = result["cross_entropy"]
    assert math.isfinite(ce) and 0 < ce < 10
    assert result["perplexity"] == pytest.approx(math.exp(ce))
    assert result["tokens"] == 4 * 4 * 50  # clips x codebooks x frames: filler and padding excluded
    assert sum(result["per_codebook"]) / 4 == pytest.approx(ce)  # equal counts per codebook
    # equal-length clips in one batch: the mean token CE is the model's own loss
    batch = MusicgenCollator(processor, base)([koto[i] for i in range(4)])
    with torch.no_grad():
        assert base(**batch).loss.item() == pytest.approx(ce, rel=1e-4)
    # a fresh LoRA adapter is an identity; precomputed codes give the same numbers
    lora = token_cross_entropy(_lora(base), processor, koto, batch_size=2)
    assert lora["cross_entropy"] == pytest.approx(ce, rel=1e-5)
    coded = token_cross_entropy(base, processor, precompute_codes(koto, base), batch_size=4)
    assert coded["cross_entropy"] == pytest.approx(ce, rel=1e-5)


def _lora_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def _resume_trainer(base, processor, koto, out, **kw):
    torch.manual_seed(0)
    model = _lora(base)
    args = _quiet(out, max_steps=4, learning_rate=1e-2, per_device_train_batch_size=2, save_strategy="steps",
                  save_steps=2, lr_scheduler_type="linear", warmup_steps=1, **kw)
    return model, make_musicgen_trainer(model, processor, koto, early_stopping_patience=None, **args)


def test_resume_restores_optimizer_and_schedule_bit_identically(base, processor, koto, tmp_path):
    model, trainer = _resume_trainer(base, processor, koto, tmp_path / "straight", save_only_model=False)
    trainer.train()
    straight = _lora_weights(model)
    assert any(not torch.equal(w, _lora_weights(_lora(base))[n]) for n, w in straight.items() if "lora_B" in n)

    resumed_model, resumed = _resume_trainer(base, processor, koto, tmp_path / "resumed", save_only_model=False)
    resumed.train(resume_from_checkpoint=str(tmp_path / "straight" / "checkpoint-2"))
    assert resumed.state.global_step == 4
    after = _lora_weights(resumed_model)
    assert all(torch.equal(after[n], straight[n]) for n in straight)  # bit-identical on CPU

    # control: the step-2 weights trained on with a fresh optimizer and schedule end elsewhere
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    restarted_model, _ = _resume_trainer(base, processor, koto, tmp_path / "restarted")
    set_peft_model_state_dict(restarted_model, load_file(tmp_path / "straight" / "checkpoint-2" /
                                                         "adapter_model.safetensors"))
    restarted = make_musicgen_trainer(restarted_model, processor, koto, early_stopping_patience=None,
                                      **_quiet(tmp_path / "restarted", max_steps=2, learning_rate=1e-2,
                                               per_device_train_batch_size=2, warmup_steps=1))
    restarted.train()
    assert any(not torch.equal(w, straight[n]) for n, w in _lora_weights(restarted_model).items())


def test_resume_from_a_model_only_checkpoint_is_refused(base, processor, koto, tmp_path):
    from musicpeft.errors import ResumeError

    _, trainer = _resume_trainer(base, processor, koto, tmp_path / "run")  # save_only_model=True by default
    trainer.train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert (checkpoint / "adapter_model.safetensors").is_file() and not (checkpoint / "optimizer.pt").exists()
    model, again = _resume_trainer(base, processor, koto, tmp_path / "again")
    before = _lora_weights(model)
    with pytest.raises(ResumeError, match=r"checkpoint-2 lacks optimizer.pt .*scheduler.pt .*restart the optimizer"):
        again.train(resume_from_checkpoint=str(checkpoint))
    assert all(torch.equal(p, before[n]) for n, p in _lora_weights(model).items())
    with pytest.raises(ResumeError, match="holds no checkpoint-<step> folder"):
        again.train(resume_from_checkpoint=True)


def test_the_trainer_may_use_another_precision_than_an_earlier_run(base, processor, koto, tmp_path):
    from musicpeft.training.accelerate_loop import make_accelerator

    # transformers resets accelerate's state when it builds TrainingArguments; make_accelerator does it for ours
    assert make_accelerator("no").mixed_precision == "no"  # e.g. a concept recipe ran first in this process
    trainer = make_musicgen_trainer(_lora(base), processor, koto, **_quiet(tmp_path, max_steps=1, bf16=True))
    assert trainer.accelerator.mixed_precision == "bf16"
    assert make_accelerator("no").mixed_precision == "no"  # and a full-precision run may follow it
