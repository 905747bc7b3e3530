"""KL divergence between feature distributions of generated clips and a reference set.

The paper (prompt tuning for Korean music, §4.3) extracts MFCC, chroma, spectral and zero-crossing
features, averages the reference set's distributions and takes the KL divergence of each model's
(or clip's) features from them, without saying how a distribution is formed. This module pins
that down so the number is reproducible; docs/evaluation.md states the same definition:

1. Bins, per feature row d (20 MFCCs, 12 chroma bins, centroid, bandwidth, roll-off, ZCR): edges
   ``lo_d, hi_d`` are the 0.5 % and 99.5 % quantiles of all reference frames' values of row d
   (``numpy.quantile``, linear interpolation), split into ``n_bins`` equal-width bins. A
   degenerate range (``hi_d - lo_d <= 1e-12 * max(1, |lo_d|)``) becomes ``lo_d - 0.5 .. lo_d + 0.5``.
   Values outside are clipped into the first or last bin. Bins come from the reference only, so
   every model compared against one reference set is binned the same way.
2. A clip's distribution for row d: the fraction of its frames in each bin (frames weigh equally
   within a clip).
3. Averaging: the reference distribution is the mean of its clips' distributions (clips weigh
   equally whatever their length); a generated set's distribution is likewise the mean of its
   clips' distributions.
4. Smoothing: ``p~ = (p + eps) / (1 + n_bins * eps)`` with ``eps = 1e-6`` on both sides.
5. ``KL(q || p) = sum_b q~_b * ln(q~_b / p~_b)`` in nats, with q the generated side and p the
   reference: how far the generated features stray from where the reference puts its mass.
6. A family's value is the mean of its rows' KLs (spectral = centroid, bandwidth, roll-off);
   the combined ``kld`` is the mean of the four families (MFCC, chroma, spectral, ZCR).

``kld`` (set level) compares the averaged generated distribution with the reference, so a set
against itself scores exactly 0. ``kld_per_item`` compares each clip's own distribution with the
reference (the paper's per-prompt numbers); it is not 0 even for a reference clip, because one
clip covers less of the feature space than the whole set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .features import FAMILIES, FeatureConfig


@dataclass(frozen=True)
class KLDConfig:
    """Histogram and smoothing parameters of the KLD (see the module docstring for the definition).

    Args:
        n_bins: equal-width bins per feature row.
        low_quantile: lower bin edge, as a quantile of the reference frames.
        high_quantile: upper bin edge, as a quantile of the reference frames.
        eps: additive smoothing mass per bin before renormalising.
    """

    n_bins: int = 32
    low_quantile: float = 0.005
    high_quantile: float = 0.995
    eps: float = 1e-6

    def __post_init__(self):
        if not isinstance(self.n_bins, int | np.integer) or self.n_bins < 2:
            raise ValueError(f"KLDConfig.n_bins must be an integer >= 2, got {self.n_bins!r}")
        if not 0.0 <= self.low_quantile < self.high_quantile <= 1.0:
            raise ValueError(
                "KLDConfig quantiles must satisfy 0 <= low_quantile < high_quantile <= 1, got "
                f"low_quantile={self.low_quantile}, high_quantile={self.high_quantile}"
            )
        if not self.eps > 0:
            raise ValueError(f"KLDConfig.eps must be > 0 (it keeps the KL finite), got {self.eps}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ReferenceDistribution:
    """A reference set's bin edges and averaged, smoothed per-row histograms.

    Build it once with :meth:`fit` and reuse it to score several models on the same bins.
    """

    lo: np.ndarray  # (dims,)
    hi: np.ndarray  # (dims,)
    probs: np.ndarray  # (dims, n_bins), smoothed
    feature_config: FeatureConfig
    config: KLDConfig
    n_clips: int

    @classmethod
    def fit(
        cls, features: Sequence[np.ndarray], feature_config: FeatureConfig, config: KLDConfig | None = None
    ) -> ReferenceDistribution:
        """Bin edges from the reference frames' quantiles, then the mean of the clips' histograms."""
        config = config or KLDConfig()
        if len(features) == 0:
            raise ValueError("ReferenceDistribution.fit: the reference set has no usable clips")
        frames = np.concatenate(list(features), axis=1)
        lo = np.quantile(frames, config.low_quantile, axis=1)
        hi = np.quantile(frames, config.high_quantile, axis=1)
        degenerate = (hi - lo) <= 1e-12 * np.maximum(1.0, np.abs(lo))
        lo, hi = np.where(degenerate, lo - 0.5, lo), np.where(degenerate, lo + 0.5, hi)
        ref = cls(lo=lo, hi=hi, probs=np.empty(0), feature_config=feature_config, config=config, n_clips=len(features))
        ref.probs = smooth(np.mean([ref.histogram(f) for f in features], axis=0), config.eps)
        return ref

    def histogram(self, features: np.ndarray) -> np.ndarray:
        """One clip's unsmoothed per-row distribution over the reference bins, shape (dims, n_bins)."""
        dims, frames = features.shape
        if dims != len(self.lo):
            raise ValueError(f"histogram: features have {dims} rows, the reference has {len(self.lo)}")
        if frames == 0:
            raise ValueError("histogram: a clip with zero frames has no distribution")
        n = self.config.n_bins
        scaled = (features - self.lo[:, None]) / (self.hi - self.lo)[:, None] * n
        idx = np.clip(np.floor(scaled), 0, n - 1).astype(np.int64)
        flat = (idx + n * np.arange(dims)[:, None]).ravel()
        return np.bincount(flat, minlength=dims * n).reshape(dims, n) / frames

    def divergence(self, hist: np.ndarray) -> dict[str, float]:
        """KL(smoothed ``hist`` || reference) per family plus the combined ``kld`` (nats)."""
        per_row = kl_divergence(smooth(hist, self.config.eps), self.probs)
        out = {fam: float(per_row[rows].mean()) for fam, rows in self.feature_config.family_rows.items()}
        out["kld"] = float(np.mean([out[f] for f in FAMILIES]))
        spectral = self.feature_config.family_rows["spectral"]
        names = self.feature_config.feature_names[spectral]
        out.update({name: float(v) for name, v in zip(names, per_row[spectral], strict=True)})
        return out


