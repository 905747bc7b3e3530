"""The soft-prompt tuner: finds the family's text encoder, wraps it, and keeps the attention mask in step."""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTuner
from safetensors import safe_open
from torch import nn

from ...adapters.base import component_family
from ...adapters.files import AdapterFileError, check_tensor_values
from ...adapters.strict import check_checkpoint, require_complete
from ...families import (
    ModelFamily,
    TextEncoderSlot,
    UnsupportedModelError,
    family_of,
    get_family,
    get_submodule,
)
from .layer import CHILD_NAME, SoftPromptLayer


def check_weights_file(weights_path: str, header: dict, *, path: str, shape: tuple[int, int]) -> None:
    """Refuse a weights file that does not hold exactly this prompt, before anything is attached or allocated.

    Keys and shapes come from the safetensors header (no tensor read); then the one prompt tensor, whose
    size is now known to be the config's, is read and checked for NaN/Inf.
    """
    key = f"base_model.model.{path}.{CHILD_NAME}.soft_prompt_embeddings"
    found = {k if k.startswith("base_model.model.") else f"base_model.model.{k}": v for k, v in header.items()}
    try:
        check_checkpoint({key: torch.empty(shape, device="meta")}, found, weights_path)
    except ValueError as err:
        raise AdapterFileError(str(err)) from None
    name = key if key in header else key.removeprefix("base_model.model.")
    with safe_open(weights_path, framework="pt") as handle:
        check_tensor_values({name: handle.get_tensor(name)}, weights_path)


