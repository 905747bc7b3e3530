"""The non-finite checks both training loops call: they name the step and the tensor."""

from types import SimpleNamespace

import pytest
import torch

from musicpeft.errors import NonFiniteTrainingError
from musicpeft.training.finite import (
    check_finite_gradients,
    check_finite_loss,
    check_finite_weights,
    finite_check_callback,
)


def test_checks_name_the_step_and_the_tensor():
    layer = torch.nn.Linear(2, 2)
    check_finite_loss(torch.tensor(1.5), 1)
    with pytest.raises(NonFiniteTrainingError, match="step 3: the loss is nan"):
        check_finite_loss(torch.tensor(float("nan")), 3)
    layer.weight.grad = torch.ones(2, 2)
    layer.bias.grad = None
    check_finite_gradients(layer.named_parameters(), 1)
    layer.weight.grad[0, 1] = float("inf")
    with pytest.raises(NonFiniteTrainingError, match="step 2: the gradient of weight is not finite"):
        check_finite_gradients(layer.named_parameters(), 2)
    with torch.no_grad():
        layer.bias[0] = float("nan")
    with pytest.raises(NonFiniteTrainingError, match="after step 4: bias is no longer finite"):
        check_finite_weights(layer.named_parameters(), 4)
    layer.bias.requires_grad_(False)  # frozen weights are not ours to judge
    check_finite_weights(layer.named_parameters(), 4)


def test_callback_leaves_fp16_overflow_to_the_loss_scaler():
    layer = torch.nn.Linear(2, 2)
    layer.weight.grad = torch.full((2, 2), float("inf"))
    callback, state = finite_check_callback(), SimpleNamespace(global_step=6)
    callback.on_pre_optimizer_step(SimpleNamespace(fp16=True), state, None, model=layer)
    with pytest.raises(NonFiniteTrainingError, match="step 7: the gradient of weight"):
        callback.on_pre_optimizer_step(SimpleNamespace(fp16=False), state, None, model=layer)
