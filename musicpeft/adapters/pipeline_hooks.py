"""What a pipeline carrying adapters does differently: prompted `encode_prompt`, refused `save_pretrained`,
frozen non-adapter weights.

Soft prompts need one more thing on AudioLDM2: the T5 mask that `encode_prompt` takes from `tokenizer_2`
feeds the projection model, GPT2 and the U-Net, so it must grow with the prompt; and the negative /
unconditional pass must stay the base model's (see `families/audioldm2.py`, `T5_MASK_FLOW`).
`_PromptedEncodePrompt` does both.

It also runs GPT2 with its key/value cache itself (`_cached_language_model`) instead of relying on diffusers'
`generate_language_model` loop, whose use of the cache depends on the transformers version: with diffusers
0.42.1 it is used under transformers 5.23 (the pinned one) but not under 5.24, where the loop reruns GPT2
over the whole growing sequence for each of its 8 new states; with a soft prompt that sequence is 30
positions longer in the conditional and (padded to the same length) the negative pass.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Iterator
from typing import Any

import torch
from peft import PeftModel

from ..families import ModelFamily
from .base import WHOLE, pipeline_peft_models


def freeze_unadapted(pipe: Any) -> None:
    """Only adapters train: freeze every parameter of the pipeline that no peft model holds.

    peft freezes the base of the component it wraps; the pipeline's other components (VAE, U-Net, GPT2,
    ...) would otherwise keep `requires_grad=True` and train, or take optimizer memory, by accident.
    """
    peft_models = pipeline_peft_models(pipe).values()
    adapted = {id(p) for peft_model in peft_models for p in peft_model.parameters()}
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            for param in module.parameters():
                if id(param) not in adapted:
                    param.requires_grad_(False)



def _prompt_layers(peft_model: PeftModel) -> list[Any]:
    """The soft-prompt layers of a component's adapter (none for other methods)."""
    prompt_layers = getattr(peft_model.base_model, "prompt_layers", None)
    return prompt_layers() if prompt_layers is not None else []


def _active_prompt_layers(pipe: Any) -> list[Any]:
    return [layer for peft_model in pipeline_peft_models(pipe).values() for layer in _prompt_layers(peft_model)]


@contextlib.contextmanager
def _prompts_disabled(layers: list[Any]) -> Iterator[None]:
    # enable_adapters() also flips requires_grad, so remember both and restore exactly.
    states = [(layer._disable_adapters, [(p, p.requires_grad) for p in layer.parameters()]) for layer in layers]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer, (disabled, grads) in zip(layers, states, strict=True):
            layer._disable_adapters = disabled
            for param, requires_grad in grads:
                param.requires_grad_(requires_grad)


@contextlib.contextmanager
def _tokenizer_extends_mask(pipe: Any, attribute: str, layer: Any) -> Iterator[None]:
    """Temporarily make `pipe.<attribute>` return attention masks grown by the layer's prompt."""
    tokenizer = getattr(pipe, attribute)

    class MaskExtendingTokenizer(type(tokenizer)):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            encoding = super().__call__(*args, **kwargs)
            mask = encoding.get("attention_mask")
            if isinstance(mask, torch.Tensor) and mask.dim() == 2:
                encoding["attention_mask"] = layer.extend_attention_mask(mask)
            return encoding

    proxy = copy.copy(tokenizer)
    proxy.__class__ = MaskExtendingTokenizer
    object.__setattr__(pipe, attribute, proxy)  # bypass DiffusionPipeline.__setattr__: no config change
    try:
        yield
    finally:
        object.__setattr__(pipe, attribute, tokenizer)


class _RefusedSavePretrained:
    """`pipe.save_pretrained` of a pipeline carrying musicpeft adapters: refused, with what to do instead.

    diffusers would write the adapter's tensors into the component files (the soft prompt into T5's
    weights, LoRA's `base_layer` names into the U-Net's), and `from_pretrained` would then drop or
    misread them without a word, giving back a different model than the one saved.
    """

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    @classmethod
    def install(cls, pipe: Any) -> None:
        if not isinstance(pipe.__dict__.get("save_pretrained"), cls):
            object.__setattr__(pipe, "save_pretrained", cls(pipe))

    def __call__(self, save_directory: Any = None, *args: Any, **kwargs: Any) -> None:
        targets = pipeline_peft_models(self.pipe)
        adapted = [name if name != WHOLE else "one adapter over several components" for name in sorted(targets)]
        raise RuntimeError(
            f"This {type(self.pipe).__name__} carries musicpeft adapters ({', '.join(adapted)}); save_pretrained "
            "would write them into the component weights and from_pretrained would silently drop them. Save the "
            "adapter with musicpeft.save_adapter(pipe, folder), keep the base pipeline as it was saved, and "
            "reload with musicpeft.load_adapter(base_pipe, folder)."
        )


