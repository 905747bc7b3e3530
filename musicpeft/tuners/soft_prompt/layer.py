"""The soft-prompt layer: learned vectors that a text encoder reads before (or after) the text.

The layer does not wrap the encoder. It is attached to it as a child module (`<encoder>.soft_prompt`)
and acts through forward hooks, so every base weight keeps its name and place: accelerate's offload
maps, `device_map`s and peft's offload bookkeeping see the base model unchanged, and code that checks
the encoder's class (pipelines do) still finds the encoder it expects.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from transformers import AutoTokenizer

from ...families import get_family

CHILD_NAME = "soft_prompt"


def _sample_rows(embedding: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(0, embedding.shape[0], (n,), generator=generator)
    return embedding.detach().float().cpu()[index]


def initial_prompt(config: Any, embedding: torch.Tensor) -> torch.Tensor:
    """The starting value of a prompt of `config.num_virtual_tokens` rows for this embedding matrix."""
    n = config.num_virtual_tokens
    if config.init == "vocab":
        return _sample_rows(embedding, n, config.init_seed)
    if config.init == "text":
        tokenizer = AutoTokenizer.from_pretrained(config.tokenizer_name_or_path)
        ids = tokenizer(config.init_text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"init_text {config.init_text!r} tokenizes to no tokens.")
        if max(ids) >= embedding.shape[0]:
            raise ValueError(
                f"Tokenizer {config.tokenizer_name_or_path!r} produced id {max(ids)}, outside the text encoder's "
                f"vocabulary of {embedding.shape[0]}: it is not this model's tokenizer."
            )
        ids = (ids * (n // len(ids) + 1))[:n]
        return embedding.detach().float().cpu()[torch.tensor(ids)]
    # "random": noise at the scale of the real token embeddings.
    generator = torch.Generator().manual_seed(config.init_seed)
    std = embedding.detach().float().std().item()
    return torch.randn(n, embedding.shape[1], generator=generator) * std


def slot_mask_kwarg(config: Any) -> str:
    """The keyword the prompted text encoder takes its token mask by, from the family's text-encoder slot.

    The tuner fills `config.base_family` and `config.text_encoder` before it attaches a layer.
    """
    if getattr(config, "base_family", None) is None:
        raise ValueError("A soft-prompt layer needs config.base_family (the tuner sets it when it attaches one).")
    return get_family(config.base_family).text_encoder(getattr(config, "text_encoder", None)).mask_kwarg


def _execution_device_and_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the module computes (the accelerate hook's execution device when offloaded) and its dtype."""
    weight = module.weight
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None) if weight.device.type == "meta" else weight.device
    return torch.device(device if device is not None else "cpu"), weight.dtype


def _embedding_table(embeddings: nn.Module, device: torch.device) -> torch.Tensor | None:
    """The embedding matrix, read through accelerate's hook when offloaded; None when it is unreachable."""
    table = embeddings.weight
    if table.device.type == "meta" and hasattr(embeddings, "_hf_hook"):
        with torch.no_grad():
            table = embeddings(torch.arange(embeddings.num_embeddings, device=device))
    return None if table.device.type == "meta" else table


