"""Footprint of every musicpeft method on a MusicGen-small-shaped model: one run, one table.

For each method this measures, on a `MusicgenForConditionalGeneration` built from a config with random
weights (no download), shaped like facebook/musicgen-small:

- trainable parameters (the Parameters with `requires_grad`, each counted once),
- the adapter file on disk (`adapter_model.safetensors` written by `musicpeft.save_adapter`; for full
  fine-tuning, the decoder's weights written with safetensors, which is what that method has to ship),
- AdamW state after one step (every tensor in `optimizer.state`),
- wall time of a training step (forward with labels, backward, `optimizer.step()`, `zero_grad`): the first
  step (which also allocates the AdamW state) and the median of `--steps` more,
- peak RSS while training (from after the base model is built to the last step; base model included),
  and how far that peak lies above the built base model.

Model: T5-base text encoder (d_model 768, 12 layers, d_ff 3072, 12 heads, vocab 32128), decoder of 24
layers (hidden 1024, 16 heads, ffn 4096, 4 codebooks of 2048), and the 32 kHz EnCodec of musicgen-small
(frozen, and not run: the labels are random codes). `--small` keeps every width and cuts both the text
encoder and the decoder to 4 layers, for a quick check.

Batch: one example, a text of about 10 tokens (tokenized with musicpeft's in-memory word-level T5
tokenizer; ids lie in T5's vocabulary range) and `--frames` random audio codes per codebook (75 = 1.5 s at
EnCodec's 50 Hz), laid out with MusicGen's delay pattern by `musicpeft.training.collator.MusicgenCollator`.

Each method runs in its own Python process that builds the base model from the same seed (same weights
every time; about 8 s at full size), so one method's memory never counts against another, and the RSS
figures are that method's alone.

    .venv/bin/python benchmarks/methods_footprint.py                  # all methods, full size (~4 min on 2 cores)
    .venv/bin/python benchmarks/methods_footprint.py --small          # 4-layer model, a quick check
    .venv/bin/python benchmarks/methods_footprint.py --methods soft_prompt_input,lora_attn --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from musicpeft.io import atomic_write_json

# The counts planned for MusicGen-small before any was measured (soft prompt: 30 x 768; cross-attention K+V:
# 24 layers x 2 x 1024 x 1024; LoRA r=16: "the usual decoder targets"), printed next to the measured numbers
# (never used to compute).
EXPECTED = {
    "text_encoder": 109.6e6,
    "decoder": 419.6e6,
    "encodec": 57.6e6,
    "soft_prompt": 23_040,
    "cross_attn_kv": 50.3e6,
    "lora_r16": 10.6e6,
}

TEXT = "a slow koto melody with soft piano and bright strings"
CONCEPT_TEXT = "a slow <koto> melody with piano and strings"  # `<koto>` expands to 3 identifier tokens
LORA_RANK = 16
SMALL_LAYERS = 4
PIVOTAL_PERCENT = 5.0


# ------------------------------------------------------------------------------------------------ the model


def musicgen_small_config(num_layers: int | None = None):
    """A MusicgenConfig shaped like facebook/musicgen-small (`num_layers` cuts text encoder and decoder).

    Only what differs from transformers' defaults is written: T5Config's defaults are T5's, and
    MusicgenDecoderConfig's are musicgen-small's decoder (24 layers, width 1024, 16 heads, 4 codebooks of 2048).
    """
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    text = T5Config(  # T5-base's encoder
        d_model=768, d_ff=3072, num_layers=num_layers or 12, num_heads=12, decoder_start_token_id=0
    )
    audio = EncodecConfig(  # facebook/encodec_32khz, as in musicgen-small
        sampling_rate=32000,
        num_filters=64,
        codebook_size=2048,
        upsampling_ratios=[8, 5, 4, 4],
        target_bandwidths=[2.2],
        use_causal_conv=False,
        use_conv_shortcut=False,
    )
    decoder = MusicgenDecoderConfig(num_hidden_layers=num_layers or 24, decoder_start_token_id=2048)
    cfg = MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder)
    cfg.decoder_start_token_id = 2048
    cfg.pad_token_id = 2048
    return cfg


def build_model(num_layers: int | None, seed: int):
    """The model with random weights from `seed` (the same weights in every process); eval mode, all frozen."""
    import torch
    from transformers import MusicgenForConditionalGeneration

    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(musicgen_small_config(num_layers))
    for key in ("decoder_start_token_id", "pad_token_id", "bos_token_id"):
        setattr(model.generation_config, key, 2048)
    return model.eval().requires_grad_(False)


def component_sizes(model: Any) -> dict[str, int]:
    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    return {
        "text_encoder": count(model.text_encoder),
        "decoder": count(model.decoder),
        "encodec": count(model.audio_encoder),
        "enc_to_dec_proj": count(model.enc_to_dec_proj),
        "total": count(model),
        "decoder_layers": model.config.decoder.num_hidden_layers,
        "text_encoder_layers": model.config.text_encoder.num_layers,
    }


# ------------------------------------------------------------------------------------------------- methods


def method_names() -> list[str]:
    """Every method, in table order (LoRA presets from the family, so new presets show up here)."""
    from musicpeft.training.presets import list_presets

    lora = [f"lora_{preset}" for preset in list_presets("musicgen")]
    return ["soft_prompt_input", "soft_prompt_output", *lora, "pivotal_stage2", "concept_tokens", "full_decoder"]


def describe(name: str) -> str:
    if name.startswith("soft_prompt_"):
        position = "encoder_input" if name.endswith("input") else "encoder_output"
        return f"SoftMusicPromptConfig(num_virtual_tokens=30, position={position!r})"
    if name.startswith("lora_"):
        return f"lora_config(model, {name[5:]!r}, r={LORA_RANK})"
    if name == "pivotal_stage2":
        return f'PivotalMaskConfig(stage="tune", selection="random", percent={PIVOTAL_PERCENT:g}), 1 concept × 3 tokens'
    if name == "concept_tokens":
        return "ConceptIdentifierConfig, 1 concept × 3 tokens"
    if name == "full_decoder":
        return "prepare_full_finetune (whole decoder)"
    raise ValueError(name)


def adapt(kind: str, model: Any, tokenizer: Any, **prompt_options: Any) -> Any:
    """`model` adapted through the public API for one kind of benchmarked method (perf.py uses it too).

    Kinds: "soft_prompt" (`prompt_options` go to its config), "lora_<preset>", "concept_tokens",
    "pivotal_random" and "full_decoder". "pivotal_random" is stage 2 straight away: a random selection needs
    no stage-1 masks (DreamStyler's 5%-random ablation) and trains as many W_V entries as the pivotal one would.
    """
    import musicpeft
    from musicpeft.training.presets import lora_config, prepare_full_finetune

    if kind == "soft_prompt":
        return musicpeft.add_adapter(model, musicpeft.SoftMusicPromptConfig(num_virtual_tokens=30, **prompt_options))
    if kind.startswith("lora_"):
        return musicpeft.add_adapter(model, lora_config(model, kind[5:], r=LORA_RANK))
    if kind in ("concept_tokens", "pivotal_random"):
        musicpeft.bind_processor(model, tokenizer)  # the tokenizer gets the identifier tokens
        if kind == "concept_tokens":
            return musicpeft.add_adapter(model, musicpeft.ConceptIdentifierConfig(concepts=["koto"]))
        config = musicpeft.PivotalMaskConfig(
            concepts=["koto"], stage="tune", selection="random", percent=PIVOTAL_PERCENT, selection_seed=0
        )
        return musicpeft.add_adapter(model, config)
    if kind == "full_decoder":
        prepare_full_finetune(model)
        return model
    raise ValueError(f"Unknown kind of method {kind!r}.")


def attach(name: str, model: Any, tokenizer: Any) -> tuple[Any, str, dict[str, int]]:
    """Adapt `model` for method `name`; returns (what to run, the text to train on, a breakdown of trainables)."""
    if name not in method_names():
        raise ValueError(f"Unknown method {name!r}; known: {', '.join(method_names())}.")
    if name.startswith("soft_prompt_"):
        position = "encoder_input" if name.endswith("input") else "encoder_output"
        return adapt("soft_prompt", model, tokenizer, position=position), TEXT, {}
    runner = adapt("pivotal_random" if name == "pivotal_stage2" else name, model, tokenizer)
    if name == "pivotal_stage2":
        breakdown = {k: v for k, v in runner.base_model.trainable_counts("default").items() if v}
        return runner, CONCEPT_TEXT, breakdown
    return runner, CONCEPT_TEXT if name == "concept_tokens" else TEXT, {}


# ----------------------------------------------------------------------------------------- one method's run


def status_kb(field: str) -> int | None:
    """A kB field of /proc/self/status (VmRSS, VmHWM); None where there is no /proc."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_kb(resettable: bool) -> int:
    """Peak RSS in kB: since the last reset when `reset_peak_rss()` worked, else of the whole process."""
    if resettable:
        return status_kb("VmHWM") or 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _folder_bytes(directory: str) -> dict[str, int]:
    return {
        os.path.relpath(os.path.join(root, f), directory): os.path.getsize(os.path.join(root, f))
        for root, _, files in os.walk(directory)
        for f in files
    }


def run_method(name: str, num_layers: int | None, frames: int, steps: int, seed: int) -> dict[str, Any]:
    """Build the base, adapt it for `name`, train `1 + steps` steps, save; everything measured here."""
    import torch
    from transformers.utils import logging as hf_logging

    import musicpeft
    from musicpeft.tiny import make_t5_tokenizer
    from musicpeft.training.collator import MusicgenCollator

    hf_logging.set_verbosity_error()
    result: dict[str, Any] = {
        "method": name,
        "config": describe(name),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
    }
    start = time.perf_counter()
    model = build_model(num_layers, seed)
    result["build_s"] = time.perf_counter() - start
    result["sizes"] = component_sizes(model)
    gc.collect()
    peak_resettable = reset_peak_rss()
    rss_base_kb = status_kb("VmRSS")

    tokenizer = make_t5_tokenizer()
    runner, text, breakdown = attach(name, model, tokenizer)
    params = [p for p in runner.parameters() if p.requires_grad]
    result["trainable"] = sum(p.numel() for p in params)
    result["trainable_breakdown"] = breakdown
    result["trainable_tensors"] = len(params)

    num_codebooks = model.decoder.num_codebooks
    vocab = model.config.decoder.vocab_size
    codes = torch.randint(0, vocab, (num_codebooks, frames), generator=torch.Generator().manual_seed(seed))
    batch = MusicgenCollator(tokenizer, runner)([{"codes": codes, "text": text}])
    result["text"] = text
    result["text_tokens"] = int(batch["input_ids"].shape[1])
    result["label_steps"] = int(batch["labels"].shape[1])
    result["labels_shape"] = list(batch["labels"].shape)

    optimizer = torch.optim.AdamW(params, lr=1e-5)
    runner.train()
    torch.manual_seed(seed)

    def step() -> tuple[float, float]:
        t0 = time.perf_counter()
        loss = runner(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t0, float(loss.detach())

    first, loss = step()
    result["first_step_s"] = first
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    result["optimizer_state_bytes"] = sum(t.numel() * t.element_size() for t in state)
    result["optimizer_state_numel"] = sum(t.numel() for t in state if t.dim() > 0)
    times, losses = [], [loss]
    for _ in range(steps):
        seconds, loss = step()
        times.append(seconds)
        losses.append(loss)
    result["step_s"] = times
    result["step_median_s"] = statistics.median(times) if times else first
    result["losses"] = losses
    result["peak_rss_bytes"] = peak_kb(peak_resettable) * 1024
    result["peak_rss_scope"] = "after base build" if peak_resettable else "whole process"
    result["base_rss_bytes"] = (rss_base_kb or 0) * 1024

    out = tempfile.mkdtemp(prefix="methods-footprint-adapter-")
    try:
        if name == "full_decoder":
            from safetensors.torch import save_file

            state_dict = {k: v.detach().contiguous() for k, v in model.decoder.state_dict().items()}
            save_file(state_dict, os.path.join(out, "decoder.safetensors"), metadata={"format": "pt"})
            del state_dict
            result["saved_with"] = "safetensors.torch.save_file(model.decoder.state_dict())"
            weights_file = "decoder.safetensors"
        else:
            musicpeft.save_adapter(runner, out)
            result["saved_with"] = "musicpeft.save_adapter"
            weights_file = "adapter_model.safetensors"
        files = _folder_bytes(out)
        result["files"] = files
        result["weights_file_bytes"] = files[weights_file]
        result["folder_bytes"] = sum(files.values())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    result["method_s"] = time.perf_counter() - start
    return result


# ------------------------------------------------------------------------------------------------- report


def human_bytes(n: float) -> str:
    """Bytes as kB / MB / GB (powers of 10), as the tables print them."""
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.1f} kB"


def _count(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{int(n):,}"


def expectation(name: str, small: bool) -> str:
    scope = " (24-layer model)" if small else ""
    if name.startswith("soft_prompt_"):
        return f"{EXPECTED['soft_prompt']:,}"
    if name.startswith("lora_"):
        return f"≈{EXPECTED['lora_r16'] / 1e6:.1f}M on “the usual decoder targets”{scope}"
    if name == "pivotal_stage2":
        return f"cross-attn K+V = {EXPECTED['cross_attn_kv'] / 1e6:.1f}M{scope}"
    if name == "full_decoder":
        return f"decoder {EXPECTED['decoder'] / 1e6:.1f}M{scope}"
    return "—"


def trainable_cell(r: dict[str, Any]) -> str:
    cell = f"{r['trainable']:,}"
    names = {"cross_attention": "cross-attn K+V", "self_attention_values": "W_V entries", "tokens": "tokens"}
    parts = [f"{names.get(k, k)} {v:,}" for k, v in r.get("trainable_breakdown", {}).items()]
    return cell + (f" ({'; '.join(parts)})" if parts else "")


def markdown(results: list[dict[str, Any]], setup: dict[str, Any]) -> str:
    small = setup["small"]
    lines = [
        "| method | trainable params | expected | adapter file | AdamW state | step 1 (s) "
        f"| step (s), median of {setup['steps']} | peak RSS | peak over base |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| `{r['method']}` | failed: {r['error']} | | | | | | | |")
            continue
        lines.append(
            f"| `{r['method']}` | {trainable_cell(r)} | {expectation(r['method'], small)} "
            f"| {human_bytes(r['weights_file_bytes'])} | {human_bytes(r['optimizer_state_bytes'])} "
            f"| {r['first_step_s']:.2f} "
            f"| {r['step_median_s']:.2f} | {human_bytes(r['peak_rss_bytes'])} "
            f"| {human_bytes(r['peak_rss_bytes'] - r['base_rss_bytes'])} |"
        )
    return "\n".join(lines)


def setup_lines(setup: dict[str, Any], results: list[dict[str, Any]]) -> str:
    s = setup["sizes"]
    ok = [r for r in results if "error" not in r]
    tokens = sorted({(r["text"], r["text_tokens"]) for r in ok})
    text = "; ".join(f"“{t}” = {n} tokens" for t, n in tokens)
    label_shape = ok[0]["labels_shape"] if ok else "?"
    out = [
        f"Model: MusicGen-small-shaped, random weights, {s['text_encoder_layers']}-layer T5 encoder, "
        f"{s['decoder_layers']}-layer decoder{' (--small)' if setup['small'] else ''}. Measured parameters: "
        f"text encoder {_count(s['text_encoder'])} (expected: {EXPECTED['text_encoder'] / 1e6:.1f}M), "
        f"decoder {_count(s['decoder'])} (expected: {EXPECTED['decoder'] / 1e6:.1f}M), "
        f"EnCodec 32 kHz {_count(s['encodec'])} (expected: {EXPECTED['encodec'] / 1e6:.1f}M; frozen, not run), "
        f"enc_to_dec_proj {_count(s['enc_to_dec_proj'])}, total {_count(s['total'])}.",
        f"Batch: 1 example; text {text}; labels {label_shape} ([batch, frames + codebooks - 1, codebooks]: "
        f"{setup['frames']} frames of random codes with the delay pattern).",
        f"Step: forward with labels + backward + AdamW(lr=1e-5).step() + zero_grad, fp32, "
        f"{ok[0]['torch_threads'] if ok else '?'} torch threads. Step 1 also allocates the AdamW state. "
        f"Load average when the run started: {', '.join(f'{x:.2f}' for x in setup['load_average_at_start'])}.",
        "Adapter file: adapter_model.safetensors from musicpeft.save_adapter (full_decoder: the decoder's weights "
        "as safetensors). Peak RSS: from after the base model is built to the last step, base model included; "
        "'peak over base' subtracts the RSS with the base model built. MB/GB are 10^6/10^9 bytes.",
    ]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------- driver


def _parse_methods(value: str | None) -> list[str]:
    known = method_names()
    if not value:
        return known
    chosen = [m.strip() for m in value.replace(" ", ",").split(",") if m.strip()]
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise SystemExit(f"Unknown method(s) {unknown}; known: {', '.join(known)}.")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--methods", help="comma-separated subset of: " + ", ".join(method_names()))
    parser.add_argument("--small", action="store_true", help="4-layer text encoder and decoder (quick check)")
    parser.add_argument("--frames", type=int, default=75, help="audio frames per example (50 Hz; default 75 = 1.5 s)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the first (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:  # one method, in its own process
        result = run_method(args.worker, SMALL_LAYERS if args.small else None, args.frames, args.steps, args.seed)
        atomic_write_json(args.result, result, indent=None)
        return 0

    methods = _parse_methods(args.methods)
    start = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="methods-footprint-")
    results: list[dict[str, Any]] = []
    load_average = os.getloadavg()
    try:
        for name in methods:
            result_file = os.path.join(workdir, f"{name}.json")
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--worker",
                name,
                "--result",
                result_file,
                "--frames",
                str(args.frames),
                "--steps",
                str(args.steps),
                "--seed",
                str(args.seed),
                *(["--small"] if args.small else []),
            ]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0 or not os.path.exists(result_file):
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                print(f"  {name}: FAILED\n{proc.stderr[-3000:]}", file=sys.stderr, flush=True)
                results.append({"method": name, "error": tail[0][:200]})
                continue
            with open(result_file) as handle:
                result = json.load(handle)
            result["process_s"] = time.perf_counter() - t0
            results.append(result)
            print(
                f"  {name}: {result['trainable']:,} trainable, step {result['step_median_s']:.2f} s, "
                f"{result['process_s']:.0f} s in all",
                file=sys.stderr,
                flush=True,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    total = time.perf_counter() - start
    setup = {
        "small": args.small,
        "frames": args.frames,
        "steps": args.steps,
        "seed": args.seed,
        "sizes": next((r["sizes"] for r in results if "sizes" in r), {}),
        "load_average_at_start": load_average,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "python": platform.python_version(),
        "run_s": total,
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["benchmarks/methods_footprint.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    import torch
    import transformers

    import musicpeft

    setup["versions"] = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": __import__("peft").__version__,
        "musicpeft": musicpeft.__version__,
    }
    print(markdown(results, setup))
    print()
    print(setup_lines(setup, results))
    print(f"\nRun time: {total:.0f} s on {setup['machine']}.")
    if args.json:
        atomic_write_json(args.json, {"setup": setup, "expected": EXPECTED, "results": results})
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
