"""The ``clap_kld`` evaluation module: ``evaluate.load("clap_kld")`` after ``import musicpeft``.

It wraps :func:`musicpeft.metrics.core.compute_clap_kld`. The generated audio goes in as
``predictions`` (1-D float arrays, or (channels, samples)), the prompts as ``prompts``; the
reference set, the sampling rate(s) and the CLAP model are compute (or, for the model, load)
keyword arguments, because the reference set need not have one clip per prediction.

This file is also what the Space folder ``metrics/clap_kld/`` loads; keep the metric class the
first ``evaluate`` module class defined or imported here (evaluate picks the first it finds).
"""

from __future__ import annotations

import datasets
import evaluate

from .audio import as_float_audio
from .clap import load_clap_backend
from .core import CLAP_METRICS, _resolve_metrics, compute_clap_kld

_CITATION = """\
@article{musicgen_prompt_tuning_korean,
  title={Prompt tuning of MusicGen for traditional Korean music},
  note={KLD over MFCC, chroma, spectral and zero-crossing features; CLAP score (section 4.3)}
}
@article{jen1_dreamstyler,
  title={JEN-1 DreamStyler: customized musical concept learning via pivotal parameters tuning},
  note={Audio Alignment, Text Alignment and Delta Audio Alignment (section 5)}
}
"""

_DESCRIPTION = """\
Objective scores for text-to-music models: CLAP text-audio similarity (CLAP score), a KL divergence
between generated and reference feature distributions (MFCC, chroma, spectral centroid / bandwidth /
roll-off, zero-crossing rate), concept-customisation scores (audio alignment, text alignment,
delta audio alignment) and a Frechet distance on CLAP embeddings. Unusable clips (silent, constant,
NaN/Inf, shorter than one analysis frame) are excluded and listed, never averaged in.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of arrays): generated clips, mono (samples,) or (channels, samples); float in
        [-1, 1], or integer PCM (int16, int32, uint8, ...), which is scaled to [-1, 1].
    prompts (`list` of `str`): the prompt of each clip, as given to the model.
    reference_audio (`list` of arrays or a `ReferenceSet`, optional): reference clips for the KLD,
        the Frechet distance and (without concept_audio) the audio alignment.
    sampling_rate (`int` or `list` of `int`): sampling rate of the predictions, one or one per clip.
    reference_sampling_rate (`int`, optional): sampling rate of reference / concept clips.
    concept_audio (`dict` of `str` to clips, optional): reference clips per concept.
    metrics (`list` of `str`, optional): subset of clap_score, text_alignment, kld,
        audio_alignment, delta_audio_alignment, fd_clap; default: all the inputs allow.
    clap_model, clap_processor (optional): override the CLAP model given to `evaluate.load`.
    on_invalid (`str`): "exclude" (default) or "raise".
    Other keyword arguments of `musicpeft.metrics.compute_clap_kld` pass through.
Returns:
    clap_score, kld, kld_per_feature, audio_alignment, text_alignment, delta_audio_alignment,
    fd_clap (floats or None), their per-item lists, num_items, num_scored, excluded (list of
    {index, reason}), reference_excluded, config.
Examples:
    >>> import musicpeft, evaluate
    >>> metric = evaluate.load("clap_kld", clap_model="laion/larger_clap_music")
    >>> metric.compute(predictions=clips, prompts=prompts, reference_audio=refs, sampling_rate=32000)
"""


def _float_if_pcm(item, what: str):
    """Integer PCM arrays/tensors scaled to float in [-1, 1] (`as_float_audio`); anything else unchanged."""
    dtype = getattr(item, "dtype", None)
    if dtype is not None and not getattr(dtype, "is_floating_point", getattr(dtype, "kind", "f") == "f"):
        return as_float_audio(item, what)
    return item


class ClapKld(evaluate.Metric):
    """CLAP score, KLD and concept-alignment scores for text-to-music generation.

    Load-time arguments (``evaluate.load("clap_kld", clap_model=..., ...)``): ``clap_model``,
    ``clap_processor``, ``clap_backend``, ``clap_config``, ``device``, ``batch_size``; the
    CLAP model is loaded at the first compute that needs it and kept for the next ones.
    """

    def __init__(self, clap_model=None, clap_processor=None, clap_backend: str = "transformers",
                 clap_config=None, device: str | None = None, batch_size: int = 8, **kwargs):
        super().__init__(**kwargs)
        self._clap_args = dict(model=clap_model, processor=clap_processor, backend=clap_backend,
                               config=clap_config, device=device, batch_size=batch_size)
        self._backend = None

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Sequence(datasets.Value("float32")),
                                   "prompts": datasets.Value("string")}),
                datasets.Features({"predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                                   "prompts": datasets.Value("string")}),
            ],
            reference_urls=["https://github.com/LAION-AI/CLAP", "docs/evaluation.md"],
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add generated clips (``predictions``) and their ``prompts``; checks counts first.

        evaluate's own error for an empty list is an IndexError deep inside, so it is caught here.
        """
        if predictions is not None and len(predictions) == 0:
            raise ValueError("predictions is empty: pass at least one generated clip")
        prompts = kwargs.get("prompts")
        if predictions is not None and prompts is not None and len(prompts) != len(predictions):
            raise ValueError(
                f"prompts has {len(prompts)} items but predictions has {len(predictions)}: "
                "pass one prompt per generated clip"
            )
        if predictions is not None:
            # evaluate stores predictions as float32 Arrow values, which would keep int16 PCM unscaled.
            predictions = [_float_if_pcm(p, f"predictions[{i}]") for i, p in enumerate(predictions)]
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def _backend_for(self, clap_model, clap_processor):
        """The load-time CLAP (loaded once, kept), or a one-off one when compute overrides model/processor."""
        args = dict(self._clap_args)
        model, processor = args.pop("model"), args.pop("processor")
        if clap_model is None and clap_processor is None:
            if self._backend is None:
                self._backend = load_clap_backend(model, processor, **args)
            return self._backend
        model = clap_model if clap_model is not None else model
        processor = clap_processor if clap_processor is not None else processor
        return load_clap_backend(model, processor, **args)

    def _compute(self, predictions, prompts, reference_audio=None, metrics=None, clap_model=None,
                 clap_processor=None, **kwargs):
        chosen = _resolve_metrics(metrics, prompts, reference_audio, kwargs.get("concept_audio"))
        backend = self._backend_for(clap_model, clap_processor) if CLAP_METRICS & set(chosen) else None
        return compute_clap_kld(predictions, prompts, reference_audio, metrics=metrics, clap_model=backend,
                                **kwargs)
