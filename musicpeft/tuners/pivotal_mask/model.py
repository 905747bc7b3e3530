"""The pivotal tuner: identifier tokens, plus masks (stage 1) or selected W_V entries and cross-attention K/V."""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from ...adapters.strict import require_complete
from ..concept_identifier.layer import ConceptEmbeddingLayer
from ..concept_identifier.layout import Layout, layout_of
from ..concept_identifier.model import ConceptIdentifierModel
from .layer import DENSE, MASK, SPARSE, PivotalLinear
from .selection import Selection, count, random_percent, top_percent, union


class PivotalMaskModel(ConceptIdentifierModel):
    """JEN-1 DreamStyler's pivotal parameters tuning as an injection-style peft tuner, for any family.

    Which modules are "self-attention value" and "cross-attention key/value" comes from the family data
    (`self_attention_value`, `cross_attention_key_value`): MusicGen's decoder `self_attn.v_proj` and
    `encoder_attn.k_proj/v_proj`, AudioLDM2's U-Net `attn1.to_v` and `attn2.to_k/to_v`.
    """

    prefix: str = "pivotal_"
    tuner_layer_cls = (ConceptEmbeddingLayer, PivotalLinear)

    def _tokens_trainable(self, config: Any) -> bool:
        return config.stage == "tune"  # stage 1 trains the mask with V* fixed (Eq. 8)

    def _prepare_adapter_config(self, config: Any, model_config: dict) -> Any:
        config = super()._prepare_adapter_config(config, model_config)
        layout = layout_of(self.model)
        self_names = self._checked_names(layout, layout.self_value_regex, "self-attention value")
        cross_names = self._checked_names(layout, layout.cross_key_value_regex, "cross-attention key/value")
        if config.stage == "mask":
            attention = {name: (MASK, None) for name in self_names}
        else:
            attention = {name: (DENSE, None) for name in cross_names}
            if config.selection != "none":
                selection = self._stage2_selection(config, self_names)
                attention.update({name: (SPARSE, selection.get(name)) for name in self_names})
                if selection:
                    config.num_selected = count(selection)
                    object.__setattr__(config, "_musicpeft_selection", selection)
        self._state["plans"][id(config)]["attention"] = attention
        config.target_modules = "|".join(re.escape(n) for n in attention)
        return config

    @staticmethod
    def _checked_names(layout: Layout, regex: str, what: str) -> list[str]:
        names = layout.names(regex)
        if not names:
            raise ValueError(f"No {what} projection of {type(layout.root).__name__} matches {regex!r}.")
        return names

    def _stage2_selection(self, config: Any, self_names: list[str]) -> Selection:
        """The union of the named masks' top-P% selections, a random one, or {} (indices come from a file)."""
        if config.num_selected is not None and config.selection == "random":
            # A saved (or already attached) adapter: its indices come from its weights file, or from the
            # selection this config object made when it was first attached. Never redraw the permutation.
            return dict(getattr(config, "_musicpeft_selection", None) or {})
        if config.selection == "random":
            modules = dict(self.model.named_modules())
            shapes = {n: tuple(modules[n].get_base_layer().weight.shape if isinstance(modules[n], PivotalLinear)
                               else modules[n].weight.shape) for n in self_names}
            return random_percent(shapes, config.percent, config.per_layer, config.selection_seed)
        masks = config.mask_adapters or []
        present = self.mask_adapter_names()
        missing = [m for m in masks if m not in present]
        if not missing and masks:
            return self.select(masks, config.percent, config.per_layer)
        if config.num_selected is not None:
            return {}  # a saved stage-2 adapter: its indices are in its weights file
        raise ValueError(
            f"Stage 2 needs the stage-1 masks {missing}, which this model does not have (mask adapters present: "
            f"{sorted(present) or 'none'}). Train them with stage='mask', or use selection='random'."
        )

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        kind, indices = self._state["plans"][id(peft_config)]["attention"][current_key]
        if isinstance(target, PivotalLinear):
            target.update_layer(adapter_name, kind, indices)
            return
        new_module = PivotalLinear(target, adapter_name, kind, indices)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    # -- selections --
    def _pivotal_layers(self) -> dict[str, PivotalLinear]:
        return {n: m for n, m in self.model.named_modules() if isinstance(m, PivotalLinear)}

    def mask_adapter_names(self) -> list[str]:
        return [n for n, c in self.peft_config.items() if getattr(c, "stage", None) == "mask"]

    @torch.no_grad()
    def mask_deltas(self, adapter_name: str) -> dict[str, torch.Tensor]:
        """|M_V - M_V*| of a stage-1 adapter, per self-attention value projection (M_V starts at ones)."""
        deltas = {n: (m.pivotal_mask[adapter_name] - 1).abs() for n, m in self._pivotal_layers().items()
                  if adapter_name in m.pivotal_mask}
        if not deltas:
            known = self.mask_adapter_names()
            raise ValueError(f"Adapter {adapter_name!r} has no stage-1 mask; mask adapters: {known}.")
        return deltas

    def select(self, mask_adapters: str | list[str], percent: float = 5.0, per_layer: bool = False) -> Selection:
        """Top `percent`% of each mask adapter's change, united over the adapters (Algorithm 1, lines 4-6)."""
        names = [mask_adapters] if isinstance(mask_adapters, str) else list(mask_adapters)
        return union(*(top_percent(self.mask_deltas(n), percent, per_layer) for n in names))

    def selection_of(self, adapter_name: str) -> Selection:
        """The flat W_V indices a stage-2 adapter trains, per module."""
        return {n: m.pivotal_indices[adapter_name].detach().clone() for n, m in self._pivotal_layers().items()
                if adapter_name in m.pivotal_indices}

    def trainable_counts(self, adapter_name: str) -> dict[str, int]:
        """Entries an adapter trains, by kind: what its optimizer state is proportional to."""
        counts = {"mask": 0, "self_attention_values": 0, "cross_attention": 0, "tokens": 0}
        for module in self._pivotal_layers().values():
            counts["mask"] += module.pivotal_mask[adapter_name].numel() if adapter_name in module.pivotal_mask else 0
            counts["self_attention_values"] += module.num_selected(adapter_name)
            if adapter_name in module.pivotal_delta:
                counts["cross_attention"] += module.pivotal_delta[adapter_name].numel()
        seen = set()
        for module in self.model.modules():
            if isinstance(module, ConceptEmbeddingLayer) and adapter_name in module.concept_embeddings:
                table = module.concept_embeddings[adapter_name]
                if id(table) not in seen and self._tokens_trainable(self.peft_config[adapter_name]):
                    seen.add(id(table))
                    counts["tokens"] += table.numel()
        return counts

    # -- loading: a saved stage-2 adapter brings its own indices --
    @classmethod
    def _remap_checked(cls, model: nn.Module, config: Any, adapter_name: str,
                       state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for name, module in model.named_modules():
            if isinstance(module, PivotalLinear) and adapter_name in module.pivotal_indices:
                key = cls._remove_adapter_name_from_key(f"{name}.pivotal_indices.{adapter_name}", adapter_name)
                indices = state_dict.get(key, state_dict.get(key.removeprefix("base_model.model.")))
                if indices is not None:
                    module.set_selection(adapter_name, indices)
        remapped = super()._remap_checked(model, config, adapter_name, state_dict)
        require_complete(model, adapter_name, remapped, state_dict)
        return remapped
