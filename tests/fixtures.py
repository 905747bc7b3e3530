"""The one fixtures module of the test suite: tiny models, tokenizers and audio built in memory."""

import torch

from musicpeft.tiny import *  # noqa: F401,F403
from musicpeft.tiny import tiny_musicgen_processor


def musicgen_inputs(texts=("haegeum sanjo", "a slow waltz")):
    """Processor outputs for a few prompts, as a user would pass them to the model."""
    return tiny_musicgen_processor()(text=list(texts), return_tensors="pt", padding=True)


def musicgen_logits(model, inputs):
    """Logits of a (possibly adapted) tiny MusicGen for fixed decoder inputs: what round-trip tests compare."""
    decoder_input_ids = torch.arange(24).reshape(8, 3) % 64
    with torch.no_grad():
        return model(**inputs, decoder_input_ids=decoder_input_ids).logits


def train_steps(model, batch, labels, steps: int, lr: float):
    """AdamW on whatever requires grad, `steps` times on one fixed batch; returns (losses, optimizer)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses, optimizer


def perturb_adapter(model, seed: int = 0, scale: float = 0.05) -> None:
    """Move every trainable tensor away from its initial value before a save.

    Round-trip tests must do this: an untrained adapter is rebuilt identically from its seed, so a loader
    that ignored the weights file would otherwise pass them.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in (p for p in model.parameters() if p.requires_grad):
            param.add_(torch.randn(param.shape, generator=generator).to(param.dtype) * scale)
