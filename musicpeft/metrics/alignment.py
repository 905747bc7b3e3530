"""Scores on CLAP embeddings: CLAP score, audio / text alignment, ΔAudio Alignment, Fréchet distance.

All inputs are unit-length embeddings (rows), so a dot product is a cosine. Definitions follow the
papers (docs/evaluation.md has them with formulas):

* CLAP score (prompt tuning paper, §4.3): ``cos(audio_i, text(prompt_i))`` per item, then the mean.
* Audio Alignment (pivotal tuning paper, §5): for a concept with reference clips r_1..r_m,
  ``AA_i = mean_j cos(audio_i, r_j)``; a concept's AA is the mean over generated items; with
  several concepts, the overall AA is the mean over concepts.
* ΔAudio Alignment: ``max_c AA_c - min_c AA_c`` over the concepts (``|AA_1 - AA_2|`` for two).
* Text Alignment: per distinct prompt (after removing ``<placeholder>`` tokens), the cosine between
  the mean audio embedding of the items generated from it and the prompt's text embedding; the
  overall value is the mean over distinct prompts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

# A concept placeholder such as "<my-koto>" and the extra vectors diffusers-style loaders add ("<my-koto>_1").
DEFAULT_PLACEHOLDER_PATTERN = r"<[^<>\s]+>(?:_\d+)?"


def strip_placeholders(prompt: str, pattern: str = DEFAULT_PLACEHOLDER_PATTERN) -> str:
    """The prompt without concept placeholder tokens, with the spacing and punctuation they leave tidied."""
    text = re.sub(pattern, " ", prompt)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"([,;:])(\s*[,;:])+", r"\1", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text.strip(",;: ")


def clap_scores(audio: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Row-wise cosine of matching audio and text embeddings."""
    return np.sum(audio * text, axis=1)


def audio_alignment(audio: np.ndarray, concepts: Mapping[str, np.ndarray]) -> dict:
    """Audio Alignment per item and concept, per concept, overall, and ΔAudio Alignment (None for one concept)."""
    if not concepts:
        raise ValueError("audio_alignment: no concept reference embeddings")
    per_item = {name: audio @ ref.mean(axis=0) for name, ref in concepts.items()}
    per_concept = {name: float(v.mean()) for name, v in per_item.items()}
    values = list(per_concept.values())
    return {
        "audio_alignment": float(np.mean(values)),
        "audio_alignment_per_concept": per_concept,
        "audio_alignment_per_item": np.mean(np.stack(list(per_item.values())), axis=0),
        "delta_audio_alignment": float(max(values) - min(values)) if len(values) > 1 else None,
    }


def text_alignment(audio: np.ndarray, prompts: Sequence[str], text_by_prompt: Mapping[str, np.ndarray]) -> dict:
    """Text Alignment per distinct prompt and overall (prompts are already placeholder-free)."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    per_prompt = {}
    for p, idx in groups.items():
        mean = audio[idx].mean(axis=0)
        norm = np.linalg.norm(mean)
        per_prompt[p] = float(mean @ text_by_prompt[p] / norm) if norm > 0 else 0.0
    return {"text_alignment": float(np.mean(list(per_prompt.values()))), "text_alignment_per_prompt": per_prompt}


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two embedding sets (rows), as in FAD.

    ``|mu_x - mu_y|^2 + tr(S_x + S_y - 2 (S_x S_y)^(1/2))``; the trace of the matrix square root is
    computed as ``tr((S_x^(1/2) S_y S_x^(1/2))^(1/2))``, which is symmetric and stable even when
    the covariances are singular (fewer clips than dimensions).
    """
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"frechet_distance needs at least 2 embeddings per set, got {len(x)} and {len(y)}")
    mu = x.mean(axis=0) - y.mean(axis=0)
    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = _sqrtm_psd(sx)
    cross = np.trace(_sqrtm_psd(root @ sy @ root))
    return float(max(mu @ mu + np.trace(sx) + np.trace(sy) - 2.0 * cross, 0.0))
