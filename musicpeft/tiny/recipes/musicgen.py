"""Train the micro-world's tiny MusicGen: a tiny T5 text encoder + a decoder over the tiny codec's 4 codebooks.

Why this recipe: it is MusicGen's (teacher forcing on the delay pattern, one cross-entropy per
codebook, captions dropped 10 % of the time so classifier-free guidance has an unconditional
model), at a size 2 CPU cores can train in half an hour. Codes are computed once with the trained
codec (as the soft-prompt paper does) and the model learns from random 2 s windows of them; the
delay-pattern labels come from :func:`musicpeft.training.collator.delayed_labels`, the same code
the package's trainers use, so training here matches fine-tuning later.

Only base-instrument captions are seen; the tokenizer still knows the concept words, so "koto"
is a real (untrained) token a soft prompt or concept token can be measured against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import (
    EncodecFeatureExtractor,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    MusicgenProcessor,
    T5Config,
)

from ...training.collator import delayed_labels
from ..tokenizers import make_world_t5_tokenizer
from .loop import Schedule, train_for_budget

CAPTION_DROPOUT = 0.1


def musicgen_config(codec_cfg, text_width: int = 64, width: int = 128, layers: int = 4):
    """MusicgenConfig: tiny T5 (world vocabulary) + decoder over ``codec_cfg``'s codebooks."""
    vocab = len(make_world_t5_tokenizer())
    text = T5Config(vocab_size=vocab, d_model=text_width, d_kv=16, d_ff=2 * text_width, num_layers=2, num_heads=4,
                    decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.0)
    size = codec_cfg.codebook_size
    decoder = MusicgenDecoderConfig(
        vocab_size=size, max_position_embeddings=1024, num_hidden_layers=layers, ffn_dim=4 * width,
        num_attention_heads=4, hidden_size=width, num_codebooks=codec_cfg.num_quantizers, pad_token_id=size,
        bos_token_id=size, decoder_start_token_id=size, audio_channels=1, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0,
    )
    cfg = MusicgenConfig(text_encoder=text, audio_encoder=codec_cfg, decoder=decoder)
    cfg.decoder_start_token_id = size
    cfg.pad_token_id = size
    return cfg


def new_musicgen(codec, seed: int = 0, **kwargs):
    """A MusicgenForConditionalGeneration with random text encoder/decoder and ``codec``'s weights."""
    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(musicgen_config(codec.config, **kwargs))
    model.audio_encoder.load_state_dict(codec.state_dict())
    size = codec.config.codebook_size
    gen = model.generation_config
    gen.decoder_start_token_id = gen.pad_token_id = gen.bos_token_id = size
    gen.max_length = 256
    gen.do_sample = True
    gen.guidance_scale = 3.0
    return model


def musicgen_processor():
    fe = EncodecFeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0)
    return MusicgenProcessor(feature_extractor=fe, tokenizer=make_world_t5_tokenizer())


@torch.no_grad()
def encode_clips(codec, audio: np.ndarray, batch: int = 16) -> np.ndarray:
    """Codes ``[n, K, frames]`` (int16) of equal-length clips ``[n, samples]``."""
    codec.eval()
    out = []
    for s in range(0, len(audio), batch):
        x = torch.from_numpy(np.ascontiguousarray(audio[s: s + batch], dtype=np.float32))[:, None]
        out.append(codec.encode(x).audio_codes[0].to(torch.int16).numpy())
    return np.concatenate(out)


def make_batch(model, tokenizer, codes: np.ndarray, texts: list[str], frames: int | None,
               rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
    """Tokenised texts + delayed labels of ``codes`` ``[B, K, T]`` (a random ``frames`` window when given)."""
    labels = []
    for c in codes:
        if frames is not None and rng is not None and c.shape[1] > frames:
            s = int(rng.integers(0, c.shape[1] - frames + 1))
            c = c[:, s: s + frames]
        labels.append(delayed_labels(model, torch.from_numpy(c.astype(np.int64))))
    tok = tokenizer(texts, padding=True, return_tensors="pt")
    return {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"], "labels": torch.stack(labels)}


@torch.no_grad()
def token_ce(model, tokenizer, codes: np.ndarray, texts: list[str], batch: int = 16) -> float:
    """Mean teacher-forced cross-entropy (nats per code, averaged over codebooks) of whole clips."""
    model.eval()
    total, n = 0.0, 0
    for s in range(0, len(codes), batch):
        b = make_batch(model, tokenizer, codes[s: s + batch], texts[s: s + batch], None, None)
        total += float(model(**b).loss) * len(b["labels"])
        n += len(b["labels"])
    return total / max(n, 1)


def train_musicgen(work, codec, codes: np.ndarray, texts: list[str], minutes: float, batch: int = 16,
                   frames: int = 100, lr: float = 1e-3, seed: int = 0, log=print, checkpoint_every_s: float = 120.0):
    """Train (or resume from ``work/musicgen_ckpt.safetensors``) for ``minutes`` of wall time in all."""
    model = new_musicgen(codec, seed)
    tokenizer = musicgen_processor().tokenizer
    trainable = [p for n, p in model.named_parameters() if not n.startswith("audio_encoder.")]
    for n, p in model.named_parameters():
        p.requires_grad_(not n.startswith("audio_encoder."))
    opt = torch.optim.AdamW(trainable, lr=lr, betas=(0.9, 0.98), weight_decay=0.01)

    def step(rng: np.random.Generator):
        rows = rng.integers(0, len(codes), batch)
        batch_texts = ["" if rng.random() < CAPTION_DROPOUT else texts[r] for r in rows]
        loss = model(**make_batch(model, tokenizer, codes[rows], batch_texts, frames, rng)).loss
        return loss, {"loss": loss}

    info = train_for_budget(Path(work) / "musicgen_ckpt.safetensors", model, opt, step, minutes,
                            Schedule(lr, floor=0.1, warmup_steps=50), seed=seed, max_grad_norm=1.0,
                            clip_params=trainable, tag="musicgen", log=log, checkpoint_every_s=checkpoint_every_s)
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval(), info
