"""Diagnostics of concept identifiers: are two concepts still apart after the text encoder?

DreamStyler (Section 4.3, Fig. 3b) measures the cosine similarity of two concepts' text-encoder outputs, once
for the identifier tokens alone ("Similarity T": prompts `<a>` and `<b>`) and once with a description
("Similarity T+P": `<a>, description` and `<b>, description`). One token per concept ends above 99%
(tokens alone) and 60% (with a description); several tokens per concept bring both down. Values near 1
warn that the two concepts will collapse into one when generated together.
"""

from __future__ import annotations

from typing import Any

import torch

from ...adapters.base import bound_tokenizers, is_pipeline, unwrap_peft
from ...families import family_of, get_submodule
from .config import placeholder
from .weights import execution_device


def _encoder_and_tokenizer(model_or_pipe: Any, text_encoder: str | None, processor: Any) -> tuple[Any, Any]:
    if is_pipeline(model_or_pipe):
        slot = family_of(model_or_pipe).text_encoder(text_encoder)
        return get_submodule(model_or_pipe, slot.module), getattr(model_or_pipe, slot.tokenizer)
    base = unwrap_peft(model_or_pipe)
    slot = family_of(base).text_encoder(text_encoder)
    tokenizer = getattr(processor, "tokenizer", processor) if processor is not None else None
    tokenizer = tokenizer or bound_tokenizers(base).get(slot.name)
    if tokenizer is None:
        raise ValueError("Pass the processor (or bind it with musicpeft.bind_processor) to tokenize prompts.")
    return get_submodule(base, slot.module), tokenizer


@torch.no_grad()
def encode_prompts(model_or_pipe: Any, prompts: list[str], *, text_encoder: str | None = None,
                   processor: Any = None) -> torch.Tensor:
    """One vector per prompt: the text encoder's output, mean-pooled over the prompt's tokens `[n, width]`.

    Placeholders expand as everywhere else (the tokenizer does it), so the active adapter's identifier
    tokens are what gets encoded.
    """
    encoder, tokenizer = _encoder_and_tokenizer(model_or_pipe, text_encoder, processor)
    device = execution_device(encoder.get_input_embeddings())  # an offloaded encoder computes elsewhere
    batch = tokenizer(prompts, padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state.float()
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def concept_similarity(model_or_pipe: Any, first: str, second: str, description: str | None = None, *,
                       text_encoder: str | None = None, processor: Any = None) -> dict[str, float]:
    """Cosine similarity of two concepts' text-encoder outputs: tokens alone, and tokens + description.

    `first`/`second` are concept names (`"koto"`, not `"<koto>"`). Returns `{"tokens": ...}`, plus
    `{"tokens+description": ...}` when a description is given (paper: "Similarity T" and "T+P").
    """
    prompts = [placeholder(first), placeholder(second)]
    if description:
        prompts += [f"{placeholder(first)}, {description}", f"{placeholder(second)}, {description}"]
    vectors = encode_prompts(model_or_pipe, prompts, text_encoder=text_encoder, processor=processor)
    cosine = torch.nn.functional.cosine_similarity
    out = {"tokens": float(cosine(vectors[0], vectors[1], dim=0))}
    if description:
        out["tokens+description"] = float(cosine(vectors[2], vectors[3], dim=0))
    return out
