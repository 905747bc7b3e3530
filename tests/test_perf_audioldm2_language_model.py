"""AudioLDM2 with a soft prompt runs GPT2 with its key/value cache, and computes what the pipeline's own loop does.

Whether diffusers' own `generate_language_model` loop uses GPT2's cache depends on the transformers version
(0.42.1 under 5.24 reruns GPT2 over the whole growing sequence for each new state; under 5.23 it does not).
`musicpeft.adapters.pipeline_hooks` reads the sequence once and then one position per new state, whatever the
versions; these tests hold it to the values of the pipeline's loop.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

import musicpeft
from musicpeft.adapters import pipeline_hooks
from musicpeft.tiny.audioldm2 import tiny_audioldm2_pipeline


def _lengths_seen(module: torch.nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    seen: list[int] = []

    def hook(_module, args, kwargs):
        seen.append(kwargs["inputs_embeds"].shape[1])

    return seen, module.register_forward_pre_hook(hook, with_kwargs=True)


def test_cached_generation_equals_the_pipelines_loop_and_reads_the_sequence_once():
    pipe = tiny_audioldm2_pipeline(seed=0)
    lm = pipe.language_model
    torch.manual_seed(0)
    embeds = torch.randn(2, 12, lm.config.n_embd)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 7:10] = 0  # a padded row, as the negative pass pads to the prompted length
    seen, handle = _lengths_seen(lm)
    try:
        with torch.no_grad():
            reference = pipe.generate_language_model(embeds, max_new_tokens=8, attention_mask=mask)
            uncached = list(seen)
            seen.clear()
            cached = pipeline_hooks._generate_with_cache(lm, embeds, 8, mask)
    finally:
        handle.remove()
    assert uncached in (list(range(12, 20)), [12] + [1] * 7)  # the shipped loop, without or with the cache
    assert seen == [12] + [1] * 7
    assert cached.shape == reference.shape == (2, 8, lm.config.n_embd)
    torch.testing.assert_close(cached, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_soft_prompt_encode_prompt_with_the_cache_equals_it_without(monkeypatch, guidance):
    pipe = tiny_audioldm2_pipeline(seed=0)
    musicpeft.add_adapter(pipe, musicpeft.SoftMusicPromptConfig(num_virtual_tokens=30))
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()

    def encode():
        with torch.no_grad():
            return pipe.encode_prompt(["a slow koto melody"], torch.device("cpu"), 2, guidance > 1)

    seen, handle = _lengths_seen(pipe.language_model)
    try:
        cached = encode()
        cached_lengths = list(seen)
        monkeypatch.setattr(pipeline_hooks, "_cached_language_model", lambda pipe: contextlib.nullcontext())
        seen.clear()
        reference = encode()
    finally:
        handle.remove()
    passes = 2 if guidance > 1 else 1  # conditional, and the negative one with guidance
    assert cached_lengths.count(1) == 7 * passes and len(cached_lengths) == 8 * passes
    assert sum(cached_lengths) <= sum(seen)
    assert len(cached) == len(reference)
    for got, want in zip(cached, reference, strict=True):
        if isinstance(want, torch.Tensor) and want.is_floating_point():
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        else:
            assert torch.equal(got, want) if isinstance(want, torch.Tensor) else got == want


def test_perf_audioldm2_rows_measure_encode_generation_and_training():
    """`benchmarks/perf.py --audioldm2`: one soft-prompt child gives finite paired ratios and a timed train step."""
    import math
    import sys
    from pathlib import Path

    benchmarks = str(Path(__file__).resolve().parent.parent / "benchmarks")
    sys.path.insert(0, benchmarks)
    try:
        import perf
    finally:
        sys.path.remove(benchmarks)
    result = perf.measure_audioldm2("soft_prompt", 1, 0)
    assert result["train_seconds_of_audio"] == perf.AUDIOLDM2_TRAIN_SECONDS["tiny"]
    width = tiny_audioldm2_pipeline(seed=0).text_encoder_2.get_input_embeddings().weight.shape[1]
    assert result["trainable"] == 30 * width
    for key in ("encode_pair_ratios", "generate_pair_ratios", "train_step_s", "train_step_lora_s", "train_pair_ratios"):
        assert len(result[key]) == 1 and math.isfinite(result[key][0]) and result[key][0] > 0, key
    assert result["train_pair_ratios"][0] == result["train_step_s"][0] / result["train_step_lora_s"][0]
    row = perf.audioldm2_table({"soft_prompt": result}).splitlines()[-1]
    assert row.startswith("| `soft_prompt` | ") and row.endswith(f"| {result['train_pair_ratios'][0]:.2f}× "
                                                               f"({result['train_step_s'][0] * 1000:.0f} ms) |")


def test_the_published_shape_has_the_published_sizes():
    """`perf.py --size small --audioldm2` times a pipeline of cvssp/audioldm2-music's shape (built on `meta`).

    The model card gives a 350 M U-Net and 1.1 B in all; FLAN-T5-large's encoder and GPT2 base have known sizes.
    """
    import sys
    from pathlib import Path

    benchmarks = str(Path(__file__).resolve().parent.parent / "benchmarks")
    sys.path.insert(0, benchmarks)
    try:
        from audioldm2_shaped import audioldm2_shaped_components, component_sizes
    finally:
        sys.path.remove(benchmarks)
    with torch.device("meta"):
        sizes = component_sizes(audioldm2_shaped_components())
    assert sizes["unet"] == pytest.approx(350e6, rel=0.03)
    assert sizes["text_encoder_2"] == pytest.approx(341.2e6, rel=0.01)  # FLAN-T5-large encoder
    assert sizes["language_model"] == pytest.approx(124.4e6, rel=0.01)  # GPT2 base
    assert sum(sizes.values()) == pytest.approx(1.1e9, rel=0.05)
