"""The shared accelerate loop: accumulation, finite checks, the trainable-state files, the scope, progress bars."""

from __future__ import annotations

import io
import os
import sys

import pytest
import torch
from torch import nn

from musicpeft.errors import NonFiniteTrainingError
from musicpeft.training.accelerate_loop import (
    INFO_FILE,
    STATE_FILE,
    load_trainable_state,
    make_accelerator,
    named_trainable,
    optimizer_steps,
    save_trainable_state,
    train_steps,
    training_scope,
)
from musicpeft.training.progress import progress_bar, progress_disabled


def _setup(accumulation: int = 1, lr: float = 0.1):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    accelerator = make_accelerator("no", accumulation)
    optimizer = accelerator.prepare_optimizer(torch.optim.SGD(model.parameters(), lr=lr))
    return model, accelerator, optimizer, dict(model.named_parameters())


def _loss(model):
    return lambda batch: ((model(batch[0]) - batch[1]) ** 2).mean()


def test_two_accumulated_halves_step_like_the_whole_batch():
    torch.manual_seed(1)
    x, y = torch.randn(4, 3), torch.randn(4, 1)
    model_a, acc_a, opt_a, named_a = _setup(accumulation=2)
    steps = list(optimizer_steps(acc_a, opt_a, named_a, [(x[:2], y[:2]), (x[2:], y[2:])], _loss(model_a),
                                 max_steps=10))
    model_b, acc_b, opt_b, named_b = _setup(accumulation=1)
    whole = list(optimizer_steps(acc_b, opt_b, named_b, [(x, y)], _loss(model_b), max_steps=10))
    assert [s.step for s in steps] == [1] and [s.step for s in whole] == [1]
    assert steps[0].lr == pytest.approx(0.1)
    torch.testing.assert_close(model_a.weight, model_b.weight)
    assert not torch.equal(model_a.weight, _setup()[0].weight)  # it did move


def test_max_steps_and_start_step_bound_the_loop():
    model, accelerator, optimizer, named = _setup()
    batches = [(torch.randn(2, 3), torch.randn(2, 1))] * 5
    got = [s.step for s in optimizer_steps(accelerator, optimizer, named, batches, _loss(model), max_steps=4,
                                           start_step=2)]
    assert got == [3, 4]
    assert len(train_steps(accelerator, optimizer, named, iter(batches), _loss(model), steps=3)) == 3


def test_a_nan_loss_stops_before_any_update_with_the_label():
    model, accelerator, optimizer, named = _setup()
    before = model.weight.detach().clone()
    batches = [(torch.full((2, 3), float("nan")), torch.zeros(2, 1))]
    with pytest.raises(NonFiniteTrainingError, match=r"^warm-up: training stopped at step 1: the loss is nan"):
        list(optimizer_steps(accelerator, optimizer, named, batches, _loss(model), max_steps=3, label="warm-up"))
    assert torch.equal(model.weight, before)


def test_an_infinite_learning_rate_is_caught_after_the_update():
    model, accelerator, optimizer, named = _setup(lr=float("inf"))
    batches = [(torch.ones(2, 3), torch.zeros(2, 1))]
    with pytest.raises(NonFiniteTrainingError, match="after step 1: (weight|bias) is no longer finite"):
        list(optimizer_steps(accelerator, optimizer, named, batches, _loss(model), max_steps=3))


def test_trainable_state_round_trip_is_atomic_and_checked(tmp_path):
    model = nn.Linear(3, 2)
    named = named_trainable([model], list(model.parameters()))
    assert set(named) == {"weight", "bias"}
    with torch.no_grad():
        model.weight.add_(1.0)  # changed before saving
    saved = model.weight.detach().clone()
    save_trainable_state(named, str(tmp_path / "best"), {"step": 3})
    assert sorted(os.listdir(tmp_path / "best")) == sorted([STATE_FILE, INFO_FILE])  # no temporary files
    with torch.no_grad():
        model.weight.zero_()
    load_trainable_state(named, str(tmp_path / "best"))
    assert torch.equal(model.weight, saved)
    with pytest.raises(ValueError, match="does not match the trainable parameters: missing \\['extra'\\]"):
        load_trainable_state({**named, "extra": nn.Parameter(torch.zeros(1))}, str(tmp_path / "best"))


def test_training_scope_trains_only_the_given_parameters_and_restores_everything():
    owner, other = nn.Sequential(nn.Linear(2, 2), nn.Dropout()), nn.Linear(2, 2)
    owner.eval()
    other.train()
    chosen = [owner[0].weight]
    with pytest.raises(RuntimeError, match="boom"), training_scope({"owner": owner, "other": other}, chosen):
        assert owner.training and not other.training
        assert owner[0].weight.requires_grad and not owner[0].bias.requires_grad
        assert not any(p.requires_grad for p in other.parameters())
        raise RuntimeError("boom")
    assert not owner.training and other.training
    assert all(p.requires_grad for p in [*owner.parameters(), *other.parameters()])


def test_progress_bars_follow_tqdm_disable(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress_disabled() is True
    with progress_bar(total=3, desc="x") as bar:
        assert bar.disable
    monkeypatch.delenv("TQDM_DISABLE")
    assert progress_disabled() is None  # tqdm decides: off when stderr is not a terminal
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file, not a terminal
    with progress_bar(range(2), desc="y") as bar:
        assert list(bar) == [0, 1] and bar.disable
    assert sys.stderr.getvalue() == ""


def test_a_later_run_in_the_same_process_may_choose_another_precision():
    from accelerate import Accelerator

    assert make_accelerator("bf16").mixed_precision == "bf16"
    assert make_accelerator("no").mixed_precision == "no"
    with pytest.raises(ValueError, match="already been initialized"):  # plain accelerate refuses it (control)
        Accelerator(mixed_precision="bf16")
    assert make_accelerator("no").mixed_precision == "no"  # the process is left at the default
