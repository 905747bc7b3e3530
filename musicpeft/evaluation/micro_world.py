"""Teach-and-score helpers for the trained micro-world: did an adapter make the base sound like a concept?

Why one module: the demo, the quality benchmark, the examples and the tests all ask the same question
of the shipped tiny models (``musicpeft.tiny.load_trained_*``) — generate clips for a concept's prompts,
then measure them with tools that were trained independently of the generator:

* the trained tiny CLAP: CLAP score (audio vs. the prompt) and audio alignment with reference clips;
* the instrument classifier (MFCC/log-mel, trained on real rendered audio of every instrument,
  concepts included): the fraction of clips it labels as the concept and its mean probability;
* the KLD of audio features against held-out clips of the concept (``musicpeft.metrics.kld``);
* the token cross-entropy of held-out clips (``token_cross_entropy``).

Generation here batches prompts under one seed (``torch.manual_seed(seed)`` then one ``generate``
call): a fair before/after comparison needs the same prompts, seed and batch on both sides, not
per-prompt independence (``musicpeft.evaluation.generation`` offers that, one prompt at a time).
"""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch

from .. import tiny
from ..api import add_adapter
from ..metrics.clap import TransformersClap
from ..metrics.core import ReferenceSet, compute_clap_kld
from ..training.collator import base_musicgen, precompute_codes
from ..training.musicgen_trainer import make_musicgen_trainer
from ..training.presets import lora_config, prepare_full_finetune
from ..tuners import SoftMusicPromptConfig
from .runner import Scoring, score_clips


@dataclass
class MicroWorld:
    """The shipped tiny trained models: a MusicGen base, a CLAP backend and an instrument classifier."""

    model: Any
    processor: Any
    clap: Any  # a musicpeft.metrics.clap.ClapBackend
    classifier: Any  # .labels, .predict(audios, sampling_rate), .predict_proba(audios, sampling_rate)
    sampling_rate: int

    def fresh_model(self) -> Any:
        """A new copy of the trained base (adapters are attached to copies, never to ``model``)."""
        return copy.deepcopy(self.model).eval()


def trained_models_available() -> bool:
    """Whether this installation ships the trained tiny MusicGen, CLAP and instrument classifier."""
    try:
        tiny.trained_musicgen_path()
        tiny.trained_clap_path()
        tiny.trained_classifier_path()
    except (AttributeError, FileNotFoundError):
        return False
    return True


def load_micro_world() -> MicroWorld:
    """Load the trained tiny MusicGen, CLAP and instrument classifier shipped in ``musicpeft.tiny``."""
    missing = [n for n in ("load_trained_musicgen", "load_trained_clap", "load_instrument_classifier")
               if not hasattr(tiny, n)]
    if missing:
        raise RuntimeError(
            f"musicpeft.tiny has no {', '.join(missing)}: the trained tiny models are not installed in this "
            "checkout (see issue 8)"
        )
    model, processor = tiny.load_trained_musicgen()
    clap_model, clap_processor = tiny.load_trained_clap()
    clap = TransformersClap(clap_model, clap_processor, device="cpu", name="musicpeft tiny CLAP (trained)")
    classifier = tiny.load_instrument_classifier()
    return MicroWorld(model.eval(), processor, clap, classifier, int(model.config.audio_encoder.sampling_rate))


def frames_for(model: Any, seconds: float) -> int:
    """New tokens MusicGen must generate for ``seconds`` of audio (its delay pattern adds K - 1 steps)."""
    inner = base_musicgen(model)
    return math.ceil(seconds * inner.config.audio_encoder.frame_rate) + inner.decoder.num_codebooks - 1


@torch.no_grad()
def generate(model: Any, processor: Any, prompts: Sequence[str], seconds: float, seed: int,
             guidance_scale: float = 3.0, batch_size: int = 16) -> list[np.ndarray]:
    """One mono clip per prompt, ``seconds`` long, sampled after ``torch.manual_seed(seed)`` per batch."""
    rate = int(base_musicgen(model).config.audio_encoder.sampling_rate)
    length = int(round(seconds * rate))
    clips: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            inputs = processor(text=list(prompts[start:start + batch_size]), padding=True, return_tensors="pt")
            torch.manual_seed(seed + start)
            out = model.generate(**inputs, do_sample=True, guidance_scale=guidance_scale,
                                 max_new_tokens=frames_for(model, seconds))
            clips += [a[0, :length].float().cpu().numpy() for a in out]
    finally:
        model.train(was_training)
    return clips


