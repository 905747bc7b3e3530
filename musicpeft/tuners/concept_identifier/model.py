"""The identifier-token tuner: wraps each adapted text encoder's input embedding and keeps tokenizers in step."""

from __future__ import annotations

import warnings
import zlib
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils.constants import DUMMY_TARGET_MODULES
from torch import nn

from ...adapters.base import bound_tokenizers
from ...adapters.strict import require_complete
from ...families import TextEncoderSlot
from .config import placeholder
from .fingerprint import base_fingerprint
from .layer import ConceptEmbeddingLayer, TokenTable
from .layout import Layout, layout_of
from .placeholders import (
    add_identifier_tokens,
    capture_placeholders,
    check_identifier_tokens,
    install_placeholders,
    remove_placeholders,
)
from .weights import execution_device, readable_weight


def _initial_rows(config: Any, embedding: torch.Tensor, tokenizer: Any, slot: str) -> torch.Tensor:
    """`[concepts * tokens_per_concept, width]` starting values, concept by concept.

    A concept with an init word starts, on every one of its tokens, from the mean embedding of the word's
    pieces (textual inversion's initialiser). Without one it starts from noise at the embedding's scale,
    seeded by `init_seed` and the concept's name: a concept starts from the same vectors in its stage-1
    mask adapter and in the joint stage-2 adapter.
    """
    weight = embedding.detach().float().cpu()
    rows = []
    for name in config.concepts:
        words = (config.init_words or {}).get(name)
        if words is not None and tokenizer is not None:
            ids = tokenizer(words, add_special_tokens=False)["input_ids"]
            ids = [i for i in ids if i < weight.shape[0]]
            if not ids:
                raise ValueError(f"init_words[{name!r}] = {words!r} has no token in the {slot} vocabulary.")
            value = weight[torch.tensor(ids)].mean(0, keepdim=True).expand(config.tokens_per_concept, -1)
        elif words is not None and config.base_fingerprint is None:
            raise ValueError(
                f"init_words[{name!r}] needs the {slot} tokenizer: call musicpeft.bind_processor(model, "
                "processor) before attaching the adapter."
            )
        else:  # noise (also for a saved adapter loaded without tokenizer: the file overwrites it)
            generator = torch.Generator().manual_seed(config.init_seed * 1_000_003 + zlib.crc32(name.encode()))
            value = torch.randn(config.tokens_per_concept, weight.shape[1], generator=generator) * weight.std()
        rows.append(value)
    return torch.cat(rows).clone()


