"""Loading AudioLDM2 pipelines so that they generate under transformers 5.

The published AudioLDM2 checkpoints (cvssp/audioldm2, -large, -music, the TTS variants) name a bare
`GPT2Model` as their `language_model` in `model_index.json`. `AudioLDM2Pipeline.generate_language_model`
drives that model with two `GenerationMixin` helpers (`_get_initial_cache_position`, which it skips when
absent, and `_update_model_kwargs_for_generation`, which it always calls). In transformers 5 a bare
`GPT2Model` is no longer a `GenerationMixin`, so generation stops with
`AttributeError: 'GPT2Model' object has no attribute '_update_model_kwargs_for_generation'`.

The fix chosen here is the least invasive correct one: wrap the loaded `GPT2Model` in a
`GPT2LMHeadModel` that *shares* its modules (the very same parameter tensors, no copy), whose LM head is
tied to the token embeddings. That is the class diffusers' own `AudioLDM2Pipeline.__init__` now declares
for `language_model`; it is a `GenerationMixin`, so the pipeline's unmodified `generate_language_model`
runs, and its `hidden_states[-1]` (all the pipeline reads) is exactly the wrapped `GPT2Model`'s output.
No pipeline method is patched, and `save_pretrained` afterwards records `GPT2LMHeadModel`, so a re-saved
pipeline loads natively. The only cost is the unused vocabulary logits, a few milliseconds per
generated token next to the U-Net.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from diffusers import AudioLDM2Pipeline
from torch import nn
from transformers import GPT2LMHeadModel, GPT2Model


def _needs_generation_wrapper(language_model: Any) -> bool:
    return not hasattr(language_model, "_update_model_kwargs_for_generation")


def gpt2_with_lm_head(model: nn.Module) -> nn.Module:
    """A `GPT2LMHeadModel` around `model` (a `GPT2Model`), sharing every parameter with it.

    The LM head is tied to `model.wte.weight` whatever `config.tie_word_embeddings` says: the pipeline
    never reads the logits, so the head only has to exist, and tying it adds no parameters.
    """
    if not isinstance(model, GPT2Model):
        raise TypeError(f"Expected a transformers GPT2Model to wrap, got {type(model).__name__}.")
    # Build the wrapper on the meta device (no allocation, no random init), then put the real modules in.
    with torch.device("meta"):
        wrapper = GPT2LMHeadModel(model.config)
    wrapper.transformer = model
    wrapper.lm_head = nn.Linear(model.config.n_embd, model.config.vocab_size, bias=False, device="meta")
    wrapper.lm_head.weight = model.wte.weight
    leftovers = [name for name, t in [*wrapper.named_parameters(), *wrapper.named_buffers()] if t.is_meta]
    if leftovers:
        raise RuntimeError(f"GPT2LMHeadModel wrapper kept uninitialised tensors {leftovers}; transformers changed.")
    wrapper.train(model.training)
    return wrapper


def ensure_audioldm2_compat(pipe: Any) -> Any:
    """Make an `AudioLDM2Pipeline` whose `language_model` is a bare `GPT2Model` generate; returns `pipe`.

    The pipeline is changed in place: `pipe.language_model` becomes a `GPT2LMHeadModel` sharing the
    original weights (see the module docstring for why). Pipelines that already have a
    generation-capable language model are returned untouched, so calling this twice is harmless.
    Apply it before `enable_model_cpu_offload()`, which hooks the module object it finds.
    """
    if not isinstance(pipe, AudioLDM2Pipeline):
        raise TypeError(f"ensure_audioldm2_compat expects an AudioLDM2Pipeline, got {type(pipe).__name__}.")
    language_model = getattr(pipe, "language_model", None)
    if language_model is None or not _needs_generation_wrapper(language_model):
        return pipe
    pipe.register_modules(language_model=gpt2_with_lm_head(language_model))
    return pipe


def load_audioldm2_pipeline(path_or_id: str | os.PathLike, **kwargs: Any) -> Any:
    """`AudioLDM2Pipeline.from_pretrained(path_or_id, **kwargs)` made to generate under transformers 5.

    `path_or_id` is a local folder written by `save_pretrained` or a Hub id (downloaded by diffusers as
    usual); `kwargs` go to `from_pretrained` unchanged (`torch_dtype`, `revision`, `variant`, ...).
    """
    return ensure_audioldm2_compat(AudioLDM2Pipeline.from_pretrained(path_or_id, **kwargs))