def protect_save_pretrained(pipe: Any) -> None:
    """Make `pipe.save_pretrained` refuse while the pipeline carries adapters (see `_RefusedSavePretrained`)."""
    _RefusedSavePretrained.install(pipe)


def _generate_with_cache(language_model: Any, inputs_embeds: torch.Tensor, max_new_tokens: int | None = None,
                         attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """What `AudioLDM2Pipeline.generate_language_model` computes, with GPT2's key/value cache.

    The sequence is read once, then each new hidden state is one position: positions, mask growth (ones for
    new states) and the returned last `max_new_tokens` states are the pipeline's; values agree with the
    uncached loop up to float rounding (the same products, in other shapes).
    """
    n = max_new_tokens if max_new_tokens is not None else language_model.config.max_new_tokens
    # transformers 5 names the cache `cache` (`past_key_values` is its deprecated alias); older ones the latter.
    key = "cache" if "cache" in inspect.signature(language_model.forward).parameters else "past_key_values"
    step, past, new = inputs_embeds, None, []
    for _ in range(n):
        output = language_model(inputs_embeds=step, attention_mask=attention_mask, use_cache=True,
                                output_hidden_states=True, return_dict=True, **{key: past})
        past = output[key]
        step = output.hidden_states[-1][:, -1:, :]
        new.append(step)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=1)
    return torch.cat(new, dim=1)


@contextlib.contextmanager
def _cached_language_model(pipe: Any) -> Iterator[None]:
    """While active, `pipe.generate_language_model` uses GPT2's key/value cache (see the module docstring)."""
    original = pipe.__dict__.get("generate_language_model")

    def generate(inputs_embeds: torch.Tensor, max_new_tokens: int | None = None, **kwargs: Any) -> torch.Tensor:
        if set(kwargs) - {"attention_mask"}:  # a caller we do not know: the pipeline's own loop
            return type(pipe).generate_language_model(pipe, inputs_embeds, max_new_tokens=max_new_tokens, **kwargs)
        return _generate_with_cache(pipe.language_model, inputs_embeds, max_new_tokens, kwargs.get("attention_mask"))

    object.__setattr__(pipe, "generate_language_model", generate)  # bypass DiffusionPipeline.__setattr__
    try:
        yield
    finally:
        if original is None:
            pipe.__dict__.pop("generate_language_model", None)
        else:
            object.__setattr__(pipe, "generate_language_model", original)


class _PromptedEncodePrompt:
    """Wraps `pipe.encode_prompt`: conditional pass with the prompt and a grown mask, negative pass without."""

    def __init__(self, pipe: Any, family: ModelFamily) -> None:
        self.pipe = pipe
        self.family = family
        self.original = pipe.encode_prompt
        self.signature = inspect.signature(self.original)

    @classmethod
    def install(cls, pipe: Any, family: ModelFamily) -> None:
        if not isinstance(pipe.__dict__.get("encode_prompt"), cls):
            object.__setattr__(pipe, "encode_prompt", cls(pipe, family))

    def _mask_owner(self) -> tuple[str, Any] | None:
        """(tokenizer attribute, prompt layer) of the slot whose token mask flows downstream (T5)."""
        slot = self.family.text_encoder(self.family.masked_text_encoder)
        component = pipeline_peft_models(self.pipe).get(slot.component)
        layers = _prompt_layers(component) if component is not None else []
        return (slot.tokenizer, layers[0]) if layers else None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        params = self.signature.bind(*args, **kwargs).arguments
        layers = _active_prompt_layers(self.pipe)
        active = [layer for layer in layers if sum(layer.num_active_tokens())]
        if not active or params.get("prompt_embeds") is not None:
            return self.original(*args, **kwargs)
        owner = self._mask_owner()
        grow = _tokenizer_extends_mask(self.pipe, *owner) if owner else contextlib.nullcontext()
        cached = _cached_language_model(self.pipe) if hasattr(self.pipe, "language_model") else contextlib.nullcontext()
        with grow, cached:
            embeds, mask, generated = self.original(
                **{**params, "num_waveforms_per_prompt": 1, "do_classifier_free_guidance": False}
            )
        # Second call: duplicates per waveform and, for guidance, encodes the negative prompt with the base
        # encoders (padded to the prompted length), as the base pipeline would.
        cached = _cached_language_model(self.pipe) if hasattr(self.pipe, "language_model") else contextlib.nullcontext()
        with _prompts_disabled(layers), cached:
            return self.original(
                **{**params, "prompt_embeds": embeds, "attention_mask": mask, "generated_prompt_embeds": generated}
            )


def install_prompted_encode_prompt(pipe: Any, family: ModelFamily) -> None:
    """Wrap `pipe.encode_prompt` (once) so that soft prompts on its text encoders take part in every call."""
    _PromptedEncodePrompt.install(pipe, family)