class ConceptIdentifierModel(BaseTuner):
    """Identifier tokens V* for several concepts, as an injection-style peft tuner (textual inversion).

    For each adapted text encoder the embedding module(s) holding its input-embedding weight are wrapped
    by `ConceptEmbeddingLayer`; all wrappers of one encoder share one `TokenTable` (token -> id) and one
    learned Parameter per adapter. The tokenizer of each encoder (a bound processor's for MusicGen, the
    pipeline's own for AudioLDM2) gets the tokens as added tokens and expands the placeholders.
    """

    prefix: str = "concept_"
    tuner_layer_cls = ConceptEmbeddingLayer
    target_module_mapping: dict[str, list[str]] = {}

    # -- state kept on the tuner (BaseTuner.__init__ injects before a subclass __init__ could run) --
    @property
    def _state(self) -> dict[str, Any]:
        return self.__dict__.setdefault("_concept_state", {"tables": {}, "plans": {}, "plain": {}})

    def _tables(self) -> dict[str, TokenTable]:
        return self._state["tables"]

    def _table(self, layout: Layout, slot: TextEncoderSlot) -> TokenTable:
        tables = self._tables()
        if slot.name not in tables:
            embedding = layout.encoder(slot).get_input_embeddings()
            base = embedding.get_base_layer() if isinstance(embedding, ConceptEmbeddingLayer) else embedding
            config = getattr(layout.encoder(slot), "config", None)
            tables[slot.name] = TokenTable(slot.name, base.num_embeddings, config)
        return tables[slot.name]

    # -- attaching --
    def _prepare_adapter_config(self, config: Any, model_config: dict) -> Any:
        """Check family, widths, tokenizers and the base, and plan the layers, before any module is touched."""
        layout = layout_of(self.model)
        family = layout.family
        if config.base_family is not None and config.base_family != family.name:
            raise ValueError(
                f"This adapter was made for the {config.base_family!r} family, but the base is {family.name!r}."
            )
        slots = layout.slots(config.text_encoders)
        tokenizers = bound_tokenizers(self.model)
        placeholders = config.placeholders()
        embeddings: dict[str, str] = {}
        values: dict[str, nn.Parameter] = {}
        dims: dict[str, int] = {}
        for slot in slots:
            names = layout.embedding_modules(slot)
            embedding = layout.encoder(slot).get_input_embeddings()
            weight = embedding.weight
            dims[slot.name] = weight.shape[1]
            expected = (config.token_dims or {}).get(slot.name)
            if expected is not None and expected != weight.shape[1]:
                raise ValueError(
                    f"Identifier tokens of width {expected} do not fit the {slot.name} text encoder of width "
                    f"{weight.shape[1]}."
                )
            tokenizer = tokenizers.get(slot.name)
            if tokenizer is not None:
                check_identifier_tokens(tokenizer, placeholders)
            readable = readable_weight(embedding)
            if readable is None:
                raise ValueError(
                    f"The {slot.name} text encoder's embedding is on the meta device with no offloaded copy to read; "
                    "load the base with its weights (or accelerate offloading) before attaching identifier tokens."
                )
            rows = _initial_rows(config, readable, tokenizer, slot.name)
            values[slot.name] = nn.Parameter(rows.to(device=execution_device(embedding), dtype=weight.dtype))
            embeddings.update({name: slot.name for name in names})
        fingerprint = base_fingerprint(layout, slots)
        if config.base_fingerprint is not None and config.base_fingerprint != fingerprint:
            warnings.warn(
                f"This adapter was trained on a base with fingerprint {config.base_fingerprint}, the current base has "
                f"{fingerprint}: outputs will differ from the training run, and merging will be refused.",
                stacklevel=2,
            )
        config.base_family = family.name
        config.token_dims = dims
        config.text_encoders = [s.name for s in slots]
        config.base_fingerprint = config.base_fingerprint or fingerprint
        self._state["plans"][id(config)] = {"embeddings": embeddings, "values": values}
        self._state["plain"].update(self._plain_definitions(layout, config, slots))
        config.target_modules = self._target_modules(layout, config)
        return config

    def _target_modules(self, layout: Layout, config: Any) -> str:
        """What peft's own target matching wraps: nothing here (embeddings are wrapped in `_prepare_model`)."""
        return DUMMY_TARGET_MODULES

    def _plain_definitions(self, layout: Layout, config: Any, slots: list[TextEncoderSlot]) -> dict[str, dict]:
        """Text encoders without learned tokens read a placeholder as the concept's init word, or its name."""
        adapted = {s.name for s in slots}
        words = {placeholder(n): (config.init_words or {}).get(n, n) for n in config.concepts}
        return {s.name: words for s in layout.family.text_encoders if s.name not in adapted}

    def _inject_embeddings(self, model: nn.Module, peft_config: Any, adapter_name: str) -> None:
        """Wrap the planned embeddings ourselves, not through peft's target matching.

        peft treats a targeted module named like `embed_tokens` as a resized vocabulary and would save the
        whole base embedding matrix into the adapter; the identifier tokens never resize it.
        """
        plan = self._state["plans"][id(peft_config)]
        layout = layout_of(model)
        tokens = [t for tokens in peft_config.placeholders().values() for t in tokens]
        trainable = self._tokens_trainable(peft_config)
        for name, slot_name in plan["embeddings"].items():
            parent_name, _, child_name = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            target = getattr(parent, child_name)
            value = plan["values"][slot_name]
            if isinstance(target, ConceptEmbeddingLayer):
                target.update_layer(adapter_name, tokens, value, trainable)
                continue
            table = self._table(layout, layout.family.text_encoder(slot_name))
            new_module = ConceptEmbeddingLayer(target, adapter_name, tokens, value, table, trainable)
            if adapter_name not in self.active_adapters:
                new_module.requires_grad_(False)
            self._replace_module(parent, child_name, new_module, target)

    def _replace_module(self, parent: nn.Module, child_name: str, new_module: nn.Module, child: nn.Module) -> None:
        """peft's replacement, except for an offloaded base (weight on "meta").

        peft moves the new adapter tensors to the base weight's device; for an accelerate-offloaded layer that
        is "meta", which would drop their values. Our layers already put them on the execution device.
        """
        weight = getattr(child.get_base_layer() if hasattr(child, "get_base_layer") else child, "weight", None)
        if weight is not None and weight.device.type == "meta":
            setattr(parent, child_name, new_module)
            return
        super()._replace_module(parent, child_name, new_module, child)

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        raise ValueError(f"{current_key!r} matched target_modules, but identifier tokens only wrap embeddings.")

    def _tokens_trainable(self, config: Any) -> bool:
        return True

    def inject_adapter(self, model: nn.Module, adapter_name: str, *args: Any, **kwargs: Any) -> None:
        config = self.peft_config[adapter_name]
        self._state.setdefault("undo", {})[adapter_name] = self._snapshot()
        try:
            super().inject_adapter(model, adapter_name, *args, **kwargs)
            self._inject_embeddings(model, config, adapter_name)
        except Exception:
            self.rollback_adapter(adapter_name, keep_config=True)  # peft removes the config itself
            raise
        finally:
            self._state["plans"].pop(id(config), None)
        # peft's housekeeping ran before the embeddings were wrapped: run it again.
        self.set_adapter(self.active_adapter, inference_mode=config.inference_mode)
        self._mark_only_adapters_as_trainable(model)
        tables = self._tables()
        for slot_name in config.text_encoders or []:
            tables[slot_name].placeholders.update(config.placeholders())
        self.sync_tokenizers()

    def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        """peft's upcast of half-precision adapters replaces Parameters: give tied wrappers one table again."""
        super()._cast_adapter_dtype(adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)
        for table in self._tables().values():
            primary = table.layers[0].concept_embeddings.get(adapter_name) if table.layers else None
            for layer in table.layers[1:]:
                if primary is not None and adapter_name in layer.concept_embeddings:
                    layer.concept_embeddings[adapter_name] = primary

    # -- tokenizers --
    def sync_tokenizers(self) -> None:
        """Add every adapter's tokens to the bound tokenizers, adopt their ids, expand placeholders there."""
        tokenizers = bound_tokenizers(self.model)
        for slot_name, table in self._tables().items():
            tokenizer = tokenizers.get(slot_name)
            placeholders = table.placeholders
            if tokenizer is None or not placeholders:
                continue
            check_identifier_tokens(tokenizer, placeholders)
            tokens = [t for ts in placeholders.values() for t in ts]
            table.rebind(add_identifier_tokens(tokenizer, tokens))
            table.tokenizer = tokenizer
            install_placeholders(tokenizer, {p: "".join(ts) for p, ts in placeholders.items()})
        for slot_name, words in self._state["plain"].items():
            if tokenizers.get(slot_name) is not None:
                install_placeholders(tokenizers[slot_name], words)

    def concept_token_ids(self, text_encoder: str | None = None) -> dict[str, int]:
        """Identifier token -> id for one adapted text encoder (the first when None)."""
        tables = self._tables()
        name = text_encoder or next(iter(tables))
        return dict(tables[name].ids)

    # -- saving: tied wrappers share their Parameter, so only the first of each encoder is written --
    @staticmethod
    def _tied_aliases(model: nn.Module) -> dict[str, str]:
        """Name of each secondary wrapper -> name of the first wrapper of the same text encoder."""
        names = {id(m): n for n, m in model.named_modules() if isinstance(m, ConceptEmbeddingLayer)}
        aliases = {}
        for name, module in model.named_modules():
            if isinstance(module, ConceptEmbeddingLayer) and module.table.layers[0] is not module:
                primary = names.get(id(module.table.layers[0]))
                if primary is not None:
                    aliases[name] = primary
        return aliases

    @classmethod
    def _get_adapter_state_dict(cls, model, config, adapter_name, state_dict, unwanted_adapter_names):
        out = super()._get_adapter_state_dict(model, config, adapter_name, state_dict, unwanted_adapter_names)
        for alias in cls._tied_aliases(model):
            out = {k: v for k, v in out.items() if not k.startswith(f"{alias}.concept_embeddings.")}
        return out

    # -- a refused load leaves the model as it was --
    def _snapshot(self) -> dict[str, Any]:
        """What attaching an adapter changes besides its layers: token tables, placeholder rules."""
        tokenizers = bound_tokenizers(self.model)
        return {
            "tables": {n: (dict(t.ids), {k: list(v) for k, v in t.placeholders.items()})
                       for n, t in self._tables().items()},
            "plain": {n: dict(v) for n, v in self._state["plain"].items()},
            "tokenizers": [capture_placeholders(t) for t in tokenizers.values()],
        }

    def rollback_adapter(self, adapter_name: str, keep_config: bool = False) -> None:
        """Undo attaching `adapter_name` after its load was refused: layers, tables and tokenizers as before.

        Layers left without any adapter are unwrapped again. The identifier tokens a tokenizer received stay in
        its vocabulary (tokenizers cannot drop added tokens), but it no longer expands the placeholders.
        """
        if not keep_config:
            self.peft_config.pop(adapter_name, None)
        for name, module in list(self.model.named_modules()):
            if not isinstance(module, BaseTunerLayer) or not isinstance(module, self.tuner_layer_cls):
                continue
            if adapter_name in module._get_available_adapters():
                module.delete_adapter(adapter_name)
            if not module._get_available_adapters():
                parent_name, _, child_name = name.rpartition(".")
                parent = self.model.get_submodule(parent_name) if parent_name else self.model
                setattr(parent, child_name, module.get_base_layer())
                table = getattr(module, "table", None)
                if table is not None and module in table.layers:
                    table.layers.remove(module)
        undo = self._state.get("undo", {}).pop(adapter_name, None)
        if undo is not None:
            tables = self._tables()
            for slot_name in list(tables):
                if slot_name in undo["tables"]:
                    ids, placeholders = undo["tables"][slot_name]
                    tables[slot_name].ids, tables[slot_name].placeholders = ids, placeholders
                elif not tables[slot_name].layers:
                    del tables[slot_name]
            self._state["plain"] = undo["plain"]
            for restore in undo["tokenizers"]:
                restore()
        remaining = [n for n in self.peft_config if n != adapter_name]
        if adapter_name in self.active_adapters:
            self.active_adapter = remaining[0] if remaining else []
        if not remaining and hasattr(self.model, "peft_config"):
            del self.model.peft_config

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        """Check and remap a loaded file; on refusal, detach the half-loaded adapter before raising."""
        tuner = getattr(model, "base_model", model)
        try:
            out = cls._remap_checked(model, config, adapter_name, state_dict)
        except Exception:
            if isinstance(tuner, ConceptIdentifierModel):
                tuner.rollback_adapter(adapter_name)
            raise
        if isinstance(tuner, ConceptIdentifierModel):
            tuner._state.get("undo", {}).pop(adapter_name, None)
        return out

    @classmethod
    def _remap_checked(cls, model, config, adapter_name, state_dict):
        out = super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)
        for alias, primary in cls._tied_aliases(model).items():
            key = f"{primary}.concept_embeddings.{adapter_name}"
            if key in out:
                out[f"{alias}.concept_embeddings.{adapter_name}"] = out[key]
        require_complete(model, adapter_name, out, state_dict)
        return out

    # -- merging and unloading --
    def _check_same_base(self, adapter_names: list[str] | None) -> None:
        """Refuse to merge adapters trained on another base (their deltas sit at that base's indices)."""
        names = adapter_names or self.active_adapters
        layers = [m for m in self.model.modules() if isinstance(m, nn.Module) and getattr(m, "merged", False)]
        if layers:
            return  # the weights already hold a merge; the fingerprint would not be comparable
        layout = layout_of(self.model)
        current: dict[tuple, str] = {}
        for name in names:
            config = self.peft_config[name]
            slots = layout.slots(config.text_encoders)
            key = tuple(s.name for s in slots)
            if key not in current:
                current[key] = base_fingerprint(layout, slots)
            if config.base_fingerprint is not None and config.base_fingerprint != current[key]:
                raise ValueError(
                    f"Adapter {name!r} was trained on a different base (fingerprint {config.base_fingerprint}, this "
                    f"base: {current[key]}); merging it would write its deltas into the wrong weights."
                )

    def merge_and_unload(self, progressbar: bool = False, safe_merge: bool = False,
                         adapter_names: list[str] | None = None) -> nn.Module:
        """A plain model with the adapters written into its weights (identifier rows into a grown embedding)."""
        self._check_same_base(adapter_names)
        return super().merge_and_unload(progressbar=progressbar, safe_merge=safe_merge, adapter_names=adapter_names)

    def merge_adapter(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        self._check_same_base(adapter_names)
        super().merge_adapter(adapter_names=adapter_names, safe_merge=safe_merge)

    def unload(self) -> nn.Module:
        """The base model without any adapter; bound tokenizers stop expanding this tuner's placeholders."""
        tokenizers = bound_tokenizers(self.model)
        placeholders = [p for t in self._tables().values() for p in t.placeholders]
        model = super().unload()
        for tokenizer in tokenizers.values():
            remove_placeholders(tokenizer, placeholders)
        return model
