"""Named LoRA presets and full fine-tuning, on stock peft, for every registered model family.

The target sets are the families' own data (`ModelFamily.lora_presets`: preset name -> regex over module
names); this module only turns a name into a `peft.LoraConfig` and a family's `full_finetune_module` into
a set of trainable parameters. LoRA on these targets needs nothing beyond stock peft.

Where the regexes apply: for MusicGen, to the `MusicgenForConditionalGeneration` itself; for AudioLDM2,
to the pipeline's `unet` (the family's `adapted_component`). `adapted_module(obj)` returns that
module for a model or a pipeline, e.g. `get_peft_model(adapted_module(pipe), lora_config(pipe, "attn"))`.
"""

from __future__ import annotations

from typing import Any

from peft import LoraConfig
from torch import nn

from ..families import ModelFamily, component_family, family_of, get_family, get_submodule, unwrap_peft


def resolve_family(family_or_model: Any) -> ModelFamily:
    """A `ModelFamily`, a family name, a model/pipeline of a family, or a family's adapted component."""
    if isinstance(family_or_model, (ModelFamily, str)):
        return get_family(family_or_model)
    base = unwrap_peft(family_or_model)
    family = component_family(base)
    return family if family is not None else family_of(base)


def adapted_module(model_or_pipe: Any) -> nn.Module:
    """The module that a family's LoRA regexes are relative to: the model, or the pipeline's component."""
    base = unwrap_peft(model_or_pipe)
    if component_family(base) is not None:
        return base
    component = family_of(base).adapted_component
    return get_submodule(base, component) if component else base


def list_presets(family_or_model: Any) -> dict[str, str]:
    """Preset name -> what it adapts, for a family (or a model/pipeline of it)."""
    family = resolve_family(family_or_model)
    descriptions = family.lora_preset_descriptions
    return {name: descriptions.get(name, f"modules matching {regex}") for name, regex in family.lora_presets.items()}


def preset_regex(family_or_model: Any, preset: str) -> str:
    """The target-module regex of `preset`, with a clear error for an unknown name."""
    family = resolve_family(family_or_model)
    if preset not in family.lora_presets:
        known = ", ".join(sorted(family.lora_presets))
        raise ValueError(f"Unknown LoRA preset {preset!r} for {family.name}; known presets: {known}.")
    return family.lora_presets[preset]


def preset_modules(model_or_pipe: Any, preset: str) -> list[str]:
    """Names (relative to `adapted_module(model_or_pipe)`) of the modules `preset` targets in this model."""
    family = resolve_family(model_or_pipe)
    module = adapted_module(model_or_pipe)
    family.check_layout(module)
    names = family.module_names(module, preset_regex(family, preset))
    if not names:
        raise ValueError(
            f"LoRA preset {preset!r} matches no module of {type(module).__name__} "
            f"(regex {family.lora_presets[preset]!r}); is this a {family.name} model?"
        )
    return names


def lora_config(
    family_or_model: Any, preset: str, r: int = 16, alpha: int = 32, dropout: float = 0.0, **kwargs: Any
):
    """A `peft.LoraConfig` targeting `preset`'s modules (as one regex string, full-matched by peft).

    Given a model or pipeline rather than a family, the preset is first checked to match at least one of
    its modules (and, for AudioLDM2, that its U-Net has the layout the regexes assume). Other keyword
    arguments go to `LoraConfig` unchanged (`use_rslora`, `init_lora_weights`, `bias`, ...).
    """
    if "target_modules" in kwargs:
        raise ValueError("lora_config sets target_modules from the preset; pass a preset name instead.")
    regex = preset_regex(family_or_model, preset)
    if not isinstance(family_or_model, (ModelFamily, str)):
        preset_modules(family_or_model, preset)
    return LoraConfig(target_modules=regex, r=r, lora_alpha=alpha, lora_dropout=dropout, **kwargs)


def _all_modules(model_or_pipe: Any) -> list[nn.Module]:
    """Every nn.Module of a model, or of a pipeline (its components)."""
    if isinstance(model_or_pipe, nn.Module):
        return [model_or_pipe]
    components = getattr(model_or_pipe, "components", None)
    if not isinstance(components, dict):
        raise TypeError(f"Expected a model or a diffusers pipeline, got {type(model_or_pipe).__name__}.")
    return [c for c in components.values() if isinstance(c, nn.Module)]


def full_finetune_module(model_or_pipe: Any) -> nn.Module:
    """The module full fine-tuning trains: MusicGen's `decoder`, AudioLDM2's `unet`."""
    base = unwrap_peft(model_or_pipe)
    if component_family(base) is not None:
        return base
    family = family_of(base)
    if not family.full_finetune_module:
        raise ValueError(f"The {family.name} family does not name a module for full fine-tuning.")
    return get_submodule(base, family.full_finetune_module)


def full_finetune_parameters(model_or_pipe: Any) -> list[nn.Parameter]:
    """The parameters full fine-tuning trains (the decoder or the U-Net), in module order."""
    return list(full_finetune_module(model_or_pipe).parameters())


def prepare_full_finetune(model_or_pipe: Any) -> list[nn.Parameter]:
    """Freeze everything, then unfreeze the decoder (MusicGen) or U-Net (AudioLDM2); returns its parameters.

    Tied or shared tensors between the trained module and the rest (none in the stock models) would
    train as well, since a tensor has one `requires_grad` flag.
    """
    base = unwrap_peft(model_or_pipe)
    target = full_finetune_module(base)
    for module in _all_modules(base):
        module.requires_grad_(False)
    target.requires_grad_(True)
    return list(target.parameters())
