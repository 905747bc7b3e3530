"""The examples run end to end on the tiny models (small step counts)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from fixtures import tiny_musicgen
from peft import PeftModel

from musicpeft.evaluation.micro_world import trained_models_available

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    if str(EXAMPLES) not in sys.path:  # as for `python examples/<name>.py`: the examples import their _common.py
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their string annotations through sys.modules
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


# --- one example per paper, on the shipped tiny trained models (issue 12) -------------------------------------

requires_trained = pytest.mark.skipif(
    not trained_models_available(), reason="the trained tiny models are not in this checkout (issue 8)"
)


@requires_trained
def test_korean_prompt_tuning_example_scores_four_prompt_categories_before_and_after(tmp_path):
    example = _load("korean_prompt_tuning")
    out = example.main(["--output_dir", str(tmp_path), "--epochs", "2", "--train_clips", "8", "--heldout_clips", "4",
                        "--prompts_per_category", "2", "--clip_seconds", "1", "--num_virtual_tokens", "4",
                        "--batch_size", "6"])
    assert list(out["before"]) == list(example.CATEGORIES) == list(out["after"])
    assert all("koto" not in p for p in out["categories"]["no instrument word"])
    assert all(p.endswith("on koto") for p in out["categories"]["caption"])
    for side in ("before", "after"):
        for scores in out[side].values():
            assert math.isfinite(scores["clap_score"]) and math.isfinite(scores["kld"])
    # the prompt reaches generation: at least one category's clips changed
    assert any(out["before"][c]["kld"] != out["after"][c]["kld"] for c in example.CATEGORIES)
    assert out["epochs_run"] == 2 and len(out["validation_loss"]) == 2
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert "| no instrument word |" in out["table"]


@requires_trained
def test_jpop_lora_example_compares_full_finetuning_with_lora_presets(tmp_path):
    example = _load("jpop_lora")
    out = example.main(["--output_dir", str(tmp_path), "--methods", "full,lora:attn", "--max_steps", "4",
                        "--eval_steps", "2", "--train_clips", "4", "--validation_clips", "2", "--clip_seconds", "1"])
    full, lora = out["methods"]["full"], out["methods"]["lora:attn"]
    from musicpeft.tiny import load_trained_musicgen

    decoder = sum(p.numel() for p in load_trained_musicgen()[0].decoder.parameters())
    assert full["trainable"] == decoder and 0 < lora["trainable"] < decoder
    for r in (full, lora):
        assert len(r["eval_loss"]) == 2 and math.isfinite(r["validation"]["cross_entropy"])
        assert r["validation"]["cross_entropy"] != out["base"]["validation"]["cross_entropy"]
        assert math.isfinite(r["other"]["cross_entropy"])
    assert "| lora:attn |" in out["table"] and "piano CE (forgetting)" in out["table"]


@requires_trained
def test_dreamstyler_concepts_example_scores_pivotal_tuning_against_a_baseline(tmp_path):
    example = _load("dreamstyler_concepts")
    out = example.main(["--output_dir", str(tmp_path), "--recipes", "dreamstyler,tokens_only", "--clips", "2",
                        "--heldout_clips", "2", "--prompts", "1", "--seconds", "1", "--mask_epochs", "1",
                        "--tuning_steps", "2", "--train_batch_size", "4"])
    rows = out["results"]
    assert list(rows) == ["base (instrument words)", "dreamstyler: pivotal 5% + cross-attn K/V + 3 tokens",
                          "tokens_only: identifier tokens only"]
    pivotal, tokens = rows["dreamstyler: pivotal 5% + cross-attn K/V + 3 tokens"], rows[
        "tokens_only: identifier tokens only"]
    assert pivotal["selected"]["union"] > 0 and 0 < tokens["trainable"] < pivotal["trainable"]
    for r in rows.values():
        for key in ("text_alignment", "audio_alignment", "delta_audio_alignment", "audio_alignment_multi"):
            assert math.isfinite(r[key]), key
    assert out["prompts"]["both"][0].count("<") == 2


@requires_trained
def test_push_and_load_example_round_trips_through_a_hub(local_hub, tmp_path):
    example = _load("push_and_load")
    out = example.main(["--repo_id", "user/tiny-koto-prompt", "--output_dir", str(tmp_path / "adapter"),
                        "--steps", "3", "--clips", "4", "--clip_seconds", "1", "--num_virtual_tokens", "4"])
    assert out["loaded_matches_trained"] and out["differs_from_base"]
    files = local_hub.api.list_repo_files("user/tiny-koto-prompt")
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(files)
    card = local_hub.api.hf_hub_download("user/tiny-koto-prompt", "README.md")
    assert "held-out token cross-entropy" in Path(card).read_text()


def test_audioldm2_finetune_example_trains_the_unet_fully_and_with_lora(tmp_path):
    example = _load("audioldm2_finetune")
    out = example.main(["--output_dir", str(tmp_path), "--methods", "full,lora:attn", "--instruments", "piano",
                        "--clips_per_instrument", "4", "--epochs", "1", "--batch_size", "2", "--learning_rate", "1e-3"])
    full, lora = out["results"]["full"], out["results"]["lora:attn"]
    assert 0 < lora["trainable_parameters"] < full["trainable_parameters"]
    for r in (full, lora):
        assert r["steps"] >= 1 and math.isfinite(r["eval_loss_before"]) and math.isfinite(r["eval_loss_after"])
    records = [line for line in (tmp_path / "musicnet-style" / "metadata.jsonl").read_text().splitlines() if line]
    assert len(records) == 4 and all("Solo Piano" in line for line in records)
    assert "random weights" in out["table"]