def classifier_scores(classifier: Any, instrument: str, clips: Sequence[np.ndarray], sampling_rate: int
                      ) -> dict[str, Any]:
    """How the instrument classifier hears ``clips``: the fraction it labels ``instrument`` (``classifier_rate``),
    its mean probability of ``instrument`` and the count of every label it gave."""
    labels = list(classifier.labels)
    if instrument not in labels:
        raise ValueError(f"instrument {instrument!r} is not a label of the instrument classifier {labels}")
    clips = [np.asarray(c, dtype=np.float32) for c in clips]
    predicted = list(classifier.predict(clips, sampling_rate))
    proba = np.asarray(classifier.predict_proba(clips, sampling_rate), dtype=np.float64)
    return {
        "classifier_rate": predicted.count(instrument) / len(predicted),
        "classifier_probability": float(proba[:, labels.index(instrument)].mean()),
        "classifier_labels": {label: predicted.count(label) for label in sorted(set(predicted))},
    }


class ConceptScorer:
    """Scores of generated clips against one concept instrument (see the module docstring).

    CLAP and KLD go through :func:`musicpeft.evaluation.score_clips`, as in ``musicpeft evaluate``; the
    classifier's verdicts through :func:`classifier_scores`.

    Args:
        world: the clap backend and the classifier come from it.
        instrument: the concept's label in ``world.classifier.labels`` (e.g. ``"koto"``).
        reference: held-out clips of the concept (the KLD reference and the audio-alignment target).
        sampling_rate: rate of ``reference`` and of every scored clip.
    """

    def __init__(self, world: MicroWorld, instrument: str, reference: Sequence[np.ndarray], sampling_rate: int):
        labels = list(world.classifier.labels)
        if instrument not in labels:
            raise ValueError(f"instrument {instrument!r} is not a label of the instrument classifier {labels}")
        self.world = world
        self.instrument = instrument
        self.index = labels.index(instrument)
        self.sampling_rate = int(sampling_rate)
        self.reference = ReferenceSet(list(reference), self.sampling_rate, name=f"{instrument} reference clips")
        self.scoring = Scoring(self.reference, list(reference), None, None, world.clap)

    def score(self, clips: Sequence[np.ndarray], prompts: Sequence[str]) -> dict[str, Any]:
        """CLAP score, audio alignment, classifier rate / probability and KLD of ``clips`` (one per prompt)."""
        result = score_clips(clips, prompts, self.scoring, self.sampling_rate)
        return {
            "clap_score": result["clap_score"],
            "audio_alignment": result["audio_alignment"],
            "kld": result["kld"],
            "kld_per_feature": {k: result["kld_per_feature"][k] for k in ("mfcc", "chroma", "spectral", "zcr")},
            **classifier_scores(self.world.classifier, self.instrument, clips, self.sampling_rate),
            "num_clips": len(clips),
            "num_scored": result["num_scored"],
        }


def with_placeholder(text: str, instrument: str) -> str:
    """A world caption ("... on koto") with its instrument word replaced by the placeholder ("... on <koto>")."""
    if not text.endswith(f"on {instrument}"):
        raise ValueError(f"caption {text!r} does not end with 'on {instrument}'")
    return text[: -len(instrument)] + f"<{instrument}>"


def score_concepts(world: MicroWorld, model: Any, processor: Any, single: dict[str, list[str]], multi: list[str],
                   references: dict[str, Any], seconds: float, seed: int, plain: bool = False) -> dict[str, Any]:
    """The DreamStyler scores of a concept model: text / audio alignment, classifier rate, ΔAA.

    Args:
        single: per concept, prompts naming that concept's placeholder (``"a slow piece on <koto>"``).
        multi: prompts naming every concept (``"... on <koto> and <shamisen>"``).
        references: per concept, a ``ReferenceSet`` of held-out clips (the audio-alignment target).
        plain: generate from the prompts with the brackets removed (the base model, which knows no
            placeholders, gets the instrument words); scores still use the placeholder-free text.

    Returns single-concept ``text_alignment``, ``audio_alignment`` (each clip against its own concept,
    mean over concepts) and ``classifier_rate`` (clips labelled as their concept), and for ``multi``
    ``text_alignment_multi``, ``audio_alignment_multi`` (mean over concepts), ``delta_audio_alignment``
    and ``audio_alignment_per_concept``.
    """
    def prompts_for(texts: list[str]) -> list[str]:
        return [t.replace("<", "").replace(">", "") for t in texts] if plain else texts

    rate = world.sampling_rate
    ta, aa, hits = [], [], []
    for concept, prompts in single.items():
        clips = generate(model, processor, prompts_for(prompts), seconds, seed=seed)
        r = compute_clap_kld(clips, prompts, sampling_rate=rate, clap_model=world.clap,
                             concept_audio={concept: references[concept]},
                             metrics=["text_alignment", "audio_alignment"])
        ta.append(r["text_alignment"])
        aa.append(r["audio_alignment"])
        predicted = list(world.classifier.predict(clips, rate))
        hits.append(predicted.count(concept) / len(predicted))
    clips = generate(model, processor, prompts_for(multi), seconds, seed=seed + 1)
    r = compute_clap_kld(clips, multi, sampling_rate=rate, clap_model=world.clap, concept_audio=references,
                         metrics=["text_alignment", "audio_alignment", "delta_audio_alignment"])
    return {"text_alignment": float(np.mean(ta)), "audio_alignment": float(np.mean(aa)),
            "classifier_rate": float(np.mean(hits)), "text_alignment_multi": r["text_alignment"],
            "audio_alignment_multi": r["audio_alignment"], "delta_audio_alignment": r["delta_audio_alignment"],
            "audio_alignment_per_concept": r["audio_alignment_per_concept"]}


