"""``compute_clap_kld``: every score of the ``clap_kld`` metric from audio arrays, in one call.

The ``evaluate`` module (:mod:`musicpeft.metrics.clap_kld`) is a thin wrapper around this function;
call it directly to skip evaluate's Arrow round trip, and build a :class:`ReferenceSet` once to
score several models (base, adapters) against the same reference without recomputing its
features and embeddings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .alignment import (
    DEFAULT_PLACEHOLDER_PATTERN,
    audio_alignment,
    clap_scores,
    frechet_distance,
    strip_placeholders,
    text_alignment,
)
from .audio import DEFAULT_SILENCE_THRESHOLD, CheckedAudio, check_audio, resample
from .clap import load_clap_backend
from .features import FeatureConfig, extract_features
from .kld import KLDConfig, ReferenceDistribution, kld_scores

ALL_METRICS = ("clap_score", "text_alignment", "kld", "audio_alignment", "delta_audio_alignment", "fd_clap")
TEXT_METRICS = {"clap_score", "text_alignment"}
CLAP_METRICS = {"clap_score", "text_alignment", "audio_alignment", "delta_audio_alignment", "fd_clap"}


def _describe(excluded: list[dict], what: str) -> str:
    return "; ".join(f"{what}[{e['index']}]: {e['reason']}" for e in excluded)


class ReferenceSet:
    """A checked reference set: its feature distribution is fitted once and its CLAP embeddings cached.

    Args:
        audio: reference clips (arrays, tensors or ``{"array", "sampling_rate"}`` dicts).
        sampling_rate: rate of clips that carry none (one number or one per clip).
        feature_config: analysis parameters (defaults if None).
        kld_config: histogram parameters (defaults if None).
        silence_threshold: peak level at or below which a clip is silent (and excluded).
        name: the argument name used in messages.

    Raises:
        ValueError: the set is empty or none of its clips is usable (all silent, non-finite, or
            shorter than one analysis frame); the message lists every clip's reason.
    """

    def __init__(self, audio: Sequence, sampling_rate=None, feature_config: FeatureConfig | None = None,
                 kld_config: KLDConfig | None = None, silence_threshold: float = DEFAULT_SILENCE_THRESHOLD,
                 name: str = "reference_audio"):
        self.feature_config = feature_config or FeatureConfig()
        self.kld_config = kld_config or KLDConfig()
        self.name = name
        if audio is None or len(audio) == 0:
            raise ValueError(f"{name} is empty: the KLD and audio alignment need at least one reference clip")
        fc = self.feature_config
        self.checked: CheckedAudio = check_audio(audio, sampling_rate, name, (fc.n_fft, fc.sample_rate),
                                                 silence_threshold, refuse_non_finite=True)
        if not self.checked.clips:
            raise ValueError(
                f"{name} has no usable clip (each must last at least one analysis frame, n_fft={fc.n_fft} "
                f"samples at {fc.sample_rate} Hz): " + _describe(self.checked.excluded, name)
            )
        self._distribution: ReferenceDistribution | None = None
        self._embeddings: dict[int, tuple[object, np.ndarray]] = {}

    @property
    def excluded(self) -> list[dict]:
        return self.checked.excluded

    @property
    def distribution(self) -> ReferenceDistribution:
        if self._distribution is None:
            fc = self.feature_config
            clips = [resample(c.samples, c.sampling_rate, fc.sample_rate) for c in self.checked.clips]
            self._distribution = ReferenceDistribution.fit(extract_features(clips, fc), fc, self.kld_config)
        return self._distribution

    def embeddings(self, backend) -> np.ndarray:
        """CLAP audio embeddings of the usable clips, computed once per backend object."""
        cached = self._embeddings.get(id(backend))
        if cached is None or cached[0] is not backend:
            clips = [resample(c.samples, c.sampling_rate, backend.sampling_rate) for c in self.checked.clips]
            cached = (backend, backend.embed_audio(clips))
            self._embeddings[id(backend)] = cached
        return cached[1]


def _resolve_metrics(metrics, prompts, reference, concept_audio) -> list[str]:
    n_concepts = len(concept_audio) if concept_audio else (1 if reference is not None else 0)
    if metrics is None:
        chosen = ["clap_score", "text_alignment"] if prompts is not None else []
        if reference is not None:
            chosen += ["kld", "fd_clap"]
        if n_concepts:
            chosen.append("audio_alignment")
        if n_concepts > 1:
            chosen.append("delta_audio_alignment")
        if not chosen:
            raise ValueError("nothing to compute: pass prompts (CLAP score, text alignment) and/or reference_audio")
        return chosen
    if isinstance(metrics, str):
        metrics = [metrics]
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(ALL_METRICS)}")
    needs = {
        "clap_score": (prompts is not None, "prompts"),
        "text_alignment": (prompts is not None, "prompts"),
        "kld": (reference is not None, "reference_audio"),
        "fd_clap": (reference is not None, "reference_audio"),
        "audio_alignment": (n_concepts > 0, "reference_audio or concept_audio"),
        "delta_audio_alignment": (n_concepts > 1, "concept_audio with at least two concepts"),
    }
    for m in metrics:
        ok, what = needs[m]
        if not ok:
            raise ValueError(f"metric {m!r} needs {what}")
    return list(dict.fromkeys(metrics))


def _spread(values, indices: list[int], total: int) -> list:
    """Per-item values of the scored clips placed at their indices; None for excluded items."""
    out: list = [None] * total
    for i, v in zip(indices, values, strict=True):
        out[i] = None if v is None else float(v)
    return out


def compute_clap_kld(
    predictions: Sequence,
    prompts: Sequence[str] | None = None,
    reference_audio: Sequence | ReferenceSet | None = None,
    *,
    sampling_rate=None,
    reference_sampling_rate=None,
    concept_audio: Mapping[str, Sequence] | None = None,
    metrics: Sequence[str] | None = None,
    clap_model=None,
    clap_processor=None,
    clap_backend: str = "transformers",
    clap_config=None,
    device: str | None = None,
    feature_config: FeatureConfig | None = None,
    kld_config: KLDConfig | None = None,
    placeholder_pattern: str = DEFAULT_PLACEHOLDER_PATTERN,
    silence_threshold: float = DEFAULT_SILENCE_THRESHOLD,
    on_invalid: str = "exclude",
    batch_size: int = 8,
    seed: int = 0,
) -> dict:
    """CLAP score, KLD, audio / text alignment, ΔAudio Alignment and CLAP Fréchet distance.

    Args:
        predictions: generated clips: 1-D arrays (or (channels, samples), averaged to mono),
            tensors, or ``{"array", "sampling_rate"}`` dicts.
        prompts: one prompt per clip, as given to the model (placeholders included).
        reference_audio: reference clips, or a prepared :class:`ReferenceSet`. Drives the KLD, the
            Fréchet distance and, without ``concept_audio``, the audio alignment.
        sampling_rate: rate (Hz) of prediction clips that carry none; one number or one per clip.
            Clips at different rates are resampled (to ``feature_config.sample_rate`` for the
            KLD, to the CLAP model's rate for embeddings).
        reference_sampling_rate: rate of reference / concept clips that carry none (default:
            ``sampling_rate`` when it is one number).
        concept_audio: ``{concept name: clips or ReferenceSet}`` for concept customisation; audio
            alignment is computed per concept, ΔAudio Alignment when there are two or more.
        metrics: subset of ``ALL_METRICS``; by default everything the inputs allow.
        clap_model: ``model`` of :func:`~musicpeft.metrics.clap.load_clap_backend` (a ready backend
            object is reused).
        clap_processor: ``processor`` of :func:`~musicpeft.metrics.clap.load_clap_backend`.
        clap_backend: ``backend`` of :func:`~musicpeft.metrics.clap.load_clap_backend`.
        clap_config: ``config`` of :func:`~musicpeft.metrics.clap.load_clap_backend`.
        device: torch device of the CLAP model (see :func:`~musicpeft.metrics.clap.load_clap_backend`).
        feature_config: analysis parameters of the KLD.
        kld_config: histogram parameters of the KLD.
        placeholder_pattern: regex of the concept tokens removed from prompts for text alignment.
        silence_threshold: peak level at or below which a clip counts as silent.
        on_invalid: ``"exclude"`` (default) scores the usable clips and lists the others under
            ``excluded``; ``"raise"`` raises ValueError if any prediction is unusable.
        batch_size: clips per feature / CLAP batch.
        seed: seed of CLAP's crops of clips longer than its window.

    Returns:
        A JSON-serialisable dict. Aggregates are floats, or None when nothing could be scored
        (then ``excluded`` says why); ``*_per_item`` lists have one entry per prediction, None for
        excluded ones. See docs/evaluation.md for every key.
    """
    if predictions is None or len(predictions) == 0:
        raise ValueError("predictions is empty: pass at least one generated clip")
    n = len(predictions)
    if prompts is not None:
        if isinstance(prompts, str):
            raise ValueError("prompts must be a list of strings (one per clip), got a single string")
        if len(prompts) != n:
            raise ValueError(
                f"prompts has {len(prompts)} items but predictions has {n}: pass one prompt per generated clip"
            )
        bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
        if bad:
            raise ValueError(f"prompts must be strings; items {bad[:5]} are not (e.g. {prompts[bad[0]]!r})")
    if on_invalid not in ("exclude", "raise"):
        raise ValueError(f"on_invalid must be 'exclude' or 'raise', got {on_invalid!r}")
    if concept_audio is not None and not isinstance(concept_audio, Mapping):
        raise ValueError("concept_audio must map concept names to lists of clips, e.g. {'<koto>': [clip, ...]}")

    ref_rate = reference_sampling_rate
    if ref_rate is None and not isinstance(sampling_rate, Sequence | np.ndarray):
        ref_rate = sampling_rate
    chosen = _resolve_metrics(metrics, prompts, reference_audio, concept_audio)
    reference = reference_audio
    if reference is not None and not isinstance(reference, ReferenceSet):
        reference = ReferenceSet(reference, ref_rate, feature_config, kld_config, silence_threshold)
    elif isinstance(reference, ReferenceSet):
        for given, held, label in ((feature_config, reference.feature_config, "feature_config"),
                                   (kld_config, reference.kld_config, "kld_config")):
            if given is not None and given != held:
                raise ValueError(f"{label} differs from the one the ReferenceSet was built with ({held})")
    fc = reference.feature_config if reference is not None else (feature_config or FeatureConfig())

    checked = check_audio(predictions, sampling_rate, "predictions", (fc.n_fft, fc.sample_rate), silence_threshold)
    if checked.excluded and on_invalid == "raise":
        raise ValueError("unusable predictions: " + _describe(checked.excluded, "predictions"))
    idx = checked.indices
    result: dict = {
        "num_items": n,
        "num_scored": len(idx),
        "excluded": checked.excluded,
        "input_sampling_rates": sorted({c.sampling_rate for c in checked.clips}),
        "metrics": chosen,
    }
    if reference is not None:
        result["reference_size"] = reference.checked.total
        result["reference_excluded"] = reference.excluded
    if not idx:
        result["note"] = "no prediction could be scored; every aggregate is None (see 'excluded')"

    if "kld" in chosen:
        result.update(_kld_part(checked, reference, n, batch_size))

    if CLAP_METRICS & set(chosen):
        backend = load_clap_backend(clap_model, clap_processor, backend=clap_backend, device=device,
                                    batch_size=batch_size, seed=seed, config=clap_config)
        result["clap_model"] = backend.name
        seed = getattr(backend, "seed", seed)  # a ready backend crops with its own seed
        result.update(_clap_part(checked, prompts, reference, concept_audio, ref_rate, chosen, backend,
                                 placeholder_pattern, silence_threshold, fc, n))
    result["config"] = {
        "feature_config": fc.to_dict(),
        "kld_config": (reference.kld_config if reference is not None else kld_config or KLDConfig()).to_dict(),
        "silence_threshold": silence_threshold,
        "placeholder_pattern": placeholder_pattern,
        "seed": seed,
    }
    return result


def _kld_part(checked: CheckedAudio, reference: ReferenceSet, n: int, batch_size: int) -> dict:
    idx = checked.indices
    if not idx:
        return {"kld": None, "kld_per_feature": None, "kld_per_item": [None] * n, "kld_per_item_per_feature": None}
    fc = reference.feature_config
    clips = [resample(c.samples, c.sampling_rate, fc.sample_rate) for c in checked.clips]
    scores = kld_scores(extract_features(clips, fc, batch_size=batch_size), reference.distribution)
    scores["kld_per_item"] = _spread(scores["kld_per_item"], idx, n)
    scores["kld_per_item_per_feature"] = {
        k: _spread(v, idx, n) for k, v in scores["kld_per_item_per_feature"].items()
    }
    return scores


def _clap_part(checked, prompts, reference, concept_audio, ref_rate, chosen, backend, pattern,
               silence_threshold, fc, n) -> dict:
    out: dict = {}
    idx = checked.indices
    if not idx:
        for m in chosen:
            if m in CLAP_METRICS:
                out[m] = None
        return out
    audio = backend.embed_audio([resample(c.samples, c.sampling_rate, backend.sampling_rate) for c in checked.clips])
    if TEXT_METRICS & set(chosen):
        given = [prompts[i] for i in idx]
        stripped = [strip_placeholders(p, pattern) for p in given]
        texts = list(dict.fromkeys((given if "clap_score" in chosen else []) + stripped))
        table = dict(zip(texts, backend.embed_text(texts), strict=True))
        if "clap_score" in chosen:
            per_item = clap_scores(audio, np.stack([table[p] for p in given]))
            out["clap_score"] = float(per_item.mean())
            out["clap_score_per_item"] = _spread(per_item, idx, n)
        if "text_alignment" in chosen:
            out.update(text_alignment(audio, stripped, table))
            out["text_alignment_prompts"] = _spread_text(stripped, idx, n)
    if {"audio_alignment", "delta_audio_alignment"} & set(chosen):
        if concept_audio:
            concepts = {}
            for name, clips in concept_audio.items():
                ref = clips if isinstance(clips, ReferenceSet) else ReferenceSet(
                    clips, ref_rate, fc, None, silence_threshold, name=f"concept_audio[{name!r}]")
                concepts[str(name)] = ref.embeddings(backend)
        else:
            concepts = {"reference": reference.embeddings(backend)}
        aa = audio_alignment(audio, concepts)
        aa["audio_alignment_per_item"] = _spread(aa["audio_alignment_per_item"], idx, n)
        if "audio_alignment" not in chosen:
            aa = {"delta_audio_alignment": aa["delta_audio_alignment"],
                  "audio_alignment_per_concept": aa["audio_alignment_per_concept"]}
        out.update(aa)
    if "fd_clap" in chosen:
        ref_emb = reference.embeddings(backend)
        if len(audio) >= 2 and len(ref_emb) >= 2:
            out["fd_clap"] = frechet_distance(audio, ref_emb)
        else:
            out["fd_clap"] = None
            out["fd_clap_note"] = (f"needs at least 2 scored clips on each side, got {len(audio)} generated "
                                   f"and {len(ref_emb)} reference")
    return out


def _spread_text(values: list[str], indices: list[int], total: int) -> list:
    out: list = [None] * total
    for i, v in zip(indices, values, strict=True):
        out[i] = v
    return out
