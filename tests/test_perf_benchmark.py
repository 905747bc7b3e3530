"""benchmarks/perf.py --size tiny runs end to end and its table has a row with finite ratios for every method.

Only the shape of the report is checked here (one repeat, one round, short generations): the numbers
themselves are machine-dependent and live in docs/performance.md, not in assertions.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RATIO_COLUMNS = [
    "gen greedy ×base",
    "gen cfg=3 ×base",
    "gen greedy ×LoRA",
    "gen cfg=3 ×LoRA",
    "train step ×LoRA",
    "train memory ×LoRA",
    "adapter file ×floor",
    "load ×LoRA",
]


def _ratio(cell: str) -> float:
    return float(cell.split("×")[0])


def test_perf_tiny_reports_every_method_with_finite_ratios(tmp_path):
    out = tmp_path / "perf.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "perf.py"),
        "--size",
        "tiny",
        "--repeats",
        "1",
        "--rounds",
        "1",
        "--max-new-tokens",
        "4",
        "--skip-encoder-check",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    lines = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[0] == "method" and all(c in header for c in RATIO_COLUMNS), header
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].split("`")[1]] = dict(zip(header, cells, strict=True))

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import perf
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert list(rows) == perf.method_names()
    for name, row in rows.items():
        # The base has no training, no file to load: only its generation ratios exist.
        columns = RATIO_COLUMNS[:4] if name == "base" else RATIO_COLUMNS
        for column in columns:
            value = _ratio(row[column])
            assert math.isfinite(value) and value > 0, (name, column, row[column])
    assert _ratio(rows[perf.LORA_REFERENCE]["train step ×LoRA"]) == 1.0
    # A file never holds fewer bytes than the values it trains.
    assert all(_ratio(r["adapter file ×floor"]) >= 1.0 for n, r in rows.items() if n != "base")

    result = json.loads(out.read_text())
    assert set(result["rows"]) == set(rows)
    # Every adapted model was timed against its own untouched base copy, one pair per repeat.
    for name, runs in result["runs"].items():
        if name != "base":
            assert [len(r["gen_greedy_pair_ratios"]) for r in runs] == [1], name
    assert "Targets:" in proc.stdout and proc.stdout.count(" — ") >= len(perf.TARGETS)
