"""Pivotal stage 2 forward: the old dense rebuild of W_V' vs the sparse forward, side by side in one run.

A stack of `--layers` (default 4) 1024x1024 self-attention value projections (musicgen-small has 24
decoder layers of width 1024), each with 5% of its entries selected at random (`random_percent`), as `PivotalLinear`s:

- old: what stage 2 did before: `F.linear(x, W + ΔW)`, rebuilding W' = W + ΔW per layer on every call
  (and, under autograd, keeping W' until backward);
- new: `PivotalLinear.forward` (`x @ W^T + x @ ΔW_sparse^T`: CSR product for few rows, a fused op that
  keeps no W' for more).

A third variant, base, runs the frozen linear layers alone (the floor). For inference (no autograd) two
more variants are compared:

- cached: `PivotalLinear.forward` in eval mode: the adapted weight built once (bitwise what `merge` writes)
  and reused while nothing changes; memory: one W per layer, held while in eval mode, dropped by `train()`;
- index_add: `base(x)` plus the delta scattered onto the output (`out.index_add_(-1, rows, x[..., cols] * v)`),
  the candidate that needs neither CSR structures nor a W-sized tensor.

(Gathering the touched columns is not a variant: at 5% random selection nearly every column is touched,
1 - 0.95^1024, so it is the dense product.) Cases: decoding (x of 2x1 rows, no grad), prefill (2x100 rows,
no grad) and training (x of 2x500 rows, forward + backward, gradients to the selected values and to x).
Times are medians over `--repeats` interleaved runs (base, old, new, ..., base, ...).
Memory, per case and variant (both exact, from torch itself):
- peak: the most bytes of tensors alive at once during one run (profiler memory events; the input and
  the weights, allocated before, are not counted);
- kept: bytes autograd keeps for backward besides the frozen weights and the input (saved-tensor hooks).

    .venv/bin/python benchmarks/pivotal_forward.py                   # 4 layers, ~1 min on an idle core
    .venv/bin/python benchmarks/pivotal_forward.py --layers 24        # musicgen-small's decoder depth
    .venv/bin/python benchmarks/pivotal_forward.py --generation       # whole generations, tiny MusicGen

`--generation`: the tiny MusicGen with a random 5% pivotal stage 2 (unmerged) generates 24 tokens greedy and
with guidance 3, against an untouched base copy, in interleaved rounds (CPU time): once with the cached
adapted weight (eval mode, today's path) and once with the per-call sparse product (the pivotal layers
alone switched to training mode, which is how the layer decided before); both must give the same tokens.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from musicpeft.io import atomic_write_json
from musicpeft.tuners.pivotal_mask import PivotalLinear, random_percent

CASES = {"decoding": ((2, 1), False), "prefill": ((2, 100), False), "training": ((2, 500), True)}
INFERENCE_ONLY = ("cached", "index_add")


def build(layers: int, width: int, percent: float) -> list:
    torch.manual_seed(0)
    stack = []
    for i in range(layers):
        base = torch.nn.Linear(width, width, bias=False).requires_grad_(False)
        selection = random_percent({"v": (width, width)}, percent, seed=i)["v"]
        layer = PivotalLinear(base, "default", "sparse", selection)
        with torch.no_grad():
            layer.pivotal_values["default"].normal_(std=0.01)
        layer.pivotal_values["default"].requires_grad_(True)
        stack.append(layer)
    return stack


def old_forward(layer, x: torch.Tensor) -> torch.Tensor:
    """Stage 2 before the sparse forward: rebuild W' = W + ΔW, then one linear (autograd keeps W')."""
    weight = layer.base_layer.weight
    indices = layer.pivotal_indices["default"].long()
    merged = weight.reshape(-1).index_add(0, indices, layer.pivotal_values["default"]).view_as(weight)
    return F.linear(x, merged, layer.base_layer.bias)


def index_add_forward(layer, x: torch.Tensor) -> torch.Tensor:
    """`base(x)` plus `x[..., col] * v` scattered onto the output rows of the selected entries."""
    plan = layer._plan("default")
    rows = torch.div(plan.flat, layer.shape[1], rounding_mode="floor")
    out = layer.base_layer(x)
    return out.index_add_(-1, rows, x[..., plan.col] * layer.pivotal_values["default"])


def base_forward(layer, x: torch.Tensor) -> torch.Tensor:
    """The base layer alone (no adapter): the floor both variants are measured against."""
    return layer.base_layer(x)


_EVAL_COPIES: dict[int, list] = {}


def _eval_copy(stack: list) -> list:
    """The same layers (same weights, values, selections) in eval mode, made once per stack."""
    import copy

    if id(stack) not in _EVAL_COPIES:
        _EVAL_COPIES[id(stack)] = [copy.deepcopy(layer).eval() for layer in stack]
    return _EVAL_COPIES[id(stack)]


def run(stack: list, variant: str, case: str, x: torch.Tensor) -> None:
    forward = {"old": old_forward, "base": base_forward, "index_add": index_add_forward}.get(
        variant, lambda layer, h: layer(h))
    _, train = CASES[case]
    if variant == "cached":  # its own copy of the stack, kept in eval mode: the cache lives across calls
        stack = _eval_copy(stack)
    with torch.set_grad_enabled(train):
        h = x
        for layer in stack:
            h = forward(layer, h)
        if train:
            h.sum().backward()
            for layer in stack:
                layer.pivotal_values["default"].grad = None


def kept_for_backward(stack: list, variant: str, x: torch.Tensor) -> int:
    """Bytes of distinct tensors autograd saves for backward, other than the frozen weights and the input."""
    excluded = {layer.base_layer.weight.data_ptr() for layer in stack} | {x.data_ptr()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.data_ptr() not in excluded:
            saved[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
        return tensor

    forward = old_forward if variant == "old" else (lambda layer, h: layer(h))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        h = x
        for layer in stack:
            h = forward(layer, h)
    return sum(saved.values())


def peak_allocated(stack: list, variant: str, case: str, x: torch.Tensor) -> int:
    """Peak bytes of tensors allocated and alive at once during one run (torch profiler's memory events).

    Process RSS is useless here: the allocator keeps freed pages, so a second run reuses the first's.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run(stack, variant, case, x)
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def generation_ab(rounds: int, tokens: int = 24) -> dict:
    """Median ×base (and quartiles) of whole generations, cached adapted weight vs per-call sparse product."""
    import copy
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from methods_footprint import adapt

    from musicpeft.tiny import make_t5_tokenizer, tiny_musicgen

    tokenizer = make_t5_tokenizer()
    base = tiny_musicgen(seed=0).eval().requires_grad_(False)
    reference = copy.deepcopy(base)
    model = adapt("pivotal_random", base, tokenizer).eval()
    layers = [m for m in model.modules() if isinstance(m, PivotalLinear)]
    plain = tokenizer(["a slow koto melody with soft piano and bright strings"], return_tensors="pt")
    concept = tokenizer(["a slow <koto> melody with soft piano and bright strings"], return_tensors="pt")

    def generate(which: str, scale: float) -> torch.Tensor:
        for layer in layers:  # training-mode pivotal layers take the per-call product, never the cache
            layer.training = which == "sparse_product"
        target, inputs = (reference, plain) if which == "base" else (model, concept)
        with torch.no_grad():
            return target.generate(**inputs, do_sample=False, guidance_scale=scale, max_new_tokens=tokens)

    if not torch.equal(generate("cached", 1.0), generate("sparse_product", 1.0)):
        raise SystemExit("the cached weight and the sparse product generated different tokens")
    variants = ("base", "cached", "sparse_product")
    results = {}
    for scale in (1.0, 3.0):
        times = {v: [] for v in variants}
        for v in variants:
            generate(v, scale)  # warm-up
        for i in range(rounds):
            for v in variants if i % 2 == 0 else tuple(reversed(variants)):
                start = time.process_time()
                generate(v, scale)
                times[v].append(time.process_time() - start)
        row = {"base_ms": statistics.median(times["base"]) * 1e3}
        for v in variants[1:]:
            ratios = [a / b for a, b in zip(times[v], times["base"], strict=True)]
            quartiles = statistics.quantiles(ratios, n=4)
            row[v] = {"median": statistics.median(ratios), "q1": quartiles[0], "q3": quartiles[2]}
        results[f"guidance_{scale:g}"] = row
        cells = [f"{v} ×base {row[v]['median']:.3f} (quartiles {row[v]['q1']:.3f}-{row[v]['q3']:.3f})"
                 for v in variants[1:]]
        print(f"guidance {scale:g}: base {row['base_ms']:.1f} ms; " + "; ".join(cells))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generation", action="store_true", help="whole tiny-MusicGen generations instead")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds for --generation")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--percent", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.generation:
        results = generation_ab(args.rounds)
        if args.json:
            atomic_write_json(args.json, results)
        return
    stack = build(args.layers, args.width, args.percent)
    selected = sum(layer.num_selected("default") for layer in stack)
    print(f"{args.layers} layers of {args.width}x{args.width}, {args.percent}% selected ({selected} values), "
          f"torch {torch.__version__}, {args.threads} thread(s)")
    results = {}
    header = f"{'case':<10} {'rows':>5} {'base ms':>8} {'old ms':>9} {'new ms':>9} {'old/base':>8} {'new/base':>8} " \
             f"{'old peak MB':>12} {'new peak MB':>12} {'old kept MB':>12} {'new kept MB':>12}"
    print(header)
    inference = {}
    for case, (shape, train) in CASES.items():
        x = torch.randn(*shape, args.width, requires_grad=train)
        times = {"base": [], "old": [], "new": [], **({v: [] for v in INFERENCE_ONLY} if not train else {})}
        with torch.no_grad():  # the two must compute the same thing
            difference = float((torch.stack([old_forward(layer, x) for layer in stack]) -
                                torch.stack([layer(x) for layer in stack])).abs().max())
        for variant in times:
            run(stack, variant, case, x)  # warm-up
        for _ in range(args.repeats):
            for variant in times:
                start = time.perf_counter()
                run(stack, variant, case, x)
                times[variant].append((time.perf_counter() - start) * 1e3)
        base_ms, old_ms, new_ms = (statistics.median(times[v]) for v in ("base", "old", "new"))
        mem = {variant: {"peak_mb": peak_allocated(stack, variant, case, x) / 2**20,
                         "kept_mb": kept_for_backward(stack, variant, x) / 2**20 if train else 0.0}
               for variant in ("old", "new")}
        if not train:
            with torch.no_grad():
                for variant in INFERENCE_ONLY:
                    run(stack, variant, case, x)
                    layers = _eval_copy(stack) if variant == "cached" else stack
                    forward = (lambda layer, h: layer(h)) if variant == "cached" else index_add_forward
                    pairs = zip(stack, layers, strict=True)
                    outputs = [(old_forward(ref, x), forward(layer, x)) for ref, layer in pairs]
                    inference.setdefault(case, {})[variant] = {
                        "ms": statistics.median(times[variant]),
                        "over_base": statistics.median(times[variant]) / base_ms,
                        "max_abs_difference": max(float((a - b).abs().max()) for a, b in outputs),
                    }
        results[case] = {"rows": shape[0] * shape[1], "base_ms": base_ms, "old_ms": old_ms, "new_ms": new_ms,
                         "old_over_base": old_ms / base_ms, "new_over_base": new_ms / base_ms,
                         "max_abs_difference": difference, "old": mem["old"], "new": mem["new"]}
        print(f"{case:<10} {shape[0] * shape[1]:>5} {base_ms:>8.2f} {old_ms:>9.2f} {new_ms:>9.2f} "
              f"{old_ms / base_ms:>8.2f} {new_ms / base_ms:>8.2f} {mem['old']['peak_mb']:>12.2f} "
              f"{mem['new']['peak_mb']:>12.2f} {mem['old']['kept_mb']:>12.2f} {mem['new']['kept_mb']:>12.2f}")
    print("max |old - new| per layer output:", {c: f"{r['max_abs_difference']:.1e}" for c, r in results.items()})
    held = sum(layer.base_layer.weight.numel() * layer.base_layer.weight.element_size() for layer in stack) / 2**20
    for case, variants in inference.items():
        print(f"{case} (no grad): " + "; ".join(
            f"{v} {r['ms']:.2f} ms = {r['over_base']:.2f}x base (new {results[case]['new_over_base']:.2f}x), "
            f"max |old - {v}| {r['max_abs_difference']:.1e}" for v, r in variants.items()))
    print(f"cached: holds {held:.1f} MB (one W per layer) while in eval mode; train() drops it")
    for case, variants in inference.items():
        results[case]["inference_variants"] = variants
    if args.json:
        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
