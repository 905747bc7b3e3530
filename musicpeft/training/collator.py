"""Batches for ``MusicgenForConditionalGeneration.forward(labels=...)``: text ids and delayed audio codes.

Why this is not a one-liner: MusicGen's ``forward`` takes ``labels`` shaped ``[batch, frames,
codebooks]`` but does not apply the delay pattern it was trained with; ``shift_tokens_right``
only shifts the labels one step (start token first, ``-100`` turned into the pad token). So the
labels have to arrive already delayed, exactly as ``generate`` lays codes out:

    codebook k, step j:  codes[k, j - 1 - k]  for  k < j <= k + T,  pad otherwise  (T+K steps)

``generate`` starts from one column of start tokens; ``build_delay_pattern_mask`` fills the
first ``k+1`` steps of codebook k and its last ``K-1-k`` steps with the pad token, and the
decoded codes are what is left after removing the pads. Training on that sequence minus its first
(all-start) column gives labels of ``T+K-1`` steps where codebook k is shifted by k frames. The
filler steps are set to ``-100`` (the model's decoder input then sees the pad token there, as in
generation), and so are the steps added to pad shorter clips in a batch.

Audio is encoded with the model's own EnCodec, without gradients, clip by clip at each clip's
own length (or taken from a ``codes`` column made once by :func:`precompute_codes`, as the
soft-prompt paper does).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..families.base import unwrap_peft
from .encoding_cache import EncodingCache, audio_key, cached_encode, module_fingerprint
from .progress import library_bars_follow_rule

IGNORE_INDEX = -100


def base_musicgen(model: Any) -> Any:
    """The ``MusicgenForConditionalGeneration`` inside a peft wrapper (or the model itself)."""
    model = unwrap_peft(model)
    for attr in ("audio_encoder", "decoder", "config"):
        if not hasattr(model, attr):
            raise TypeError(
                f"expected a MusicgenForConditionalGeneration (or a PeftModel of one), got {type(model).__name__} "
                f"without .{attr}"
            )
    if getattr(model.config.decoder, "audio_channels", 1) != 1:
        raise NotImplementedError(
            f"model.config.decoder.audio_channels={model.config.decoder.audio_channels}: "
            "only mono MusicGen is supported"
        )
    return model


@torch.no_grad()
def encode_audio(model: Any, audios: Sequence[np.ndarray]) -> list[torch.Tensor]:
    """EnCodec codes ``[codebooks, frames]`` (int64, CPU) of each mono clip, each at its own length.

    Clips of equal length are encoded together; clips are never padded, so a clip's codes do not
    depend on what else is in the batch.
    """
    base = base_musicgen(model)
    encoder = base.audio_encoder
    param = next(encoder.parameters())
    by_length: dict[int, list[int]] = {}
    arrays = []
    for i, audio in enumerate(audios):
        arr = np.asarray(audio, dtype=np.float32)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"example {i}: 'audio' must be a non-empty 1-D (mono) array, got shape {arr.shape}")
        arrays.append(arr)
        by_length.setdefault(arr.size, []).append(i)
    out: list[torch.Tensor | None] = [None] * len(arrays)
    was_training = encoder.training
    encoder.eval()
    try:
        for indices in by_length.values():
            batch = torch.from_numpy(np.stack([arrays[i] for i in indices]))[:, None, :]
            codes = encoder.encode(batch.to(device=param.device, dtype=param.dtype)).audio_codes
            if codes.shape[0] != 1:
                raise ValueError(
                    f"EnCodec returned {codes.shape[0]} chunks; set model.config.audio_encoder.chunk_length_s=None"
                )
            for row, i in enumerate(indices):
                out[i] = codes[0, row].to("cpu", torch.long)
    finally:
        encoder.train(was_training)
    return out  # type: ignore[return-value]


@torch.no_grad()
def init_codebooks_from_audio(model: Any, audios: Sequence[np.ndarray], seed: int = 0) -> None:
    """Set a randomly initialised EnCodec's codebooks to embeddings of ``audios`` (in place).

    Why: transformers initialises EnCodec codebooks to zeros, so a model built from a config (the
    tiny test and demo models) maps every frame to code 0 and its "music" carries no information.
    Like EnCodec's own k-means initialisation, each residual codebook is filled with randomly
    chosen residual frames of real audio, so codes follow the music. Never use on trained weights.
    """
    base = base_musicgen(model)
    encoder = base.audio_encoder
    param = next(encoder.parameters())
    frames = []
    for audio in audios:
        x = torch.as_tensor(np.asarray(audio, dtype=np.float32))[None, None].to(param.device, param.dtype)
        frames.append(encoder.encoder(x)[0].T)  # [T, D]
    residual = torch.cat(frames)
    generator = torch.Generator().manual_seed(seed)
    for layer in encoder.quantizer.layers:
        book = layer.codebook
        size = book.embed.shape[0]
        if residual.shape[0] < size:
            raise ValueError(
                f"init_codebooks_from_audio: need at least {size} frames of audio, got {residual.shape[0]}"
            )
        pick = torch.randperm(residual.shape[0], generator=generator)[:size].to(residual.device)
        book.embed.copy_(residual[pick])
        book.embed_avg.copy_(residual[pick])
        book.cluster_size.fill_(1.0)
        residual = residual - book.embed[book.quantize(residual)]


def delayed_labels(model: Any, codes: torch.Tensor) -> torch.Tensor:
    """Labels ``[frames + K - 1, K]`` for one clip's codes ``[K, frames]``, filler set to ``-100``.

    Built with the decoder's own ``build_delay_pattern_mask`` so training matches generation.
    """
    base = base_musicgen(model)
    num_codebooks = base.decoder.num_codebooks
    if codes.ndim != 2 or codes.shape[0] != num_codebooks:
        raise ValueError(f"codes must be [codebooks={num_codebooks}, frames], got shape {tuple(codes.shape)}")
    frames = codes.shape[1]
    dcfg = base.config.decoder
    start, pad = dcfg.decoder_start_token_id, dcfg.pad_token_id
    if start is None or pad is None:
        raise ValueError(
            f"model.config.decoder needs decoder_start_token_id and pad_token_id for training, got {start}, {pad}"
        )
    if bool((codes < 0).any()) or bool((codes >= dcfg.vocab_size).any()):
        raise ValueError(f"codes must lie in [0, {dcfg.vocab_size}), got [{int(codes.min())}, {int(codes.max())}]")
    with_start = torch.cat([torch.full((num_codebooks, 1), start, dtype=torch.long), codes.long()], dim=1)
    # marks: -1 everywhere a code goes, so the filler positions come out as the pad token
    _, values = base.decoder.build_delay_pattern_mask(with_start, pad_token_id=pad, max_length=frames + num_codebooks)
    _, marks = base.decoder.build_delay_pattern_mask(
        torch.full_like(with_start, -1), pad_token_id=pad, max_length=frames + num_codebooks
    )
    labels = torch.where(marks == -1, values, torch.full_like(values, IGNORE_INDEX))
    return labels[:, 1:].T.contiguous()  # drop the all-start column; [T + K - 1, K]


class MusicgenCollator:
    """Data collator: ``[{"audio" or "codes", "text"}, ...]`` -> ``input_ids, attention_mask, labels``.

    ``audio`` must be mono at ``model.config.audio_encoder.sampling_rate`` (checked against an
    example's ``sampling_rate`` when present); ``codes`` is ``[codebooks, frames]``. ``model`` may
    be a PeftModel. Labels of clips shorter than the longest are padded with ``-100``.
    """

    def __init__(self, processor: Any, model: Any, max_text_length: int | None = None):
        self.tokenizer = getattr(processor, "tokenizer", processor)
        if not callable(self.tokenizer):
            raise TypeError(f"processor must be a MusicgenProcessor or a tokenizer, got {type(processor).__name__}")
        self.model = model
        self.max_text_length = max_text_length
        base = base_musicgen(model)
        self.sampling_rate = int(base.config.audio_encoder.sampling_rate)
        self.num_codebooks = int(base.decoder.num_codebooks)

    def codes_of(self, examples: Sequence[Mapping[str, Any]]) -> list[torch.Tensor]:
        """Each example's codes: its ``codes`` when given, else its ``audio`` encoded now."""
        codes: list[torch.Tensor | None] = [None] * len(examples)
        to_encode: list[int] = []
        for i, ex in enumerate(examples):
            if ex.get("codes") is not None:
                codes[i] = torch.as_tensor(np.asarray(ex["codes"]), dtype=torch.long)
            elif ex.get("audio") is not None:
                rate = ex.get("sampling_rate")
                if rate is not None and int(rate) != self.sampling_rate:
                    raise ValueError(
                        f"example {i}: sampling_rate={rate}, but the model's audio encoder expects "
                        f"{self.sampling_rate}; resample first (musicpeft.data.resample)"
                    )
                to_encode.append(i)
            else:
                raise KeyError(f"example {i} has neither 'codes' nor 'audio' (keys: {sorted(ex)})")
        if to_encode:
            encoded = encode_audio(self.model, [examples[i]["audio"] for i in to_encode])
            for i, c in zip(to_encode, encoded, strict=True):
                codes[i] = c
        return codes  # type: ignore[return-value]

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("MusicgenCollator: got an empty list of examples")
        texts = []
        for i, ex in enumerate(examples):
            if not isinstance(ex.get("text"), str):
                raise KeyError(f"example {i}: expected a 'text' string, got {type(ex.get('text')).__name__}")
            texts.append(ex["text"])
        tok = self.tokenizer(
            texts,
            padding=True,
            truncation=self.max_text_length is not None,
            max_length=self.max_text_length,
            return_tensors="pt",
        )
        labels = [delayed_labels(self.model, c) for c in self.codes_of(examples)]
        steps = max(lab.shape[0] for lab in labels)
        batch = torch.full((len(labels), steps, self.num_codebooks), IGNORE_INDEX, dtype=torch.long)
        for i, lab in enumerate(labels):
            batch[i, : lab.shape[0]] = lab
        return {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"], "labels": batch}


def codec_fingerprint(model: Any) -> str:
    """Fingerprint of a MusicGen's EnCodec (class, config, weights): the codes cache key's codec half."""
    return module_fingerprint(base_musicgen(model).audio_encoder)


def precompute_codes(
    dataset: Any, model: Any, batch_size: int = 8, keep_audio: bool = False, cache_dir: str | os.PathLike | None = None
) -> Any:
    """Encode a dataset's ``audio`` column to EnCodec ``codes`` once (int16, ``[codebooks, frames]``).

    Training then skips EnCodec at every step; the collator reads ``codes`` when present.
    ``audio`` is dropped unless ``keep_audio``. With ``cache_dir``, each clip's codes are also stored on disk
    (safetensors, :mod:`musicpeft.training.encoding_cache`) keyed by the clip's samples and the codec's
    fingerprint, and a later call (another run, another epoch loop, a dataset sharing clips) encodes only
    the clips not seen before.
    """
    import datasets

    if "audio" not in dataset.column_names:
        raise KeyError(f"precompute_codes: the dataset has no 'audio' column (columns: {dataset.column_names})")
    if batch_size < 1:
        raise ValueError(f"precompute_codes: batch_size must be >= 1, got {batch_size}")
    base = base_musicgen(model)
    if base.config.audio_encoder.codebook_size > 32767:
        raise ValueError(f"codebook_size={base.config.audio_encoder.codebook_size} does not fit the int16 codes column")
    rate = int(base.config.audio_encoder.sampling_rate)
    cache = None if cache_dir is None else EncodingCache(cache_dir, "encodec-codes", codec_fingerprint(model))

    def encode(batch: dict) -> dict:
        audios = batch["audio"]
        keys = [audio_key(a, rate) for a in audios]

        def fresh(indices: list[int]) -> list[dict[str, torch.Tensor]]:
            return [{"codes": c.to(torch.int16)} for c in encode_audio(model, [audios[i] for i in indices])]

        return {"codes": [t["codes"].numpy() for t in cached_encode(cache, keys, fresh)]}

    features = dataset.features.copy()
    features["codes"] = datasets.Sequence(datasets.Sequence(datasets.Value("int16")))
    if not keep_audio:
        del features["audio"]
    with library_bars_follow_rule():  # the map's own bar, like the package's: none in logs
        out = dataset.with_format("numpy", columns=["audio"], output_all_columns=True).map(
            encode,
            batched=True,
            batch_size=batch_size,
            remove_columns=None if keep_audio else ["audio"],
            features=features,
            # codes depend on the model's weights, which a fingerprint cannot see: never reuse a datasets cache
            new_fingerprint=uuid.uuid4().hex,
            load_from_cache_file=False,
            desc="EnCodec codes",
        )
    out.set_format("numpy", columns=[c for c in ("codes", "audio") if c in out.column_names], output_all_columns=True)
    return out
