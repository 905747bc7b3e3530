"""What musicpeft needs to know about a base-model family, as data.

Each supported family (MusicGen, AudioLDM2, ...) describes itself in one file of this package with a
`ModelFamily` instance; the tuners read these descriptions instead of branching on model classes.
Adding a base model means writing one such file and listing it in `families/__init__.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class TextEncoderSlot:
    """A text encoder that can take a soft prompt or identifier tokens.

    `module` is the attribute path of the encoder inside the adapted object (the model for MusicGen, the
    pipeline for AudioLDM2). The encoder must accept `input_ids`, `attention_mask` and `inputs_embeds`
    and expose `get_input_embeddings()`.
    """

    name: str
    module: str
    tokenizer: str | None = None
    takes_soft_prompt_by_default: bool = True
    # Where soft-prompt vectors enter the token sequence: 0 prepends; 1 keeps a pooled first token first.
    prompt_insert_at: int = 0
    # When `module` is a pipeline component itself (T5EncoderModel): the submodule inside it that a
    # soft-prompt layer wraps, since peft cannot wrap a model's root module.
    component_inner_module: str | None = None

    @property
    def component(self) -> str:
        """The pipeline attribute holding this encoder (`text_encoder` for `text_encoder.text_model`)."""
        return self.module.split(".", 1)[0]

    @property
    def path_in_component(self) -> str | None:
        """Where the encoder sits inside its component (`text_model`), else `component_inner_module`."""
        return self.module.split(".", 1)[1] if "." in self.module else self.component_inner_module


@dataclass(frozen=True)
class ModelFamily:
    """Where one family keeps its text encoders and attention projections."""

    name: str
    # Class names of the objects the family adapts (model or pipeline classes).
    class_names: tuple[str, ...]
    # `config.model_type` values of the adapted model, when it is a transformers model.
    model_types: tuple[str, ...] = ()
    text_encoders: tuple[TextEncoderSlot, ...] = ()
    # Regexes (full match on module names, relative to the adapted module) of the attention projections.
    self_attention_value: str = ""
    cross_attention_key_value: str = ""
    # Named LoRA target sets: preset name -> regex of module names.
    lora_presets: dict[str, str] = field(default_factory=dict)
    # The module trained by full fine-tuning (decoder / U-Net), relative to the adapted object.
    full_finetune_module: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def matches(self, obj: Any) -> bool:
        names = {cls.__name__ for cls in type(obj).__mro__}
        if names & set(self.class_names):
            return True
        model_type = getattr(getattr(obj, "config", None), "model_type", None)
        return model_type is not None and model_type in self.model_types

    def text_encoder(self, name: str | None = None) -> TextEncoderSlot:
        if name is None:
            return self.text_encoders[0]
        for slot in self.text_encoders:
            if slot.name == name:
                return slot
        known = ", ".join(s.name for s in self.text_encoders)
        raise ValueError(f"{self.name} has no text encoder named {name!r}; it has: {known}.")

    def module_names(self, root: nn.Module, pattern: str) -> list[str]:
        """Names of `root`'s submodules whose full name matches `pattern`."""
        regex = re.compile(pattern)
        return [name for name, _ in root.named_modules() if name and regex.fullmatch(name)]


def get_submodule(obj: Any, path: str) -> Any:
    """`a.b.c` attribute lookup that also works on pipelines (which are not nn.Modules)."""
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj
