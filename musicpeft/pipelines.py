"""Loading AudioLDM2 pipelines so that they generate under transformers 5: see `musicpeft.families.audioldm2_loading`.

Kept under this name because it is the documented import path (`from musicpeft.pipelines import
load_audioldm2_pipeline`).
"""

from .families.audioldm2_loading import ensure_audioldm2_compat, gpt2_with_lm_head, load_audioldm2_pipeline

__all__ = ["ensure_audioldm2_compat", "gpt2_with_lm_head", "load_audioldm2_pipeline"]