class SoftMusicPromptModel(BaseTuner):
    """Prompt tuning for text-to-music models, as an injection-style peft tuner.

    Stock peft prompt tuning cannot serve MusicGen (two text configs, and the mask that the decoder's
    cross-attention reads is not extended), so the prompt lives in a layer around the text encoder, and a
    forward pre-hook on the adapted model extends the attention mask that the rest of the model reads.
    """

    prefix: str = "soft_prompt_"
    tuner_layer_cls = SoftPromptLayer
    target_module_mapping: dict[str, list[str]] = {}  # targets come from the model family instead

    def _prepare_adapter_config(self, config: Any, model_config: dict) -> Any:
        """Resolve the wrapped encoder from the model family; check family and width before touching a module.

        Two cases: the model is a family's root (MusicGen: the prompt wraps `text_encoder`), or the model is
        one text encoder of a pipeline adapted as its own component (AudioLDM2's T5), whose family the pipeline
        host names while attaching (or `base_family` + `text_encoder` of a saved config); then the slot's
        `component_inner_module` is wrapped.
        """
        family, slot, path = self._resolve_target(config)
        # A pipeline component adapted alone (AudioLDM2's T5) whose token mask the pipeline passes on: the
        # pipeline must grow that mask, which only musicpeft's pipeline wrapper does (see SoftPromptLayer).
        component = path != slot.module and slot.path_in_component == path
        masked = family.masked_text_encoder == slot.name
        self._caller_mask_must_grow = f"{family.name} {slot.component}" if component and masked else None
        # The mask keyword of the adapted model: the family root's, or the text encoder's when adapted alone.
        self._mask_kwarg = slot.mask_kwarg if component else family.mask_kwarg
        self._generation_mask_methods = () if component else family.generation_mask_methods
        encoder = get_submodule(self.model, path)
        width = encoder.get_input_embeddings().weight.shape[1]
        if config.token_dim is not None and config.token_dim != width:
            raise ValueError(
                f"Soft prompt width {config.token_dim} does not match the {slot.name} text encoder of "
                f"{type(self.model).__name__}, whose width is {width}."
            )
        config.base_family = family.name
        config.text_encoder = slot.name
        config.token_dim = width
        config.target_modules = path
        self._insert_at = slot.prompt_insert_at
        bound = config.take_weights_header() if hasattr(config, "take_weights_header") else None
        if bound is not None:
            check_weights_file(*bound, path=path, shape=(config.num_virtual_tokens, width))
        return config

    def _resolve_target(self, config: Any) -> tuple[ModelFamily, TextEncoderSlot, str]:
        try:
            family = family_of(self.model)
        except UnsupportedModelError:
            # One text encoder of a pipeline, adapted as its own component: the pipeline host says which family
            # it belongs to while attaching; a saved config names it (plain peft loading the component).
            family = component_family(self.model)
            if family is None and (config.base_family is None or config.text_encoder is None):
                raise
            family = family or get_family(config.base_family)
            if config.base_family is not None and config.base_family != family.name:
                raise ValueError(f"This soft prompt was made for the {config.base_family!r} family, but this "
                                 f"{type(self.model).__name__} is a component of a {family.name!r} pipeline.") from None
            slot = family.text_encoder(config.text_encoder)
            if slot.path_in_component is None:
                raise
            return family, slot, slot.path_in_component
        if config.base_family is not None and config.base_family != family.name:
            raise ValueError(
                f"This soft prompt was made for the {config.base_family!r} family, but the base model is "
                f"{type(self.model).__name__} ({family.name!r})."
            )
        slot = family.text_encoder(config.text_encoder)
        return family, slot, slot.module

    @staticmethod
    def _check_target_module_exists(peft_config: Any, key: str) -> bool:
        return key == peft_config.target_modules

    def _create_and_replace(
        self, peft_config, adapter_name, target, target_name, parent, current_key, **kwargs
    ) -> None:
        existing = getattr(target, CHILD_NAME, None)
        if isinstance(existing, SoftPromptLayer):
            existing.update_layer(adapter_name, peft_config)
            return
        if not hasattr(target, "get_input_embeddings"):
            raise TypeError(
                f"Soft prompts attach to a text encoder with get_input_embeddings(); {current_key!r} is "
                f"{type(target).__name__}."
            )
        layer = SoftPromptLayer.attach(target, adapter_name, peft_config, insert_at=self._insert_at)
        layer.caller_mask_must_grow = getattr(self, "_caller_mask_must_grow", None)
        self._layers = [*getattr(self, "_layers", []), layer]
        if adapter_name not in self.active_adapters:
            layer.requires_grad_(False)

    def _post_injection_hook(self, model: nn.Module, config: Any, adapter_name: str) -> None:
        if getattr(self, "_mask_hook", None) is None:
            self._mask_hook = model.register_forward_pre_hook(self._extend_mask, with_kwargs=True)
            for name in getattr(self, "_generation_mask_methods", ()):
                self._wrap_generation_mask_method(model, name)

    def _wrap_generation_mask_method(self, model: nn.Module, name: str) -> None:
        """Grow `model_kwargs[mask]` before `model.<name>(inputs_tensor, model_kwargs, ...)` applies it to the
        prompted text states (the family's `generation_mask_methods`); undone by `_remove_mask_hook`."""
        original = getattr(model, name)

        def grown(inputs_tensor: Any, model_kwargs: dict, *args: Any, **kwargs: Any) -> Any:
            mask = model_kwargs.get(self._mask_kwarg)
            if mask is not None and inputs_tensor is not None and mask.shape[1] == inputs_tensor.shape[1]:
                for layer in self.prompt_layers():
                    mask = layer.extend_attention_mask(mask)
                model_kwargs = {**model_kwargs, self._mask_kwarg: mask}
            return original(inputs_tensor, model_kwargs, *args, **kwargs)

        object.__setattr__(model, name, grown)
        self._wrapped_methods = [*getattr(self, "_wrapped_methods", []), (model, name)]

    def prompt_layers(self) -> list[SoftPromptLayer]:
        """The prompt layers this tuner attached (kept as a list: the mask hook reads it on every forward)."""
        return list(getattr(self, "_layers", []))

    def _detach(self, layer: SoftPromptLayer) -> None:
        layer.detach()
        self._layers = [other for other in self._layers if other is not layer]

    def _extend_mask(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        """Grow the model-level attention mask to the text encoder's (prompted) output length."""
        mask_kwarg = self._mask_kwarg
        mask = kwargs.get(mask_kwarg)
        if mask is None:
            return None
        encoder_outputs = kwargs.get("encoder_outputs")
        states = None
        if encoder_outputs is not None:
            states = (
                encoder_outputs[0] if isinstance(encoder_outputs, (tuple, list)) else encoder_outputs.last_hidden_state
            )
            if mask.shape[1] == states.shape[1]:
                # Every decoding step lands here (the mask was grown once, before the first): return before
                # counting the active prompts, which costs more Python than the rest of the hook.
                return None
        layers = self.prompt_layers()
        extra = sum(sum(layer.num_active_tokens()) for layer in layers)
        if extra == 0:
            return None
        if states is not None:
            if mask.shape[1] + extra != states.shape[1]:
                return None  # encoder outputs computed without the prompt
        else:
            text = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
            if text is None or mask.shape[1] != text.shape[1]:
                return None  # already extended by the caller
        for layer in layers:
            mask = layer.extend_attention_mask(mask)
        kwargs[mask_kwarg] = mask
        return args, kwargs

    def _remove_mask_hook(self) -> None:
        hook = getattr(self, "_mask_hook", None)
        if hook is not None:
            hook.remove()
            self._mask_hook = None
        for model, name in getattr(self, "_wrapped_methods", []):
            model.__dict__.pop(name, None)
        self._wrapped_methods = []

    def merge_and_unload(self, *args, **kwargs) -> nn.Module:
        raise NotImplementedError(
            "A soft prompt adds positions to the text encoder's input; it has no weights to merge. "
            "Use unload() to get the base model back, or keep the PeftModel for inference."
        )

    def unload(self) -> nn.Module:
        """The base model as it was: prompt layers and hooks removed, every base weight untouched."""
        self._remove_mask_hook()
        for layer in self.prompt_layers():
            self._detach(layer)
        if hasattr(self.model, "peft_config"):
            del self.model.peft_config
        return self.model

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        for layer in self.prompt_layers():
            if not layer.soft_prompt_embeddings:
                self._detach(layer)
        if not self.prompt_layers():
            self._remove_mask_hook()

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        """peft only warns about missing adapter weights; a prompt left at its initial value is an error here."""
        remapped = super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)
        require_complete(model, adapter_name, remapped, state_dict)
        return remapped

    @torch.no_grad()
    def prompt_embeddings(self, adapter_name: str = "default") -> torch.Tensor:
        """The learned prompt vectors of an adapter, `[num_virtual_tokens, width]`."""
        for layer in self.prompt_layers():
            if adapter_name in layer.soft_prompt_embeddings:
                return layer.soft_prompt_embeddings[adapter_name].detach().clone()
        raise KeyError(f"No soft prompt named {adapter_name!r}.")