class SoftPromptLayer(nn.Module, BaseTunerLayer):
    """Holds the prompts of one text encoder (`forward(input_ids, attention_mask, inputs_embeds, ...)`).

    Active prompts at `encoder_input` are inserted into the token embeddings at `insert_at` (0 prepends);
    prompts at `encoder_output` are appended to `last_hidden_state`. The attention mask grows by the same
    number of positions; a row that is fully masked (the null condition of classifier-free guidance)
    stays fully masked, so the unconditional branch is exactly the base model's.
    """

    adapter_layer_names = ("soft_prompt_embeddings",)
    other_param_names = ("soft_prompt_position",)

    def __init__(self, encoder: nn.Module, adapter_name: str, config: Any, insert_at: int = 0,
                 mask_kwarg: str | None = None) -> None:
        super().__init__()
        # Index in the token sequence where input-position prompts go: 0 prepends; 1 keeps a pooled
        # first token (CLAP's `<s>`) first.
        self.insert_at = insert_at
        # The encoder's token-mask keyword (the family's `TextEncoderSlot.mask_kwarg`).
        self.mask_kwarg = mask_kwarg if mask_kwarg is not None else slot_mask_kwarg(config)
        self.soft_prompt_embeddings = nn.ParameterDict()
        self.soft_prompt_position: dict[str, str] = {}
        self.merged_adapters = []
        self._disable_adapters = False
        # Set for a pipeline component whose mask flows on (AudioLDM2's T5): a text-only mask is then refused.
        self.caller_mask_must_grow: str | None = None
        # Not a submodule: the encoder owns this layer, not the other way round.
        object.__setattr__(self, "_encoder", encoder)
        self._signature = inspect.signature(encoder.forward)
        self.update_layer(adapter_name, config)
        self._active_adapter = adapter_name
        self._hooks = [
            encoder.register_forward_pre_hook(self._before_encoder, with_kwargs=True),
            encoder.register_forward_hook(self._after_encoder, with_kwargs=True),
        ]

    @classmethod
    def attach(cls, encoder: nn.Module, adapter_name: str, config: Any, insert_at: int = 0,
               mask_kwarg: str | None = None) -> SoftPromptLayer:
        layer = cls(encoder, adapter_name, config, insert_at=insert_at, mask_kwarg=mask_kwarg)
        encoder.add_module(CHILD_NAME, layer)
        return layer

    def detach(self) -> None:
        """Remove the hooks and the layer from its encoder, leaving the encoder as it was."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if getattr(self._encoder, CHILD_NAME, None) is self:
            delattr(self._encoder, CHILD_NAME)

    def get_base_layer(self) -> nn.Module:
        """The encoder's input embeddings: the prompt sits beside them (peft reads device and dtype here).

        The layer wraps no module, so peft's default (follow `base_layer` attributes) would recurse forever.
        """
        return self._encoder.get_input_embeddings()

    def _move_adapter_to_device_of_base_layer(self, adapter_name: str, device: torch.device | None = None) -> None:
        """Move a prompt to the embeddings' device (not their dtype: prompts stay float32, as peft autocasts)."""
        table = self.get_base_layer().weight
        target = device if device is not None else (None if table.device.type == "meta" else table.device)
        param = self.soft_prompt_embeddings[adapter_name] if adapter_name in self.soft_prompt_embeddings else None
        if target is None or param is None or param.device.type == "meta":
            return
        param.data = param.data.to(target)

    @property
    def token_dim(self) -> int:
        return self._encoder.get_input_embeddings().weight.shape[1]

    def update_layer(self, adapter_name: str, config: Any) -> None:
        embeddings = self._encoder.get_input_embeddings()
        device, dtype = _execution_device_and_dtype(embeddings)
        table = _embedding_table(embeddings, device)
        if table is None:
            # peft's from_pretrained on an offloaded base removes the hooks while it injects the adapter and
            # loads the adapter's weights right after: the initial value is never used.
            value = torch.zeros(config.num_virtual_tokens, embeddings.weight.shape[1])
        else:
            value = initial_prompt(config, table)
        self.soft_prompt_embeddings[adapter_name] = nn.Parameter(value.to(device=device, dtype=dtype))
        self.soft_prompt_position[adapter_name] = config.position
        self.set_adapter(self.active_adapters)

    def _active_prompts(self, position: str) -> list[torch.Tensor]:
        if self.disable_adapters:
            return []
        return [
            self.soft_prompt_embeddings[name]
            for name in self.active_adapters
            if name in self.soft_prompt_embeddings and self.soft_prompt_position[name] == position
        ]

    def num_active_tokens(self) -> tuple[int, int]:
        """(inserted, appended) numbers of prompt positions currently in use."""
        return (
            sum(p.shape[0] for p in self._active_prompts("encoder_input")),
            sum(p.shape[0] for p in self._active_prompts("encoder_output")),
        )

    def extend_attention_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Grow a `[batch, text_len]` mask to cover the prompt positions (see the class docstring)."""
        n_in, n_out = self.num_active_tokens()
        if n_in == 0 and n_out == 0:
            return mask
        keep = (mask != 0).any(dim=1, keepdim=True).to(mask.dtype)
        k = self.insert_at
        return torch.cat([mask[:, :k], keep.expand(-1, n_in), mask[:, k:], keep.expand(-1, n_out)], dim=1)

    def _onloaded(self) -> contextlib.AbstractContextManager:
        """If accelerate offloaded this layer too (it sits inside the encoder), load its prompts for the call."""
        if hasattr(self, "_hf_hook") and any(p.device.type == "meta" for p in self.parameters()):
            from accelerate.utils import align_module_device  # lazy: only offloaded encoders need accelerate

            return align_module_device(self, execution_device=self._hf_hook.execution_device)
        return contextlib.nullcontext()

    def _before_encoder(self, encoder: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        with self._onloaded():
            return self._prepare_encoder_call(encoder, args, kwargs)

    def _prepare_encoder_call(self, encoder: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        n_in, n_out = self.num_active_tokens()
        if n_in == 0 and n_out == 0:
            return None
        call = self._signature.bind_partial(*args, **kwargs).arguments
        extra = call.pop("kwargs", {})
        call.update(extra)
        input_ids, inputs_embeds = call.get("input_ids"), call.get("inputs_embeds")
        attention_mask = call.get(self.mask_kwarg)
        text_len = (inputs_embeds if inputs_embeds is not None else input_ids).shape[1]
        if attention_mask is not None and attention_mask.shape[1] == text_len:
            if self.caller_mask_must_grow is not None:
                raise RuntimeError(
                    f"The {self.caller_mask_must_grow} text encoder carries a soft prompt of {n_in + n_out} "
                    f"tokens, but was called with a mask for the {text_len} text tokens alone; the pipeline passes "
                    "that mask on, so generation would fail or ignore the prompt. Load the adapter onto the whole "
                    "pipeline with musicpeft.load_adapter(pipe, folder) (not PeftModel.from_pretrained on the "
                    "component), or pass a mask that already covers the prompt positions."
                )
            attention_mask = self.extend_attention_mask(attention_mask)
        elif attention_mask is not None and attention_mask.shape[1] != text_len + n_in + n_out:
            raise ValueError(
                f"attention_mask has {attention_mask.shape[1]} positions; expected {text_len} (text) or "
                f"{text_len + n_in + n_out} (text + soft prompt)."
            )
        if attention_mask is not None:
            call[self.mask_kwarg] = attention_mask[:, : attention_mask.shape[1] - n_out]
        if n_in:
            if inputs_embeds is None:
                inputs_embeds = encoder.get_input_embeddings()(input_ids)
            prompt = torch.cat(self._active_prompts("encoder_input"), dim=0)
            prompt = prompt.to(device=inputs_embeds.device, dtype=inputs_embeds.dtype)
            prompt = prompt.expand(inputs_embeds.shape[0], -1, -1)
            k = self.insert_at
            call["inputs_embeds"] = torch.cat([inputs_embeds[:, :k], prompt, inputs_embeds[:, k:]], dim=1)
            call["input_ids"] = None
        return (), call

    def _after_encoder(self, encoder: nn.Module, args: tuple, kwargs: dict, outputs: Any) -> Any:
        if not self._active_prompts("encoder_output"):
            return None
        hidden = outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
        with self._onloaded():
            prompt = torch.cat(self._active_prompts("encoder_output"), dim=0).to(hidden.device, hidden.dtype)
        hidden = torch.cat([hidden, prompt.expand(hidden.shape[0], -1, -1)], dim=1)
        if hasattr(outputs, "last_hidden_state"):
            outputs.last_hidden_state = hidden
            return outputs
        return (hidden, *outputs[1:])

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("SoftPromptLayer acts through hooks on its text encoder; call the encoder instead.")

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise NotImplementedError("A soft prompt adds positions to the text; it cannot be merged into weights.")

    def unmerge(self) -> None:
        return None