def codes_dataset(rows: Sequence[dict], model: Any) -> Any:
    """A ``datasets.Dataset`` of ``text`` + EnCodec ``codes`` (encoded once, as the soft-prompt paper does)."""
    data = datasets.Dataset.from_dict({"audio": [np.asarray(r["audio"], np.float32) for r in rows],
                                       "text": [r["text"] for r in rows]})
    return precompute_codes(data, model)


def method_model(model: Any, method: str, *, num_virtual_tokens: int = 30, lora_r: int = 16, seed: int = 0) -> Any:
    """``model`` ready to train with ``method``: ``soft_prompt``, ``lora:<preset>`` or ``full`` (the decoder).

    Soft prompts and LoRA wrap ``model`` in a ``PeftModel`` (base weights frozen); ``full`` unfreezes
    the decoder of ``model`` itself and returns it.
    """
    torch.manual_seed(seed)
    if method == "soft_prompt":
        return add_adapter(model, SoftMusicPromptConfig(num_virtual_tokens=num_virtual_tokens, init_seed=seed))
    if method.startswith("lora:"):
        return add_adapter(model, lora_config(model, method.split(":", 1)[1], r=lora_r, alpha=2 * lora_r))
    if method == "full":
        prepare_full_finetune(model)
        return model
    raise ValueError(f"method must be 'soft_prompt', 'lora:<preset>' or 'full', got {method!r}")


def train_method(model: Any, processor: Any, train: Any, method: str, *, steps: int, learning_rate: float,
                 batch_size: int, seed: int, output_dir: str | None = None, num_virtual_tokens: int = 30,
                 lora_r: int = 16, logging_steps: int | None = None, progress: bool = True) -> tuple[Any, Any]:
    """Make ``model`` trainable with ``method`` (:func:`method_model`) and train it with the library's Trainer
    recipe (:func:`~musicpeft.training.musicgen_trainer.make_musicgen_trainer`, as ``musicpeft train`` does).

    Constant learning rate, ``steps`` optimizer steps, no evaluation, nothing saved (the Trainer's scratch
    folder is temporary; ``output_dir`` is accepted for compatibility and left untouched). Returns
    ``(trained model, trainer)``; ``trainer.state.log_history`` holds the logged losses.
    """
    trained = method_model(model, method, num_virtual_tokens=num_virtual_tokens, lora_r=lora_r, seed=seed)
    with tempfile.TemporaryDirectory(prefix="musicpeft-trainer-") as scratch:
        trainer = make_musicgen_trainer(
            trained, processor, train, eval_dataset=None, early_stopping_patience=None, output_dir=scratch,
            max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=learning_rate,
            lr_scheduler_type="constant", logging_strategy="steps", logging_steps=logging_steps or max(1, steps // 20),
            seed=seed, disable_tqdm=not progress, use_cpu=True,
        )
        trainer.train()
    trained.eval()
    return trained, trainer


def train_soft_prompt(model: Any, processor: Any, train: Any, *, steps: int, learning_rate: float, batch_size: int,
                      num_virtual_tokens: int, seed: int, output_dir: str | None = None,
                      logging_steps: int | None = None, progress: bool = True) -> tuple[Any, Any]:
    """:func:`train_method` with ``method="soft_prompt"``: returns ``(peft_model, trainer)``."""
    return train_method(model, processor, train, "soft_prompt", steps=steps, learning_rate=learning_rate,
                        batch_size=batch_size, seed=seed, output_dir=output_dir,
                        num_virtual_tokens=num_virtual_tokens, logging_steps=logging_steps, progress=progress)
