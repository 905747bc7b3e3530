"""Evaluation for text-to-music models: the ``clap_kld`` metric, its feature extractors and report helpers.

Importing this package is cheap (no torch, librosa or evaluate): the names below load their
modules on first use. ``register_clap_kld()`` (called by ``import musicpeft``) makes
``evaluate.load("clap_kld")`` work offline; see :mod:`musicpeft.metrics.registry`.

Definitions of every score: docs/evaluation.md.
"""

from __future__ import annotations

import importlib

from .registry import register_clap_kld, register_metric, registered_metrics

_LAZY = {
    "compute_clap_kld": "core",
    "ReferenceSet": "core",
    "ALL_METRICS": "core",
    "FeatureConfig": "features",
    "extract_features": "features",
    "librosa_features": "features",
    "KLDConfig": "kld",
    "ReferenceDistribution": "kld",
    "kld_scores": "kld",
    "ClapBackend": "clap",
    "TransformersClap": "clap",
    "LaionClap": "clap",
    "load_clap_backend": "clap",
    "DEFAULT_CLAP_MODEL": "clap",
    "convert_laion_checkpoint": "laion",
    "load_state_dict_safely": "laion",
    "CheckpointError": "laion",
    "strip_placeholders": "alignment",
    "frechet_distance": "alignment",
    "write_report": "report",
}

__all__ = ["register_clap_kld", "register_metric", "registered_metrics", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'musicpeft.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
