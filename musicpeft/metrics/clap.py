"""CLAP embedding backends: transformers' ClapModel by default, the optional ``laion_clap`` package as an alternative.

Why a small protocol: the metric needs only two verbs, unit-length audio embeddings and unit-length
text embeddings, and the two implementations differ in everything else (preprocessing, loading,
batching). Both make the evaluation reproducible: CLAP's feature extractor crops long clips and,
for fused models, marks a random short clip as "longer"; here the crop uses a fixed seed
(restoring numpy's global random state afterwards) and ``is_longer`` is set from the real lengths.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from .laion import CHECKPOINT_SUFFIXES, convert_laion_checkpoint, laion_feature_extractor, load_state_dict_safely

DEFAULT_CLAP_MODEL = "laion/larger_clap_music"
DEFAULT_TOKENIZER_SOURCE = "laion/clap-htsat-unfused"


@runtime_checkable
class ClapBackend(Protocol):
    """What the metric needs from a CLAP model."""

    name: str
    sampling_rate: int

    def embed_audio(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """(n, d) unit-length embeddings of mono clips already at ``sampling_rate``."""

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) unit-length embeddings of texts."""


@contextlib.contextmanager
def seeded_numpy(seed: int):
    """Seed numpy's global RNG (which CLAP's feature extractor crops with) and restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _pooled(out):
    """transformers 5 returns a ModelOutput whose ``pooler_output`` is the embedding; 4.x a tensor."""
    return out.pooler_output if hasattr(out, "pooler_output") else out


def check_tokenizer(tokenizer, vocab_size: int, source: str) -> None:
    """Refuse a tokenizer that cannot have come with this model (e.g. a near-empty one loaded offline)."""
    n = len(tokenizer)
    if n > vocab_size or n < 0.9 * vocab_size:
        raise ValueError(
            f"CLAP tokenizer from {source!r} has {n} tokens but the text model expects {vocab_size}. "
            "In transformers 5 a tokenizer loaded offline by name can come back near-empty; pass the "
            "model's own processor (clap_processor=<local path>) instead."
        )


class TransformersClap:
    """A transformers ``ClapModel`` + ``ClapProcessor`` (any converted LAION CLAP, or the tiny test one)."""

    def __init__(self, model, processor, device: str | None = None, batch_size: int = 8, seed: int = 0,
                 name: str | None = None):
        import torch

        if batch_size < 1:
            raise ValueError(f"TransformersClap: batch_size must be >= 1, got {batch_size}")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.feature_extractor = processor.feature_extractor
        self.tokenizer = processor.tokenizer
        self.sampling_rate = int(self.feature_extractor.sampling_rate)
        self.batch_size = batch_size
        self.seed = seed
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        check_tokenizer(self.tokenizer, model.config.text_config.vocab_size, self.name)
        self.max_text_length = min(
            int(getattr(self.tokenizer, "model_max_length", 10**9)),
            model.config.text_config.max_position_embeddings - 2,
        )

    def embed_audio(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        out = []
        limit = self.feature_extractor.nb_max_samples
        for start in range(0, len(clips), self.batch_size):
            chunk = [np.asarray(c, dtype=np.float32) for c in clips[start: start + self.batch_size]]
            with seeded_numpy(self.seed + start):
                inputs = self.feature_extractor(chunk, sampling_rate=self.sampling_rate, return_tensors="pt")
            # Real lengths, not the extractor's random "pretend one clip is longer" for fused models.
            is_longer = torch.tensor([[len(c) > limit] for c in chunk])
            with torch.no_grad():
                emb = self.model.get_audio_features(
                    input_features=inputs["input_features"].to(self.device), is_longer=is_longer.to(self.device)
                )
            out.append(_pooled(emb).float().cpu().numpy())
        return _unit(np.concatenate(out, axis=0).astype(np.float64))

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start: start + self.batch_size]), padding=True, truncation=True,
                max_length=self.max_text_length, return_tensors="pt",
            )
            with torch.no_grad():
                emb = self.model.get_text_features(
                    input_ids=batch["input_ids"].to(self.device), attention_mask=batch["attention_mask"].to(self.device)
                )
            out.append(_pooled(emb).float().cpu().numpy())
        return _unit(np.concatenate(out, axis=0).astype(np.float64))


class LaionClap:
    """The ``laion_clap`` package's ``CLAP_Module`` with a checkpoint loaded safely (optional backend).

    ``laion_clap`` builds its RoBERTa from the Hub ("roberta-base"), so it needs that model in the
    local Hugging Face cache or a network. Its own ``load_ckpt`` unpickles the file; here the
    weights are read with :func:`~musicpeft.metrics.laion.load_state_dict_safely` instead.
    """

    sampling_rate = 48000

    def __init__(self, checkpoint: str, enable_fusion: bool | None = None, amodel: str | None = None,
                 device: str | None = None, seed: int = 0):
        try:
            import laion_clap
        except ImportError as err:
            raise ImportError(
                "clap_backend='laion_clap' needs the laion_clap package; see docs/evaluation.md "
                "('pip install laion_clap --no-deps' plus its real dependencies)"
            ) from err
        state = load_state_dict_safely(checkpoint)
        if enable_fusion is None:
            enable_fusion = any(k.startswith("audio_branch.patch_embed.mel_conv2d.") for k in state)
        if amodel is None:
            width = state["audio_branch.patch_embed.proj.weight"].shape[0]
            amodel = "HTSAT-base" if width == 128 else "HTSAT-tiny"
        self.module = laion_clap.CLAP_Module(enable_fusion=enable_fusion, amodel=amodel, device=device)
        state.pop("text_branch.embeddings.position_ids", None)
        self.module.model.load_state_dict(state, strict=False)
        self.module.eval()
        self.seed = seed
        self.name = f"laion_clap:{os.path.basename(checkpoint)}"

    def embed_audio(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        out = []
        for i, clip in enumerate(clips):
            with seeded_numpy(self.seed + i), torch.no_grad():
                out.append(self.module.get_audio_embedding_from_data(x=[np.asarray(clip, np.float32)]))
        return _unit(np.concatenate(out, axis=0).astype(np.float64))

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            emb = self.module.get_text_embedding(list(texts))
        return _unit(np.asarray(emb, dtype=np.float64))


def _is_checkpoint_file(path: str) -> bool:
    return os.path.isfile(path) and path.endswith(CHECKPOINT_SUFFIXES)


def _processor_for(source, fallback_config, model_source: str):
    """A ClapProcessor from an instance, a path / Hub id, or (for converted LAION files) built from parts."""
    from transformers import AutoTokenizer, ClapProcessor

    if source is not None and not isinstance(source, str | os.PathLike):
        return source
    if fallback_config is None:
        return ClapProcessor.from_pretrained(os.fspath(source or model_source))
    tokenizer = AutoTokenizer.from_pretrained(os.fspath(source or DEFAULT_TOKENIZER_SOURCE))
    return ClapProcessor(feature_extractor=laion_feature_extractor(fallback_config), tokenizer=tokenizer)


def load_clap_backend(
    model=None,
    processor=None,
    *,
    backend: str = "transformers",
    device: str | None = None,
    batch_size: int = 8,
    seed: int = 0,
    config=None,
) -> ClapBackend:
    """Resolve whatever the caller passed as a CLAP model into a :class:`ClapBackend`.

    Args:
        model: a ready :class:`ClapBackend`; a transformers ``ClapModel`` (then ``processor`` is
            required); a local directory or Hub id of a converted CLAP (default
            ``laion/larger_clap_music``); or an original LAION-CLAP checkpoint file
            (``.pt/.pth/.ckpt/.bin/.safetensors``), converted on load.
        processor: a ``ClapProcessor`` or its path / Hub id. For a LAION checkpoint file, a
            tokenizer source (default ``laion/clap-htsat-unfused``'s RoBERTa tokenizer).
        backend: ``"transformers"`` or ``"laion_clap"`` (needs the optional package and a checkpoint file).
        device: torch device; CUDA when available by default.
        batch_size: clips or texts per forward pass.
        seed: seed of the feature extractor's crops of clips longer than its window.
        config: ClapConfig (or its path) for a LAION checkpoint; inferred from the weights if None.
    """
    if isinstance(model, ClapBackend):
        return model
    if backend == "laion_clap":
        if not isinstance(model, str | os.PathLike) or not _is_checkpoint_file(os.fspath(model)):
            raise ValueError(f"clap_backend='laion_clap' needs a LAION-CLAP checkpoint file path, got {model!r}")
        return LaionClap(os.fspath(model), device=device, seed=seed)
    if backend != "transformers":
        raise ValueError(f"clap_backend must be 'transformers' or 'laion_clap', got {backend!r}")
    if model is None:
        model = DEFAULT_CLAP_MODEL
    if isinstance(model, str | os.PathLike):
        source = os.fspath(model)
        if _is_checkpoint_file(source):
            clap = convert_laion_checkpoint(source, config=config)
            proc = _processor_for(processor, clap.config, source)
        else:
            from transformers import ClapModel

            clap = ClapModel.from_pretrained(source)
            proc = _processor_for(processor, None, source)
        return TransformersClap(clap, proc, device=device, batch_size=batch_size, seed=seed, name=source)
    if processor is None or isinstance(processor, str | os.PathLike):
        if processor is None:
            raise ValueError("clap_model is a model object: pass its ClapProcessor as clap_processor")
        processor = _processor_for(processor, None, "")
    return TransformersClap(model, processor, device=device, batch_size=batch_size, seed=seed)
