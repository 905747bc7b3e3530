"""The identifier-token layer: wraps a text encoder's input embedding and answers concept ids from a learned table.

The user's embedding matrix is never resized. Identifier tokens are added to the tokenizer as added
tokens; their ids (usually just past the base vocabulary) are intercepted here: every other id goes to
the base embedding, concept ids get their learned row. Merging is the one place where the matrix grows,
because a plain model has nowhere else to keep the tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn


class TokenTable:
    """What the wrappers of one text encoder's input embeddings share.

    Some encoders keep the same embedding weight in two modules (T5: `shared` and `encoder.embed_tokens`);
    each gets a wrapper, the wrappers share one learned Parameter per adapter, and this object holds the
    token-string -> id map they all read, so that rebinding to a tokenizer updates all of them at once.
    """

    def __init__(self, slot: str, base_vocab: int, config: Any = None) -> None:
        self.slot = slot
        self.base_vocab = base_vocab
        self.config = config  # the encoder's config, whose vocab_size follows a merge
        self.ids: dict[str, int] = {}
        self.placeholders: dict[str, list[str]] = {}  # `<koto>` -> its tokens, over all adapters
        self.layers: list[ConceptEmbeddingLayer] = []
        self.tokenizer: Any = None

    def assign(self, tokens: list[str]) -> None:
        """Give new token strings ids past the base vocabulary and past every id handed out so far."""
        for token in tokens:
            if token not in self.ids:
                self.ids[token] = max([self.base_vocab - 1, *self.ids.values()]) + 1

    def rebind(self, ids: dict[str, int]) -> None:
        """Adopt the ids a tokenizer gave the tokens (it decides them when they are added to it)."""
        self.ids.update(ids)
        for layer in self.layers:
            layer._id_cache.clear()


class ConceptEmbeddingLayer(nn.Module, BaseTunerLayer):
    """Wraps an `nn.Embedding`; ids of active concept tokens come from `concept_embeddings[adapter]`.

    `concept_embeddings[adapter]` is `[num_tokens, width]`, row i for `concept_tokens[adapter][i]`.
    An id that belongs to a concept of no active adapter raises instead of silently reading a wrong row.
    """

    adapter_layer_names = ("concept_embeddings",)
    other_param_names = ("concept_tokens",)

    def __init__(self, base_layer: nn.Module, adapter_name: str, tokens: list[str], value: nn.Parameter,
                 table: TokenTable, trainable: bool = True) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Embedding):
            raise TypeError(f"Identifier tokens wrap an nn.Embedding, got {type(base_layer).__name__}.")
        self.base_layer = base_layer
        self.concept_embeddings = nn.ParameterDict()
        self.concept_tokens: dict[str, list[str]] = {}
        self.table = table
        self._id_cache: dict[tuple[str, ...], torch.Tensor] = {}
        self._merge_stack: list[tuple[list[str], nn.Parameter, int]] = []
        self.merged_adapters = []
        self._disable_adapters = False
        table.layers.append(self)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, tokens, value, trainable)

    def update_layer(self, adapter_name: str, tokens: list[str], value: nn.Parameter, trainable: bool = True) -> None:
        """Add an adapter's table (the same Parameter object is given to every wrapper of one encoder)."""
        if value.shape != (len(tokens), self.base_layer.embedding_dim):
            raise ValueError(
                f"Identifier table of shape {tuple(value.shape)} does not fit {len(tokens)} tokens of width "
                f"{self.base_layer.embedding_dim}."
            )
        self.table.assign(tokens)
        self.concept_tokens[adapter_name] = list(tokens)
        self.concept_embeddings[adapter_name] = value
        if not trainable:
            # Stage 1 of DreamStyler trains the mask with the identifier tokens fixed.
            self.frozen_peft_weight_names = {**self.frozen_peft_weight_names, adapter_name: ("concept_embeddings",)}
        self._id_cache.clear()
        self.set_adapter(self.active_adapters)

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        self._id_cache.clear()

    # -- lookup --
    def _adapter_ids(self, names: tuple[str, ...], device: torch.device) -> torch.Tensor:
        key = (*names, str(device))
        if key not in self._id_cache:
            ids = [self.table.ids[t] for name in names for t in self.concept_tokens[name]]
            self._id_cache[key] = torch.tensor(ids, dtype=torch.long, device=device)
        return self._id_cache[key]

    def _active_names(self) -> tuple[str, ...]:
        if self.disable_adapters:
            return ()
        return tuple(n for n in self.active_adapters if n in self.concept_embeddings and n not in self.merged_adapters)

    def _check_no_stray_ids(self, input_ids: torch.Tensor, covered: set[int]) -> None:
        if not self.table.ids or input_ids.numel() == 0:
            return
        stray = {token: i for token, i in self.table.ids.items() if i not in covered}
        if not stray:
            return
        found = torch.isin(input_ids, torch.tensor(list(stray.values()), device=input_ids.device))
        if found.any():
            present = sorted({t for t, i in stray.items() if (input_ids == i).any()})
            owners = sorted({n for n, toks in self.concept_tokens.items() for t in toks if t in present})
            state = "adapters are disabled" if self.disable_adapters else f"active: {self.active_adapters}"
            raise ValueError(
                f"The text contains identifier tokens {present} of adapter(s) {owners}, which are not in use "
                f"({state}). Activate the adapter with set_adapter, or remove the placeholder from the prompt."
            )

    def forward(self, input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters and self.merged:
            self.unmerge()
        names = self._active_names()
        covered_ids = {self.table.ids[t] for n in (*names, *self.merged_adapters) for t in self.concept_tokens[n]}
        self._check_no_stray_ids(input_ids, covered_ids)
        if not names:
            return self.base_layer(input_ids, *args, **kwargs)
        ids = self._adapter_ids(names, input_ids.device)
        match = input_ids.unsqueeze(-1) == ids
        is_concept = match.any(-1)
        if not bool(is_concept.any()):
            return self.base_layer(input_ids, *args, **kwargs)
        # Concept ids may lie past the base matrix: look up a harmless id there and overwrite the row.
        safe_ids = input_ids.masked_fill(is_concept, 0)
        out = self.base_layer(safe_ids, *args, **kwargs)
        rows = torch.cat([self.concept_embeddings[n] for n in names], dim=0)
        rows = rows[match.int().argmax(-1)].to(out.dtype)
        scale = self._get_embed_scale()
        if scale is not None:
            rows = rows * scale.to(rows.dtype)
        return torch.where(is_concept.unsqueeze(-1), rows, out)

    # -- merging: the only place where the embedding matrix grows --
    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Write the tokens' rows into a grown copy of the matrix, shared by every wrapper of the same weight."""
        names = [n for n in (adapter_names or self.active_adapters) if n in self.concept_embeddings]
        names = [n for n in names if n not in self.merged_adapters]
        if not names:
            return
        old = self.base_layer.weight
        ids = torch.cat([self._adapter_ids((n,), old.device) for n in names])
        rows = torch.cat([self.concept_embeddings[n].detach() for n in names]).to(old.dtype)
        if safe_merge and not torch.isfinite(rows).all():
            raise ValueError(f"Non-finite identifier embeddings in adapter(s) {names}; not merging.")
        size = max(old.shape[0], int(ids.max()) + 1)
        new = torch.zeros(size, old.shape[1], dtype=old.dtype, device=old.device)
        new[: old.shape[0]] = old.detach()
        new[ids] = rows
        new = nn.Parameter(new, requires_grad=old.requires_grad)
        for layer in self.table.layers:
            if layer.base_layer.weight is old:
                layer._merge_stack.append((names, old, old.shape[0]))
                layer._set_weight(new)
                layer.merged_adapters.extend(names)

    def unmerge(self) -> None:
        if not self._merge_stack:
            return
        names, old, rows = self._merge_stack[-1]
        current = self.base_layer.weight
        for layer in self.table.layers:
            if layer.base_layer.weight is current and layer._merge_stack and layer._merge_stack[-1][1] is old:
                layer._merge_stack.pop()
                layer._set_weight(old)
                layer.merged_adapters = [n for n in layer.merged_adapters if n not in names]

    def _set_weight(self, weight: nn.Parameter) -> None:
        self.base_layer.weight = weight
        self.base_layer.num_embeddings = weight.shape[0]
        config = self.table.config
        if config is not None and getattr(config, "vocab_size", None) is not None:
            config.vocab_size = weight.shape[0]

    def __repr__(self) -> str:
        return "concept_identifier." + super().__repr__()
