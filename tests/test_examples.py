"""The examples run end to end on the tiny models (small step counts)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
from fixtures import tiny_musicgen
from peft import PeftModel

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_soft_prompt_musicgen_example(tmp_path):
    example = _load("train_soft_prompt_musicgen")
    out = example.main(
        [
            "--base",
            "tiny",
            "--data",
            "rendered:107",
            "--output_dir",
            str(tmp_path / "prompt"),
            "--epochs",
            "2",
            "--clip_seconds",
            "1",
            "--learning_rate",
            "0.05",
            "--batch_size",
            "4",
            "--rendered_clips",
            "8",
        ]
    )
    assert math.isfinite(out["before"]["cross_entropy"]) and math.isfinite(out["after"]["cross_entropy"])
    loaded = PeftModel.from_pretrained(tiny_musicgen(seed=0), tmp_path / "prompt")
    prompt = [p for n, p in loaded.named_parameters() if "soft_prompt" in n][0]
    assert prompt.shape == (30, 32) and torch.isfinite(prompt).all()
