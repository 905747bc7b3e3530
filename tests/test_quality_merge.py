"""benchmarks/quality.py --merge: seeds run in separate processes combine into one set of tables, and bad input is
refused by name (no models are built here)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

QUALITY = Path(__file__).resolve().parent.parent / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_benchmark", QUALITY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def _report(path: Path, seed: int, ce: float, steps: int = 30, lr: float = 1e-3) -> str:
    preset = {"seeds": 1, "steps": steps, "train_clips": 12, "heldout_clips": 6, "generations": 6, "batch_size": 6}
    row = {"seed": seed, "trainable": 10, "cross_entropy": ce, "perplexity": 2.0, "kld": 1.0, "clap_score": 0.1,
           "classifier_rate": 0.0, "classifier_probability": 0.2, "seconds": 60.0}
    path.write_text(json.dumps({"preset": preset, "quick": True, "seconds": 60.0, "learning_rates": {"lr_lora": lr},
                                "results": {"A": {"base": [row], "soft_prompt": [dict(row, cross_entropy=ce - 1)]}}}))
    return str(path)


def test_merge_concatenates_seeds_and_recomputes_spread(quality, tmp_path):
    paths = [_report(tmp_path / "s0.json", 0, 5.0), _report(tmp_path / "s1.json", 1, 7.0)]
    results, preset, seconds, quick, rates = quality.merge_reports(paths)
    assert [r["seed"] for r in results["A"]["base"]] == [0, 1]
    assert preset["seeds"] == 2 and seconds == 120.0 and quick and rates == {"lr_lora": 1e-3}
    assert quality.cell([r["cross_entropy"] for r in results["A"]["soft_prompt"]]) == "5.000 ± 1.414"
    header, _, base, soft = quality.table(results["A"], "method", quality.COLUMNS_A)
    assert header.startswith("| method | trainable params | held-out CE ↓ | perplexity ↓ |")
    assert soft == "| soft_prompt | 10 | 5.000 ± 1.414 | 2.00 ± 0.00 | 1.000 ± 0.000 | 0.100 ± 0.000 | 0.00 ± 0.00 | " \
                   "0.200 ± 0.000 |"


def test_merge_refuses_repeated_seed_and_mixed_presets(quality, tmp_path):
    first = _report(tmp_path / "a.json", 0, 5.0)
    with pytest.raises(SystemExit, match="repeats seed"):
        quality.merge_reports([first, _report(tmp_path / "b.json", 0, 6.0)])
    with pytest.raises(SystemExit, match="preset"):
        quality.merge_reports([first, _report(tmp_path / "c.json", 1, 6.0, steps=400)])
    with pytest.raises(SystemExit, match="learning rates"):
        quality.merge_reports([first, _report(tmp_path / "d.json", 1, 6.0, lr=1e-2)])
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match="bad.json"):
        quality.merge_reports([first, str(tmp_path / "bad.json")])
