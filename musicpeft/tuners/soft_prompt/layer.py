"""The soft-prompt layer: wraps a text encoder and adds learned vectors to its input or output."""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn


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
        from transformers import AutoTokenizer

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


def _execution_device_and_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the module computes (the accelerate hook's execution device when offloaded) and its dtype."""
    weight = module.weight
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None) if weight.device.type == "meta" else weight.device
    return torch.device(device if device is not None else "cpu"), weight.dtype


class SoftPromptLayer(nn.Module, BaseTunerLayer):
    """Wraps a text encoder (`forward(input_ids, attention_mask, inputs_embeds, **kwargs)`).

    Active prompts at `encoder_input` are prepended to the token embeddings; prompts at `encoder_output`
    are appended to `last_hidden_state`. The attention mask grows by the same number of positions; a row
    that is fully masked (the null condition of classifier-free guidance) stays fully masked, so the
    unconditional branch is exactly the base model's.
    """

    adapter_layer_names = ("soft_prompt_embeddings",)
    other_param_names = ("soft_prompt_position",)

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: Any, insert_at: int = 0) -> None:
        super().__init__()
        self.base_layer = base_layer
        # Index in the token sequence where input-position prompts go: 0 prepends; 1 keeps a pooled
        # first token (CLAP's `<s>`) first.
        self.insert_at = insert_at
        self.soft_prompt_embeddings = nn.ParameterDict()
        self.soft_prompt_position: dict[str, str] = {}
        self.merged_adapters = []
        self._disable_adapters = False
        self.update_layer(adapter_name, config)
        self._active_adapter = adapter_name

    # -- attribute passthrough, so code that reads `text_encoder.config` etc. keeps working --
    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_layer":
                raise
            return getattr(self.base_layer, name)

    @property
    def token_dim(self) -> int:
        return self.base_layer.get_input_embeddings().weight.shape[1]

    def update_layer(self, adapter_name: str, config: Any) -> None:
        from accelerate.utils import align_module_device

        embeddings = self.base_layer.get_input_embeddings()
        # With accelerate's CPU/disk offload the weights sit on the meta device until a hook loads them.
        with align_module_device(embeddings, execution_device=torch.device("cpu")):
            value = initial_prompt(config, embeddings.weight)
        device, dtype = _execution_device_and_dtype(embeddings)
        value = value.to(device=device, dtype=dtype)
        self.soft_prompt_embeddings[adapter_name] = nn.Parameter(value)
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
        """(prepended, appended) numbers of prompt positions currently in use."""
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

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        n_in, n_out = self.num_active_tokens()
        if n_in == 0 and n_out == 0:
            return self.base_layer(
                input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
            )
        text_len = (inputs_embeds if inputs_embeds is not None else input_ids).shape[1]
        if attention_mask is not None and attention_mask.shape[1] == text_len:
            attention_mask = self.extend_attention_mask(attention_mask)
        elif attention_mask is not None and attention_mask.shape[1] != text_len + n_in + n_out:
            raise ValueError(
                f"attention_mask has {attention_mask.shape[1]} positions; expected {text_len} (text) or "
                f"{text_len + n_in + n_out} (text + soft prompt)."
            )
        encoder_mask = attention_mask[:, : attention_mask.shape[1] - n_out] if attention_mask is not None else None

        if n_in:
            if inputs_embeds is None:
                inputs_embeds = self.base_layer.get_input_embeddings()(input_ids)
            prompt = torch.cat(self._active_prompts("encoder_input"), dim=0)
            prompt = prompt.to(device=inputs_embeds.device, dtype=inputs_embeds.dtype)
            prompt = prompt.expand(inputs_embeds.shape[0], -1, -1)
            k = self.insert_at
            inputs_embeds = torch.cat([inputs_embeds[:, :k], prompt, inputs_embeds[:, k:]], dim=1)
            input_ids = None
        outputs = self.base_layer(
            input_ids=input_ids, attention_mask=encoder_mask, inputs_embeds=inputs_embeds, **kwargs
        )
        if n_out:
            hidden = outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
            prompt = torch.cat(self._active_prompts("encoder_output"), dim=0).to(hidden.device, hidden.dtype)
            hidden = torch.cat([hidden, prompt.expand(hidden.shape[0], -1, -1)], dim=1)
            if hasattr(outputs, "last_hidden_state"):
                outputs.last_hidden_state = hidden
            else:
                outputs = (hidden, *outputs[1:])
        return outputs

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise NotImplementedError("A soft prompt adds positions to the text; it cannot be merged into weights.")

    def unmerge(self) -> None:
        return None