def smooth(probs: np.ndarray, eps: float) -> np.ndarray:
    """Additive smoothing along the last axis: ``(p + eps) / (1 + n_bins * eps)``."""
    return (probs + eps) / (1.0 + probs.shape[-1] * eps)


def kl_divergence(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``sum_b q_b ln(q_b / p_b)`` over the last axis; both must be strictly positive (smoothed)."""
    return np.sum(q * (np.log(q) - np.log(p)), axis=-1)


def kld_scores(generated: Sequence[np.ndarray], reference: ReferenceDistribution) -> dict:
    """Set-level and per-clip KLDs of generated clips' features against a fitted reference.

    Returns:
        ``{"kld": float, "kld_per_feature": {family or spectral row: float},
        "kld_per_item": [float], "kld_per_item_per_feature": {family: [float]}}``.
    """
    if len(generated) == 0:
        raise ValueError("kld_scores: no generated clips to score")
    hists = [reference.histogram(f) for f in generated]
    set_level = reference.divergence(np.mean(hists, axis=0))
    items = [reference.divergence(h) for h in hists]
    keys = list(FAMILIES) + [k for k in set_level if k not in FAMILIES and k != "kld"]
    return {
        "kld": set_level["kld"],
        "kld_per_feature": {k: set_level[k] for k in keys},
        "kld_per_item": [it["kld"] for it in items],
        "kld_per_item_per_feature": {k: [it[k] for it in items] for k in FAMILIES},
    }
