"""Configuration of pivotal parameters tuning (JEN-1 DreamStyler §4.2-4.3) with concept identifier tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...registration import add_peft_type
from ..concept_identifier.config import ConceptIdentifierConfig
from .selection import check_percent

PIVOTAL_MASK = add_peft_type("PIVOTAL_MASK")

STAGES = ("mask", "tune")
SELECTIONS = ("pivotal", "random", "none")


@dataclass
class PivotalMaskConfig(ConceptIdentifierConfig):
    """Pivotal parameters tuning: a mask picks the self-attention value entries worth training.

    Stage 1 (`stage="mask"`): a mask M_V, initialised to ones, multiplies every self-attention value
    projection W_V element-wise; only the masks train, the identifier tokens stay fixed. One mask adapter
    per concept (Algorithm 1).
    Stage 2 (`stage="tune"`): the top `percent`% entries of |M_V - M_V*| (over all layers, or per layer)
    of the adapters named in `mask_adapters`, united, become trainable deltas of W_V, together with every
    cross-attention W_K and W_V (dense deltas) and the identifier tokens of all concepts.

    Args:
        concepts: As in `ConceptIdentifierConfig`.
        tokens_per_concept: As in `ConceptIdentifierConfig`.
        init_words: As in `ConceptIdentifierConfig`.
        init_seed: As in `ConceptIdentifierConfig`.
        text_encoders: As in `ConceptIdentifierConfig`.
        stage: `mask` (stage 1) or `tune` (stage 2).
        percent: P, the share of self-attention value entries stage 2 trains (paper: 5; in (0, 100]).
        per_layer: Select the top P% of each layer instead of the top P% of all layers together.
        selection: `pivotal` (top P% of the mask change; needs `mask_adapters`), `random` (as many entries at
            random, the paper's ablation) or `none` (no self-attention entry: cross-attention K/V + tokens,
            the Custom Diffusion baseline).
        mask_adapters: Names of this model's trained stage-1 adapters whose selections are united.
        selection_seed: Seed of `selection="random"`.
        num_selected: Number of selected entries (filled in at stage 2; a saved adapter reads its indices
            from its weights file).
    """

    stage: Literal["mask", "tune"] = field(default="mask", metadata={"help": "'mask' (stage 1) or 'tune' (stage 2)."})
    percent: float = field(
        default=5.0, metadata={"help": "P: percentage of self-attention value entries trained in stage 2."}
    )
    per_layer: bool = field(
        default=False, metadata={"help": "Select the top P percent per layer instead of over all layers together."}
    )
    selection: Literal["pivotal", "random", "none"] = field(
        default="pivotal",
        metadata={
            "help": "'pivotal' (top P percent of mask change), 'random' (ablation) or 'none' (cross-attention only)."
        },
    )
    mask_adapters: list[str] | None = field(
        default=None, metadata={"help": "Trained stage-1 adapters of this model whose selections are united."}
    )
    selection_seed: int = field(default=0, metadata={"help": "Seed of selection='random'."})
    num_selected: int | None = field(
        default=None, metadata={"help": "Selected self-attention entries; filled in at stage 2."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = PIVOTAL_MASK
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}.")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}.")
        check_percent(self.percent)
        if isinstance(self.mask_adapters, str):
            self.mask_adapters = [self.mask_adapters]
        if self.stage == "mask" and self.mask_adapters:
            raise ValueError(f"mask_adapters={self.mask_adapters} only applies to stage='tune'.")
        needs_masks = self.selection == "pivotal" and not self.mask_adapters and self.num_selected is None
        if self.stage == "tune" and needs_masks:
            raise ValueError(
                "stage='tune' with selection='pivotal' needs the stage-1 masks: train a stage='mask' adapter per "
                "concept and pass mask_adapters=[their names], or ask for selection='random'."
            )
