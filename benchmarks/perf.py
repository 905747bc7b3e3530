"""Where users wait: every musicpeft method against the base model and against stock LoRA, in one run.

For each method this measures, on a MusicGen model with random weights (no download), as ratios:

- generation time, greedy (`guidance_scale=1`) and with classifier-free guidance (`guidance_scale=3`),
  `max_new_tokens` frames, audio decoded (what a user waits for): ×base and ×LoRA;
- training-step time (forward with labels, backward, `AdamW.step()`, `zero_grad`): ×LoRA (the base alone
  has nothing to train);
- training memory: peak RSS from just before the adapter is attached to the end of the timed steps, minus
  the RSS at that point (the adapter's weights, gradients, AdamW state and the activations kept for the
  backward pass): ×LoRA;
- the adapter file against its floor, the number of trainable values × bytes per value (a file that
  stores only what trains, in the training dtype, has ratio 1.00);
- load time, `musicpeft.load_adapter` onto an already-built base (full fine-tuning: reading the decoder's
  safetensors file and `load_state_dict`): ×LoRA;
- and, once per run, how many times the EnCodec encoder runs in a second epoch of `musicpeft train`
  (target 0: codes cached once per dataset).

Times are CPU seconds of the measuring process (`time.process_time`) with one torch thread: on a shared
machine wall time grows with everyone else's load, CPU time much less; on an idle machine they agree (both
are kept in `--json`).

How. The parent process imports everything and builds the base model once, with one torch thread, and
then forks one child per method and round: each child attaches its method through the public API
(`musicpeft.add_adapter`, `musicpeft.load_adapter`), so the benchmark measures whatever the library does
today. Generation is timed against an untouched copy of the base (made in the child before attaching),
the two generating in turn, and ×base is the median of those paired ratios: a pair sees the same machine
load. The base child times the base against its own copy, and `full_ft` generates with exactly the base's
computation: their paired ratios measure the noise, and
a target closer to its limit than that is reported as within noise. ×LoRA divides a method's ratio by
LoRA's. Rounds visit the methods in alternating order (forward, then backward); other times are the fastest
sample over rounds × repeats (as `timeit` reports: other processes only add time), memory the median. Peak RSS is the
kernel's high-water mark (`VmHWM`, reset through `/proc/self/clear_refs` right before attaching; where
that is not possible the child's `ru_maxrss` is used and the table says so). `tracemalloc` is not used:
it sees only Python's allocator, not torch's tensor memory. A forked child shares the base's pages with
the parent, so its RSS counts the base once and the difference is that method's alone.

Sizes: `tiny` is `musicpeft.tiny.tiny_musicgen` (seconds; CI runs it); `small` is the MusicGen-small
shape of `benchmarks/methods_footprint.py` (T5-base encoder, 24-layer 1024-wide decoder, 32 kHz EnCodec;
about 7 minutes of one core's CPU time; `full_ft` is left out at that size unless asked for, see `Size.skip`).
Work per child: the training warm-up step and `repeats` timed steps; per generating player (the method and
its base copy) and guidance scale, one 2-token warm-up and `repeats` timed generations.

AudioLDM2 (`--audioldm2`; `--audioldm2-only` skips MusicGen): base, soft prompt, concept tokens, unmerged
pivotal and LoRA on the tiny pipeline (`--size tiny`) or on one shaped like cvssp/audioldm2-music
(`--size small`, random weights, see `benchmarks/audioldm2_shaped.py`; its training step runs on 10.24 s of
audio), each timed in pairs in one process: generation against a copy of the base, training against LoRA.

    .venv/bin/python benchmarks/perf.py --size tiny
    nice -n 10 .venv/bin/python benchmarks/perf.py --size small --json perf-small.json
    nice -n 10 .venv/bin/python benchmarks/perf.py --size small --audioldm2-only
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

# Run as a script, Python puts benchmarks/ on the path: the shared model and method definitions come from there.
from audioldm2_shaped import audioldm2_shaped_pipeline
from methods_footprint import (
    LORA_RANK,
    PIVOTAL_PERCENT,
    adapt,
    build_model,
    human_bytes,
    peak_kb,
    reset_peak_rss,
    status_kb,
)

from musicpeft.io import atomic_write, atomic_write_json, atomic_write_text

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the parent forks after using a tokenizer

TEXT = "a slow koto melody with soft piano and bright strings"
CONCEPT_TEXT = "a slow <koto> melody with soft piano and bright strings"  # `<koto>`: 3 identifier tokens
LORA_REFERENCE = "lora_attn"  # stock peft LoRA (r=16) on the decoder's self- and cross-attention
GUIDANCE = 3.0

# What docs/performance.md promises; the report says for each whether today's numbers meet it.
TARGETS = [
    ("soft_prompt", "gen_greedy_vs_base", 1.03, "soft prompt generation ≤ 1.03× base (greedy)"),
    ("soft_prompt", "gen_cfg_vs_base", 1.03, "soft prompt generation ≤ 1.03× base (guidance 3)"),
    ("concept_tokens", "gen_greedy_vs_base", 1.03, "concept tokens generation ≤ 1.03× base (greedy)"),
    ("concept_tokens", "gen_cfg_vs_base", 1.03, "concept tokens generation ≤ 1.03× base (guidance 3)"),
    ("pivotal_unmerged", "gen_greedy_vs_base", 1.05, "pivotal (unmerged) generation ≤ 1.05× base (greedy)"),
    ("pivotal_unmerged", "gen_cfg_vs_base", 1.05, "pivotal (unmerged) generation ≤ 1.05× base (guidance 3)"),
    ("pivotal_unmerged", "train_mem_vs_lora", 1.2, "pivotal train-step memory ≤ 1.2× LoRA's"),
]


@dataclass
class Size:
    """One benchmark size: the model and how much work each measurement does."""

    name: str
    max_new_tokens: int
    frames: int  # audio frames of the training example (50 Hz at full size)
    repeats: int  # timed generations (each kind) and timed train steps per child, after one warm-up
    rounds: int
    # Methods left out unless `--methods` names them, with the reason the report prints.
    skip: dict[str, str] = field(default_factory=dict)


SIZES = {
    "tiny": Size("tiny", max_new_tokens=24, frames=40, repeats=3, rounds=2),
    "small": Size(
        "small",
        max_new_tokens=20,
        frames=75,
        repeats=2,
        rounds=1,
        skip={
            "full_ft": (
                "left out at this size unless `--methods full_ft` asks for it: its training step holds about 5 GB "
                "(weights, gradients and two AdamW moments of the whole decoder) and is the slowest child; "
                "it is no target, and its other role, the noise control, is played by the base timed against "
                "its own copy"
            )
        },
    ),
}
# Warm-up generations in each child are this many tokens long: the parent has already run a full-length
# greedy and guided generation before forking (lazy initialisation, allocator growth, kernel selection are
# inherited), so a child's warm-up only has to touch the adapter's own code paths once.
CHILD_WARMUP_TOKENS = 2


def method_names() -> list[str]:
    """Table order: base, the cheap methods, LoRA presets (from the family, so new presets show up), full FT."""
    from musicpeft.training.presets import list_presets

    lora = [f"lora_{preset}" for preset in list_presets("musicgen")]
    return ["base", "soft_prompt", "concept_tokens", "pivotal_unmerged", *lora, "full_ft"]


def describe(name: str) -> str:
    return {
        "base": "the model without adapter",
        "soft_prompt": "SoftMusicPromptConfig(num_virtual_tokens=30)",
        "concept_tokens": "ConceptIdentifierConfig(concepts=['koto'])",
        "pivotal_unmerged": (
            f"PivotalMaskConfig(stage='tune', selection='random', percent={PIVOTAL_PERCENT:g}), unmerged"
        ),
        "full_ft": "prepare_full_finetune (the whole decoder)",
    }.get(name, f"lora_config(model, {name[5:]!r}, r={LORA_RANK}) (stock peft LoRA)")


# ------------------------------------------------------------------------------------------------ the model


def build_base(size: str, seed: int = 0) -> Any:
    """The base model, eval mode, every weight frozen; the same weights for a given seed."""
    import torch

    if size == "tiny":
        from musicpeft.tiny import tiny_musicgen

        model = tiny_musicgen(seed=seed)
    else:
        model = build_model(None, seed)
    torch.manual_seed(seed)
    return model.eval().requires_grad_(False)


def attach(name: str, model: Any, tokenizer: Any) -> tuple[Any, str]:
    """Adapt `model` for `name` through the public API; returns (what to run, its prompt)."""
    if name not in method_names():
        raise ValueError(f"unknown method {name!r}; known: {', '.join(method_names())}")
    if name == "base":
        return model, TEXT
    kind = {"pivotal_unmerged": "pivotal_random", "full_ft": "full_decoder"}.get(name, name)
    return adapt(kind, model, tokenizer), CONCEPT_TEXT if name in ("concept_tokens", "pivotal_unmerged") else TEXT


# ---------------------------------------------------------------------------------------------- measuring


def _timed(fn, walls: list[float] | None = None) -> float:
    """CPU seconds of this process running `fn` (wall seconds appended to `walls`).

    With one torch thread, CPU time is what the work costs and it does not grow when other processes compete
    for the cores (wall time on a shared machine does); on an idle machine the two agree.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if walls is not None:
        walls.append(time.perf_counter() - wall)
    return time.process_time() - cpu


