"""Adapters on a diffusers pipeline (AudioLDM2): one peft adapter per adapted component.

A pipeline is not one `nn.Module`, so each method adapts the component it belongs to, exactly as peft
would on that component alone: soft prompts adapt a text encoder (the family's `TextEncoderSlot`), the
other methods adapt the family's `adapted_component` (AudioLDM2: the U-Net). `PeftModel.from_pretrained`
on that component keeps working. On disk an adapter folder holds `musicpeft_adapter.json` naming the
family and components, and one peft-layout subfolder per component.

Soft prompts need one more thing on AudioLDM2: the T5 mask that `encode_prompt` takes from `tokenizer_2`
feeds the projection model, GPT2 and the U-Net, so it must grow with the prompt; and the negative /
unconditional pass must stay the base model's (see `families/audioldm2.py`, `T5_MASK_FLOW`).
`_PromptedEncodePrompt` does both.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import os
from collections.abc import Iterator
from typing import Any

import torch
from peft import PeftModel, get_peft_model

from ..adapter_files import AdapterFileError, allow_pickle_adapters, check_local_adapter_folder
from .base import ModelFamily

MANIFEST_NAME = "musicpeft_adapter.json"


def _components(pipe: Any) -> dict[str, PeftModel]:
    found = pipe.__dict__.get("_musicpeft_components")
    if found is None:
        found = {}
        object.__setattr__(pipe, "_musicpeft_components", found)
    return found


def component_for(config: Any, family: ModelFamily) -> str:
    """Which pipeline component a config adapts (soft prompts: a text encoder; others: the family's)."""
    from ..tuners.soft_prompt import SoftMusicPromptConfig

    if isinstance(config, SoftMusicPromptConfig):
        slot = family.text_encoder(config.text_encoder)
        config.base_family, config.text_encoder = family.name, slot.name
        return slot.component
    component = family.extra.get("adapted_component")
    if component is None:
        raise ValueError(f"The {family.name} family names no component for {type(config).__name__}.")
    return component


def _prepare(pipe: Any, family: ModelFamily) -> None:
    prepare = family.extra.get("prepare")
    if prepare is not None:
        prepare(pipe)


def add_adapter(pipe: Any, config: Any, adapter_name: str, family: ModelFamily) -> PeftModel:
    _prepare(pipe, family)
    component = component_for(config, family)
    peft_models = _components(pipe)
    peft_model = peft_models.get(component)
    if peft_model is not None:
        if adapter_name in peft_model.peft_config:
            raise ValueError(f"{component} already has an adapter named {adapter_name!r}; pick another adapter_name.")
        peft_model.add_adapter(adapter_name, config)
        peft_model.set_adapter(adapter_name)
    else:
        peft_model = get_peft_model(getattr(pipe, component), config, adapter_name=adapter_name)
        peft_models[component] = peft_model
    _PromptedEncodePrompt.install(pipe, family)
    protect_save_pretrained(pipe)
    freeze_unadapted(pipe)
    return peft_model


def freeze_unadapted(pipe: Any) -> None:
    """Only adapters train: freeze every parameter of the pipeline that no peft model holds.

    peft freezes the base of the component it wraps; the pipeline's other components (VAE, U-Net, GPT2,
    ...) would otherwise keep `requires_grad=True` and train, or take optimizer memory, by accident.
    """
    from ..concepts import pipeline_peft_model

    peft_models = [*_components(pipe).values(), pipeline_peft_model(pipe)]
    adapted = {id(p) for peft_model in peft_models if peft_model is not None for p in peft_model.parameters()}
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            for param in module.parameters():
                if id(param) not in adapted:
                    param.requires_grad_(False)


def save_adapter(pipe: Any, directory: str, adapter_name: str, family: ModelFamily) -> None:
    from ..api import manifest_payload, write_peft_adapter
    from ..atomic_folder import write_folder_atomically

    saved = {
        component: component
        for component, peft_model in _components(pipe).items()
        if adapter_name in peft_model.peft_config
    }
    if not saved:
        raise ValueError(f"This pipeline has no adapter named {adapter_name!r}; attach one with musicpeft.add_adapter.")

    def write(folder: str) -> None:
        for component in saved:
            write_peft_adapter(_components(pipe)[component], os.path.join(folder, component), adapter_name)
        with open(os.path.join(folder, MANIFEST_NAME), "w") as handle:
            handle.write(manifest_payload(family.name, saved))

    write_folder_atomically(directory, write)


def load_adapter(
    pipe: Any, folder: str, adapter_name: str, family: ModelFamily, *, is_trainable: bool, allow_pickle: bool
) -> Any:
    """Load every component's adapter; callers undo everything if any part is refused (`rollback`)."""
    from ..api import attach_from_folder, read_manifest

    manifest = read_manifest(folder, family)
    components = manifest["components"] if manifest else {_guess_component(folder, family): "."}
    for component, subfolder in components.items():
        if not isinstance(getattr(pipe, component, None), torch.nn.Module):
            raise AdapterFileError(f"{folder}: adapts component {component!r}, which this pipeline does not have.")
        check_local_adapter_folder(os.path.join(folder, subfolder), allow_pickle=allow_pickle)
    _prepare(pipe, family)
    peft_models = _components(pipe)
    with allow_pickle_adapters() if allow_pickle else contextlib.nullcontext():
        for component, subfolder in components.items():
            path = os.path.join(folder, subfolder)
            if component in peft_models:
                attach_from_folder(
                    getattr(pipe, component), path, adapter_name, is_trainable=is_trainable,
                    peft_model=peft_models[component],
                )
                peft_models[component].set_adapter(adapter_name, inference_mode=not is_trainable)
            else:
                peft_models[component] = attach_from_folder(
                    getattr(pipe, component), path, adapter_name, is_trainable=is_trainable
                )
    _PromptedEncodePrompt.install(pipe, family)
    protect_save_pretrained(pipe)
    if is_trainable:
        freeze_unadapted(pipe)
    return pipe


def _guess_component(folder: str, family: ModelFamily) -> str:
    """A plain peft folder (no manifest): soft prompts name their text encoder; the rest adapt the family's."""
    from ..adapter_files import read_adapter_config
    from ..tuners.soft_prompt import SoftMusicPromptConfig

    config = read_adapter_config(folder)
    if isinstance(config, SoftMusicPromptConfig):
        return family.text_encoder(config.text_encoder).component
    return family.extra["adapted_component"]


def _prompt_layers(peft_model: PeftModel) -> list[Any]:
    """The soft-prompt layers of a component's adapter (none for other methods)."""
    prompt_layers = getattr(peft_model.base_model, "prompt_layers", None)
    return prompt_layers() if prompt_layers is not None else []


def _active_prompt_layers(pipe: Any) -> list[Any]:
    return [layer for peft_model in _components(pipe).values() for layer in _prompt_layers(peft_model)]


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
        from ..concepts import pipeline_peft_model

        adapted = sorted(_components(self.pipe)) + (["concept adapter"] if pipeline_peft_model(self.pipe) else [])
        raise RuntimeError(
            f"This {type(self.pipe).__name__} carries musicpeft adapters ({', '.join(adapted)}); save_pretrained "
            "would write them into the component weights and from_pretrained would silently drop them. Save the "
            "adapter with musicpeft.save_adapter(pipe, folder), keep the base pipeline as it was saved, and "
            "reload with musicpeft.load_adapter(base_pipe, folder)."
        )


def protect_save_pretrained(pipe: Any) -> None:
    """Make `pipe.save_pretrained` refuse while the pipeline carries adapters (see `_RefusedSavePretrained`)."""
    _RefusedSavePretrained.install(pipe)


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
        slot = self.family.text_encoder(self.family.extra.get("masked_text_encoder", "t5"))
        component = _components(self.pipe).get(slot.component)
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
        with grow:
            embeds, mask, generated = self.original(
                **{**params, "num_waveforms_per_prompt": 1, "do_classifier_free_guidance": False}
            )
        # Second call: duplicates per waveform and, for guidance, encodes the negative prompt with the base
        # encoders (padded to the prompted length), as the base pipeline would.
        with _prompts_disabled(layers):
            return self.original(
                **{**params, "prompt_embeds": embeds, "attention_mask": mask, "generated_prompt_embeds": generated}
            )