def measure_method(name: str, base: Any, size: Size, workdir: str, seed: int) -> dict[str, Any]:
    """In a forked child: attach, train (time + memory), generate (greedy, guided), save; one dict back."""
    import torch

    from musicpeft.tiny import make_t5_tokenizer
    from musicpeft.training.collator import MusicgenCollator

    tokenizer = make_t5_tokenizer()
    out: dict[str, Any] = {"method": name}
    # An untouched copy of the base to time generation against, made before the memory baseline is taken.
    # The base child times the base against its copy too: the same computation twice, so its paired ratios
    # are what noise alone does to a ratio in this run.
    reference = copy.deepcopy(base)
    gc_collect()
    resettable = reset_peak_rss()
    rss_before_kb = status_kb("VmRSS") or 0
    runner, text = attach(name, base, tokenizer)
    params = [p for p in runner.parameters() if p.requires_grad]
    out["trainable"] = sum(p.numel() for p in params)
    out["trainable_bytes"] = sum(p.numel() * p.element_size() for p in params)

    if params:
        codes = torch.randint(
            0,
            base.config.decoder.vocab_size,
            (base.decoder.num_codebooks, size.frames),
            generator=torch.Generator().manual_seed(seed),
        )
        batch = MusicgenCollator(tokenizer, runner)([{"codes": codes, "text": text}])
        optimizer = torch.optim.AdamW(params, lr=1e-5)
        runner.train()

        def step() -> None:
            runner(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step()  # warm-up; also allocates the AdamW state
        out["train_step_wall_s"] = []
        out["train_step_s"] = [_timed(step, out["train_step_wall_s"]) for _ in range(size.repeats)]
        out["train_mem_bytes"] = (peak_kb(resettable) - rss_before_kb) * 1024
        out["peak_scope"] = "VmHWM since attach" if resettable else "ru_maxrss of the child"
        del optimizer
        runner.eval()

    # The method and its untouched base copy generate in turn, so each pair sees the same machine load.
    # The base knows no identifier tokens: its copy gets the plain prompt.
    players = {"method": (runner, tokenizer([text], return_tensors="pt"))}
    players["base"] = (reference, tokenizer([TEXT], return_tensors="pt"))
    gen = {"greedy": 1.0, "cfg": GUIDANCE}

    def generate(who: str, scale: float, tokens: int = size.max_new_tokens) -> None:
        model, inputs = players[who]
        with torch.no_grad():
            model.generate(**inputs, do_sample=False, guidance_scale=scale, max_new_tokens=tokens)

    for who in players:
        for scale in gen.values():
            generate(who, scale, min(CHILD_WARMUP_TOKENS, size.max_new_tokens))  # warm-up (see CHILD_WARMUP_TOKENS)
    times = {(who, kind): [] for who in players for kind in gen}
    walls = {(who, kind): [] for who in players for kind in gen}
    for _ in range(size.repeats):
        for kind, scale in gen.items():
            for who in players:
                times[who, kind].append(_timed(lambda w=who, s=scale: generate(w, s), walls[who, kind]))
    for kind in gen:
        out[f"gen_{kind}_s"], out[f"gen_{kind}_wall_s"] = times["method", kind], walls["method", kind]
        out[f"gen_{kind}_base_s"] = times["base", kind]
        out[f"gen_{kind}_pair_ratios"] = [
            a / b for a, b in zip(times["method", kind], times["base", kind], strict=True)
        ]

    if params:
        folder = os.path.join(workdir, name)
        if name == "full_ft":
            from safetensors.torch import save_file

            os.makedirs(folder, exist_ok=True)
            state = {k: v.detach().contiguous() for k, v in base.decoder.state_dict().items()}
            save_file(state, os.path.join(folder, "decoder.safetensors"), metadata={"format": "pt"})
            out["weights_file"] = "decoder.safetensors"
        else:
            import musicpeft

            musicpeft.save_adapter(runner, folder)
            out["weights_file"] = "adapter_model.safetensors"
        out["adapter_bytes"] = os.path.getsize(os.path.join(folder, out["weights_file"]))
        out["folder"] = folder
    return out


def measure_load(name: str, base: Any, folder: str) -> dict[str, Any]:
    """In a forked child holding the untouched base: time loading `name`'s saved adapter onto it."""
    import musicpeft
    from musicpeft.tiny import make_t5_tokenizer

    if name == "full_ft":
        from safetensors.torch import load_file

        def load() -> None:
            base.decoder.load_state_dict(load_file(os.path.join(folder, "decoder.safetensors")))

        return {"load_s": _timed(load)}
    kwargs = {"processor": make_t5_tokenizer()} if name in ("concept_tokens", "pivotal_unmerged") else {}
    return {"load_s": _timed(lambda: musicpeft.load_adapter(base, folder, **kwargs))}


def gc_collect() -> None:
    import gc

    gc.collect()


def in_child(fn, *args) -> dict[str, Any]:
    """Run `fn(*args)` in a forked child (sharing the parent's base model copy-on-write); its dict comes back."""
    fd, path = tempfile.mkstemp(prefix="perf-result-", suffix=".json")
    os.close(fd)
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            warnings.simplefilter("ignore")  # library deprecation notices would drown the progress lines
            result = fn(*args)
        except BaseException as exc:  # report, never hang the parent
            result = {"error": f"{type(exc).__name__}: {exc}"[:300], "traceback": traceback.format_exc()[-3000:]}
            code = 1
        try:
            atomic_write_json(path, result, indent=None)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    try:
        with open(path) as handle:
            text = handle.read()
        return json.loads(text) if text else {"error": f"child exited with status {status} and no result"}
    finally:
        os.unlink(path)


# ------------------------------------------------------------------------------------ second-epoch encoding


def encoder_calls_second_epoch(workdir: str, seed: int = 0) -> dict[str, Any]:
    """EnCodec encoder calls that `musicpeft train` makes in its second epoch, on an audio folder (tiny model).

    Counted as calls(2 epochs) − calls(1 epoch) of `EncodecModel.encode`, so evaluation and any caching done
    before training are attributed correctly: only work the second epoch adds is counted.
    """
    import numpy as np
    import soundfile as sf
    from transformers import EncodecModel

    from musicpeft.cli import main as cli_main

    data = os.path.join(workdir, "clips")
    os.makedirs(data, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for i in range(6):
        tone = 0.3 * np.sin(2 * np.pi * (220 + 40 * i) * np.arange(16000) / 16000)
        clip = (tone + 0.01 * rng.standard_normal(16000)).astype("float32")
        atomic_write(os.path.join(data, f"clip{i}.wav"), lambda tmp, clip=clip: sf.write(tmp, clip, 16000))
        records.append(json.dumps({"path": f"clip{i}.wav", "description": f"a koto tone number {i}"}) + "\n")
    atomic_write_text(os.path.join(data, "metadata.jsonl"), "".join(records))

    calls = {"n": 0}
    original = EncodecModel.encode

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        return original(self, *args, **kwargs)

    EncodecModel.encode = counting
    counts = {}
    try:
        for epochs in (1, 2):
            calls["n"] = 0
            args = [
                "train",
                "--base",
                "tiny-musicgen",
                "--data",
                data,
                "--method",
                "lora:attn",
                "--epochs",
                str(epochs),
                "--batch-size",
                "2",
                "--clip-seconds",
                "1",
                "--eval-fraction",
                "0.2",
                "--seed",
                str(seed),
                "--output-dir",
                os.path.join(workdir, f"train-{epochs}"),
                # A fresh encode cache per run: the 2-epoch run must not reuse what the 1-epoch run cached.
                "--encode-cache",
                os.path.join(workdir, f"encoded-{epochs}"),
            ]
            _quiet(lambda a=args: cli_main(a))
            counts[epochs] = calls["n"]
    finally:
        EncodecModel.encode = original
    return {
        "encoder_calls_epoch1_run": counts[1],
        "encoder_calls_epoch2_run": counts[2],
        "encoder_calls_second_epoch": counts[2] - counts[1],
    }


def _quiet(fn) -> None:
    """Run `fn` with stdout/stderr sent to /dev/null (the CLI prints progress bars and a summary)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(1), os.dup(2)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        result = fn()
        if result not in (None, 0):
            raise RuntimeError(f"musicpeft train exited with {result}")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(devnull)
        for fd in saved:
            os.close(fd)


# ---------------------------------------------------------------------------------------------- AudioLDM2

AUDIOLDM2_METHODS = ("base", "soft_prompt", "concept_tokens", "pivotal_unmerged", LORA_REFERENCE)
AUDIOLDM2_STEPS = 4  # denoising steps per timed pipeline call (the tiny U-Net; the ratio is per call)


# Seconds of audio in an AudioLDM2 training step: 1 s on the tiny pipeline; 10.24 s (the fine-tuning paper's
# 163,840 samples, `musicpeft train`'s default) on the published shape.
AUDIOLDM2_TRAIN_SECONDS = {"tiny": 1.0, "small": 10.24}


def audioldm2_pipeline(size: str, seed: int) -> Any:
    """The tiny AudioLDM2 pipeline, or (`small`) one shaped like cvssp/audioldm2-music (`audioldm2_shaped.py`)."""
    if size == "tiny":
        from musicpeft.tiny.audioldm2 import tiny_audioldm2_pipeline

        return tiny_audioldm2_pipeline(seed=seed)
    return audioldm2_shaped_pipeline(seed=seed)


def measure_audioldm2(name: str, repeats: int, seed: int, size: str = "tiny") -> dict[str, Any]:
    """In a forked child: the AudioLDM2 pipeline of `size` with `name` attached, against an untouched copy.

    Times (CPU seconds, paired and interleaved as for MusicGen): `encode_prompt` with guidance (the text
    encoders, the projection and GPT2's 8 new states, conditional and negative), a whole pipeline call with
    guidance 3 (`AUDIOLDM2_STEPS` denoising steps, 1 s of audio), and, for the adapted methods, a training step
    (`diffusion_loss`, backward, AdamW) on `AUDIOLDM2_TRAIN_SECONDS` of audio, paired with stock LoRA's step on
    the copy. The clip's VAE latents come from the on-disk cache that `musicpeft train` keeps (filled by the
    warm-up step), as in every epoch after the first: the step is text encoders, U-Net and optimizer.
    """
    import torch

    import musicpeft
    from musicpeft.training.diffusion import _noise_scheduler, diffusion_loss, latent_cache_for, resolve_trainable
    from musicpeft.training.presets import lora_config

    pipe = audioldm2_pipeline(size, seed)
    reference = copy.deepcopy(pipe)
    configs = {
        "soft_prompt": lambda: musicpeft.SoftMusicPromptConfig(num_virtual_tokens=30),
        "concept_tokens": lambda: musicpeft.ConceptIdentifierConfig(concepts=["koto"]),
        "pivotal_unmerged": lambda: musicpeft.PivotalMaskConfig(
            concepts=["koto"], stage="tune", selection="random", percent=PIVOTAL_PERCENT, selection_seed=0
        ),
        LORA_REFERENCE: lambda: lora_config(pipe, "attn", r=LORA_RANK),
    }
    if name in configs:
        musicpeft.add_adapter(pipe, configs[name]())

    def eval_mode(p: Any) -> None:  # an attached adapter's new layers start in training mode
        for component in p.components.values():
            if isinstance(component, torch.nn.Module):
                component.eval()

    eval_mode(pipe)
    cpu = torch.device("cpu")
    # As for MusicGen: the concept methods' prompt names `<koto>`; the base knows no identifier tokens.
    text = CONCEPT_TEXT if name in ("concept_tokens", "pivotal_unmerged") else TEXT

    def encode(p: Any) -> None:
        with torch.no_grad():
            p.encode_prompt([text if p is pipe else TEXT], cpu, 1, True)

    def generate(p: Any) -> None:
        with torch.no_grad():
            p(
                [text if p is pipe else TEXT],
                audio_length_in_s=1.0,
                guidance_scale=GUIDANCE,
                num_inference_steps=AUDIOLDM2_STEPS,
                generator=torch.Generator().manual_seed(seed),
            )

    out: dict[str, Any] = {"method": name}
    for kind, fn in (("encode", encode), ("generate", generate)):
        fn(pipe), fn(reference)  # warm-up
        pairs = [(_timed(lambda f=fn: f(pipe)), _timed(lambda f=fn: f(reference))) for _ in range(repeats)]
        out[f"{kind}_s"] = [a for a, _ in pairs]
        out[f"{kind}_pair_ratios"] = [a / b for a, b in pairs]
    # The base trains nothing (the tiny pipeline's modules are not frozen until an adapter is attached).
    params = [] if name == "base" else list(resolve_trainable(pipe).values())
    out["trainable"] = sum(p.numel() for p in params)
    if params:
        scheduler = _noise_scheduler(pipe)
        rate = pipe.vocoder.config.sampling_rate
        samples = round(AUDIOLDM2_TRAIN_SECONDS[size] * rate)
        waveform = torch.randn(1, samples, generator=torch.Generator().manual_seed(seed)) * 0.1
        out["train_seconds_of_audio"] = samples / rate
        # Training is timed against stock LoRA in this same process: the untouched copy, done generating, gets
        # LoRA, and the two step in turn, so each pair sees the same machine load (steps of separate processes
        # differed by up to 30 % from run to run). In the LoRA child it is LoRA against LoRA: the noise.
        musicpeft.add_adapter(reference, lora_config(reference, "attn", r=LORA_RANK))
        eval_mode(reference)
        players = {
            "method": (pipe, text, torch.optim.AdamW(params, lr=1e-5)),
            "lora": (reference, TEXT, torch.optim.AdamW(resolve_trainable(reference).values(), lr=1e-5)),
        }
        with tempfile.TemporaryDirectory(prefix="perf-latents-") as cache_dir:
            caches = {who: latent_cache_for(p, cache_dir) for who, (p, _, _) in players.items()}

            def step(who: str) -> None:
                p, prompt, optimizer = players[who]
                diffusion_loss(p, waveform, [prompt], scheduler, latent_cache=caches[who]).mean().backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            step("method"), step("lora")  # warm-up (and the clip's latents into the cache)
            pairs = [(_timed(lambda: step("method")), _timed(lambda: step("lora"))) for _ in range(repeats)]
        out["train_step_s"] = [a for a, _ in pairs]
        out["train_step_lora_s"] = [b for _, b in pairs]
        out["train_pair_ratios"] = [a / b for a, b in pairs]
    return out


# An AudioLDM2-shaped GPT2 prefix: CLAP (sos, 1, eos) + T5 (sos, 12 tokens, eos); a soft prompt adds 30.
LM_PREFIX = {"base": 17, "soft_prompt": 47}


def audioldm2_language_model(repeats: int, seed: int) -> dict[str, Any]:
    """In a forked child: AudioLDM2's GPT2 shape (12 layers, 768 wide, random weights) making its 8 new states
    over the base's and the soft prompt's prefix, with the pipeline's own loop (which, under transformers 5,
    reruns GPT2 over the whole sequence for each state) and with the key/value cache musicpeft's prompted
    `encode_prompt` uses. CPU seconds; also the largest difference between the two."""
    import torch
    from transformers import GPT2Config, GPT2Model

    from musicpeft.adapters.pipeline_hooks import _generate_with_cache

    torch.manual_seed(seed)
    lm = GPT2Model(GPT2Config(n_embd=768, n_layer=12, n_head=12)).eval().requires_grad_(False)

    def uncached(x: Any, mask: Any, n: int = 8) -> Any:  # diffusers' generate_language_model, as it runs
        for _ in range(n):
            h = lm(inputs_embeds=x, attention_mask=mask, use_cache=False, output_hidden_states=True).hidden_states[-1]
            x = torch.cat([x, h[:, -1:]], 1)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
        return x[:, -n:]

    out: dict[str, Any] = {}
    for name, length in LM_PREFIX.items():
        x = torch.randn(1, length, 768, generator=torch.Generator().manual_seed(seed))
        mask = torch.ones(1, length, dtype=torch.long)
        variants = {
            "uncached": lambda x=x, mask=mask: uncached(x, mask),
            "cached": lambda x=x, mask=mask: _generate_with_cache(lm, x, 8, mask),
        }
        with torch.no_grad():
            out[f"{name}_max_difference"] = float((variants["uncached"]() - variants["cached"]()).abs().max())
            for key, fn in variants.items():
                out[f"{name}_{key}_s"] = [_timed(fn) for _ in range(repeats)]
    return out


def language_model_line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"AudioLDM2-shaped GPT2: failed ({r['error']})"
    cells = [
        f"{name} prefix {length}: {_ms(_best(r[f'{name}_uncached_s']))} uncached, "
        f"{_ms(_best(r[f'{name}_cached_s']))} with the cache (max difference {r[f'{name}_max_difference']:.1e})"
        for name, length in LM_PREFIX.items()
    ]
    return "AudioLDM2-shaped GPT2 (12 layers, 768 wide), 8 new states, one pass, fastest of the repeats: " + "; ".join(
        cells
    )


def audioldm2_table(results: dict[str, dict[str, Any]], size: str = "tiny") -> str:
    """Rows of the AudioLDM2 comparison, medians of paired ratios: encode and generation ×base, train step ×LoRA.

    The base row is the base against its copy and the LoRA row's train step LoRA against LoRA: the noise.
    """
    shape = "tiny AudioLDM2" if size == "tiny" else "AudioLDM2-music shape"
    lines = [
        f"| method ({shape}) | trainable | encode_prompt ×base | pipeline call ×base | train step ×LoRA |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| `{name}` | failed: {r['error']} | | | |")
            continue
        enc, gen, train = (_median(r.get(f"{k}_pair_ratios", [])) for k in ("encode", "generate", "train"))
        lines.append(
            f"| `{name}` | {r['trainable']:,} | {_cell(enc, _ms(_best(r['encode_s'])))} "
            f"| {_cell(gen, _ms(_best(r['generate_s'])))} "
            f"| {_cell(train, _ms(_best(r['train_step_s'])) if r.get('train_step_s') else None)} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- report


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _best(values: list[float]) -> float:
    """The fastest sample, as `timeit` reports: other processes only ever add time, never remove it."""
    return min(values) if values else math.nan


def summarize(runs: dict[str, list[dict[str, Any]]], loads: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Per method: the best time and the median memory over rounds × repeats, then ratios to base and LoRA."""
    rows: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        if not results:
            continue
        ok = [r for r in results if "error" not in r]
        if not ok:
            rows[name] = {"error": results[0]["error"] if results else "no result"}
            continue
        first = ok[0]
        row = {
            "config": describe(name),
            "trainable": first["trainable"],
            "gen_greedy_s": _best([t for r in ok for t in r["gen_greedy_s"]]),
            "gen_cfg_s": _best([t for r in ok for t in r["gen_cfg_s"]]),
            "gen_greedy_wall_s": _best([t for r in ok for t in r["gen_greedy_wall_s"]]),
            "gen_cfg_wall_s": _best([t for r in ok for t in r["gen_cfg_wall_s"]]),
            "train_step_s": _best([t for r in ok for t in r.get("train_step_s", [])]),
            "train_mem_bytes": _median([r["train_mem_bytes"] for r in ok if "train_mem_bytes" in r]),
            "load_s": _best(loads.get(name, [])),
            "peak_scope": first.get("peak_scope"),
        }
        if "adapter_bytes" in first:
            row["adapter_bytes"] = first["adapter_bytes"]
            row["floor_bytes"] = first["trainable_bytes"]
            row["file_vs_floor"] = first["adapter_bytes"] / first["trainable_bytes"]
        for kind in ("greedy", "cfg"):
            pairs = [x for r in ok for x in r.get(f"gen_{kind}_pair_ratios", [])]
            row[f"gen_{kind}_vs_base"] = 1.0 if name == "base" else _median(pairs)
        rows[name] = row
    lora = rows.get(LORA_REFERENCE, {})
    for row in rows.values():
        if "error" in row:
            continue
        for kind in ("greedy", "cfg"):  # both measured against their own paired base
            row[f"gen_{kind}_vs_lora"] = _ratio(row[f"gen_{kind}_vs_base"], lora.get(f"gen_{kind}_vs_base"))
        row["train_step_vs_lora"] = _ratio(row["train_step_s"], lora.get("train_step_s"))
        row["train_mem_vs_lora"] = _ratio(row["train_mem_bytes"], lora.get("train_mem_bytes"))
        row["load_vs_lora"] = _ratio(row["load_s"], lora.get("load_s"))
    return rows


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b <= 0:
        return math.nan
    return a / b


def _cell(ratio: float, absolute: str | None = None) -> str:
    if not math.isfinite(ratio):
        return "—"
    return f"{ratio:.2f}×" + (f" ({absolute})" if absolute else "")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


HEADER = (
    "| method | trainable | gen greedy ×base | gen cfg=3 ×base | gen greedy ×LoRA | gen cfg=3 ×LoRA "
    "| train step ×LoRA | train memory ×LoRA | adapter file ×floor | load ×LoRA |"
)


def markdown(rows: dict[str, dict[str, Any]]) -> str:
    lines = [HEADER, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        label = f"`{name}`" + (" (reference)" if name == LORA_REFERENCE else "")
        if "error" in r:
            lines.append(f"| {label} | failed: {r['error']} | | | | | | | | |")
            continue
        mem = r["train_mem_bytes"]
        file_cell = "—"
        if "file_vs_floor" in r:
            adapter, floor = human_bytes(r["adapter_bytes"]), human_bytes(r["floor_bytes"])
            file_cell = f"{r['file_vs_floor']:.2f}× ({adapter} / {floor})"
        lines.append(
            f"| {label} | {r['trainable']:,} "
            f"| {_cell(r['gen_greedy_vs_base'], _ms(r['gen_greedy_s']))} "
            f"| {_cell(r['gen_cfg_vs_base'], _ms(r['gen_cfg_s']))} "
            f"| {_cell(r['gen_greedy_vs_lora'])} | {_cell(r['gen_cfg_vs_lora'])} "
            f"| {_cell(r['train_step_vs_lora'], _ms(r['train_step_s']) if math.isfinite(r['train_step_s']) else None)} "
            f"| {_cell(r['train_mem_vs_lora'], human_bytes(mem) if math.isfinite(mem) else None)} "
            f"| {file_cell} | {_cell(r['load_vs_lora'], _ms(r['load_s']) if math.isfinite(r['load_s']) else None)} |"
        )
    return "\n".join(lines)


# Methods whose generation is exactly the base's computation: their paired ratios show noise alone.
NOISE_CONTROLS = ("base", "full_ft")


def control_ratios(runs: dict[str, list[dict[str, Any]]], kind: str) -> list[float]:
    """Paired generation ratios of the noise controls (base vs its copy, full fine-tuning vs the base)."""
    return [
        x
        for name in NOISE_CONTROLS
        for r in runs.get(name, [])
        if "error" not in r
        for x in r.get(f"gen_{kind}_pair_ratios", [])
    ]


def noise_band(runs: dict[str, list[dict[str, Any]]], key: str) -> float:
    """Largest distance from 1 of the noise controls' paired generation ratios for `key` (0 when not measured)."""
    kind = key.split("_")[1]  # gen_greedy_vs_base -> greedy
    return max((abs(x - 1) for x in control_ratios(runs, kind)), default=0.0)


def target_lines(
    rows: dict[str, dict[str, Any]], encoder: dict[str, Any] | None, runs: dict[str, list[dict[str, Any]]] | None = None
) -> list[str]:
    out = []
    for method, key, limit, text in TARGETS:
        value = rows.get(method, {}).get(key, math.nan)
        verdict = "not measured" if not math.isfinite(value) else ("met" if value <= limit else "NOT met")
        band = noise_band(runs or {}, key) if key.startswith("gen_") else 0.0
        if math.isfinite(value) and abs(value - limit) <= band:
            verdict += f", but within this run's noise (±{band:.2f}) of the limit"
        shown = f"{value:.2f}×" if math.isfinite(value) else "—"
        out.append(f"- {text}: {shown} — {verdict}")
    if encoder is None:
        out.append("- second epoch EnCodec encoder calls = 0: not measured (--skip-encoder-check)")
    elif "error" in encoder:
        out.append(f"- second epoch EnCodec encoder calls = 0: measurement failed ({encoder['error']})")
    else:
        n = encoder["encoder_calls_second_epoch"]
        out.append(
            f"- second epoch EnCodec encoder calls = 0: {n} — {'met' if n == 0 else 'NOT met'} "
            f"(`musicpeft train` on 6 one-second clips: {encoder['encoder_calls_epoch1_run']} calls for 1 "
            f"epoch, {encoder['encoder_calls_epoch2_run']} for 2)"
        )
    return out


# ------------------------------------------------------------------------------------------------- driver


def run(
    size: Size, methods: list[str], seed: int, encoder_check: bool, log=print, partial_json: str | None = None
) -> dict[str, Any]:
    """Every method × round in forked children; with `partial_json`, the measurements so far are written
    there after each child, so a long run that is stopped still leaves what it measured."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(1)  # before any op: a fork after a multi-threaded OpenMP region can hang
    start = time.perf_counter()
    load_average = os.getloadavg()
    base = build_base(size.name, seed)
    warm_up(base, size)
    workdir = tempfile.mkdtemp(prefix="musicpeft-perf-")
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    loads: dict[str, list[float]] = {m: [] for m in methods}
    try:
        for round_index in range(size.rounds):
            order = methods if round_index % 2 == 0 else list(reversed(methods))
            for name in order:
                result = in_child(measure_method, name, base, size, workdir, seed + round_index)
                runs[name].append(result)
                if "error" in result:
                    log(f"  {name}: FAILED {result['error']}\n{result.get('traceback', '')}")
                    continue
                if "folder" in result:
                    loaded = in_child(measure_load, name, base, result["folder"])
                    if "error" in loaded:
                        log(f"  {name}: load FAILED {loaded['error']}")
                    else:
                        loads[name].append(loaded["load_s"])
                    shutil.rmtree(result["folder"], ignore_errors=True)
                log(f"  round {round_index + 1}/{size.rounds} {name}: done ({time.perf_counter() - start:.0f} s)")
                if partial_json:
                    _write_json(partial_json, {"size": asdict(size), "partial": True, "runs": runs, "loads": loads})
        encoder = in_child(encoder_calls_second_epoch, workdir, seed) if encoder_check else None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = summarize(runs, loads)
    return {
        "size": asdict(size),
        "rows": rows,
        "encoder": encoder,
        "runs": runs,
        "setup": _setup(load_average, time.perf_counter() - start),
    }


def warm_up(base: Any, size: Size) -> None:
    """One full-length greedy and guided generation in the parent, before any fork: every child inherits the
    warmed-up process (lazy initialisation, allocator pools, kernel choices) instead of paying for it again."""
    import torch

    from musicpeft.tiny import make_t5_tokenizer

    inputs = make_t5_tokenizer()([TEXT], return_tensors="pt")
    with torch.no_grad():
        for scale in (1.0, GUIDANCE):
            base.generate(**inputs, do_sample=False, guidance_scale=scale, max_new_tokens=size.max_new_tokens)


def _write_json(path: str, data: dict[str, Any]) -> None:
    """Write atomically (a reader never sees half a file); values JSON does not know are written as text."""
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def _setup(load_average: tuple[float, float, float], seconds: float) -> dict[str, Any]:
    import peft
    import torch
    import transformers

    import musicpeft

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "torch_threads": 1,
        "load_average_at_start": load_average,
        "run_s": seconds,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "musicpeft": musicpeft.__version__,
        },
    }


def noise_line(runs: dict[str, list[dict[str, Any]]]) -> str:
    """Built-in controls: the base timed against its own copy, and full fine-tuning (same modules, new values),
    generate with exactly the base's computation, so the spread of their paired ratios around 1 is what noise
    alone does to a ratio."""
    ratios = {kind: control_ratios(runs, kind) for kind in ("greedy", "cfg")}
    parts = [f"{kind} {min(v):.2f}–{max(v):.2f}× ({len(v)} pairs)" for kind, v in ratios.items() if v]
    if not parts:
        return ""
    controls = " and ".join(f"`{n}`" for n in NOISE_CONTROLS if runs.get(n))
    return (
        f"Noise: {controls} generate with exactly the base's computation (the base against its own copy), and "
        "their "
        "paired ratios spanned "
        + "; ".join(parts)
        + ": ratios that close to 1 cannot be told apart from it in this run."
    )


def report(result: dict[str, Any]) -> str:
    size, setup = result["size"], result["setup"]
    lines = [
        markdown(result["rows"]),
        "",
        f"Size `{size['name']}`: {size['max_new_tokens']} new tokens per generation, a {size['frames']}-frame "
        f"training example, {size['repeats']} timed repeats × {size['rounds']} rounds per number (times: the "
        f"fastest sample of the child's CPU time, 1 torch thread, every sample and wall times are in the JSON; "
        f"memory: the median); "
        f"LoRA reference `{LORA_REFERENCE}` (r={LORA_RANK}). {setup['date']}, {setup['machine']}, 1 torch thread, "
        f"load average at start {', '.join(f'{x:.2f}' for x in setup['load_average_at_start'])}; "
        f"run {setup['run_s']:.0f} s; " + ", ".join(f"{k} {v}" for k, v in setup["versions"].items()) + ".",
        noise_line(result["runs"]),
        *[f"`{m}`: {why}." for m, why in result.get("skipped", {}).items()],
        *[
            f"Memory of `{n}`: {r['peak_scope']} (/proc/self/clear_refs was not writable)."
            for n, r in result["rows"].items()
            if r.get("peak_scope") not in (None, "VmHWM since attach")
        ],
        "",
        "Targets:",
        *target_lines(result["rows"], result["encoder"], result["runs"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--methods", help="comma-separated subset (base and the LoRA reference are always run)")
    parser.add_argument("--repeats", type=int, help="timed repeats per child (default: the size's)")
    parser.add_argument("--rounds", type=int, help="rounds over all methods (default: the size's)")
    parser.add_argument("--max-new-tokens", type=int, help="tokens per generation (default: the size's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-encoder-check", action="store_true", help="do not count second-epoch encodes")
    parser.add_argument(
        "--audioldm2",
        action="store_true",
        help="also compare base, soft prompt, concept tokens, unmerged pivotal and LoRA on AudioLDM2 (`--size tiny`: "
        "the tiny pipeline; `small`: the cvssp/audioldm2-music shape of benchmarks/audioldm2_shaped.py, random "
        "weights)",
    )
    parser.add_argument(
        "--audioldm2-only", action="store_true", help="only the AudioLDM2 comparison (implies --audioldm2)"
    )
    parser.add_argument("--json", help="also write every measurement to this JSON file")
    args = parser.parse_args(argv)
    if not hasattr(os, "fork"):
        raise SystemExit("benchmarks/perf.py forks one child per method: it needs a POSIX system (os.fork).")
    size = SIZES[args.size]
    for option in ("repeats", "rounds", "max_new_tokens"):
        value = getattr(args, option)
        if value is not None:
            if value < 1:
                raise SystemExit(f"--{option.replace('_', '-')} must be >= 1, got {value}")
            setattr(size, option, value)
    known = method_names()
    methods = [m for m in known if m not in size.skip]
    if args.methods:
        chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in chosen if m not in known]
        if unknown:
            raise SystemExit(f"unknown method(s) {unknown}; known: {', '.join(known)}")
        methods = [m for m in known if m in chosen or m in ("base", LORA_REFERENCE)]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.audioldm2_only:
        import torch

        torch.set_num_threads(1)  # as `run` does: one thread per child, set before any op
        result: dict[str, Any] = {"rows": {}, "size": asdict(size)}
    else:
        result = run(size, methods, args.seed, not args.skip_encoder_check, log=log, partial_json=args.json)
        result["skipped"] = {m: why for m, why in size.skip.items() if m not in methods}
        print(report(result))
    if args.audioldm2 or args.audioldm2_only:
        result["audioldm2"] = {}
        for name in AUDIOLDM2_METHODS:
            result["audioldm2"][name] = in_child(measure_audioldm2, name, size.repeats, args.seed, size.name)
            log(f"  audioldm2 {name}: done")
        result["audioldm2_language_model"] = in_child(audioldm2_language_model, size.repeats, args.seed)
        print()
        print(audioldm2_table(result["audioldm2"], size.name))
        print()
        print(language_model_line(result["audioldm2_language_model"]))
    if args.json:
        _write_json(args.json, result)
    failed = [*result["rows"].values(), *result.get("audioldm2", {}).values()]
    failed += [result["audioldm2_language_model"]] if "audioldm2_language_model" in result else []
    return 1 if any("error" in r for r in failed) else 0


if __name__ == "__main__":
    sys.exit(main())
