"""`musicpeft train`: tiny bases, rendered or folder data, a few steps, then the saved adapter loads."""

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

import musicpeft
from musicpeft.cli import main
from musicpeft.errors import NonFiniteTrainingError, OutputDirNotEmptyError
from musicpeft.evaluation.generation import load_base
from musicpeft.training.runner import TrainArguments

FAST = ["--clip-seconds", "1", "--max-steps", "2", "--batch-size", "2", "--num-virtual-tokens", "4", "--lora-r", "2"]


def train(tmp_path, *extra: str) -> dict:
    out = tmp_path / "adapter"
    assert main(["train", "--output-dir", str(out), *FAST, "--encode-cache", str(tmp_path / "encoded"), *extra]) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no scratch checkpoints or temp files
    return summary


def assert_finite(summary: dict, *keys: str) -> None:
    for key in ("train_loss", *keys):
        assert isinstance(summary[key], float) and math.isfinite(summary[key]), (key, summary[key])


def test_soft_prompt_on_tiny_musicgen(tmp_path):
    summary = train(tmp_path, "--base", "tiny-musicgen", "--data", "rendered:107:5", "--eval-fraction", "0.2")
    assert (summary["family"], summary["train_clips"], summary["eval_clips"], summary["steps"]) == ("musicgen", 4, 1, 2)
    assert summary["trainable_parameters"] > 0
    assert_finite(summary, "eval_cross_entropy_before", "eval_cross_entropy_after", "best_eval_loss")
    assert len(list((tmp_path / "encoded").rglob("*.safetensors"))) == 5  # every clip's codes, cached once
    base = load_base("tiny-musicgen", "cpu")
    model = musicpeft.load_adapter(base.model, summary["adapter_dir"])
    assert model.peft_config["default"].num_virtual_tokens == 4


def test_constant_schedule_and_the_loss_history_in_the_summary(tmp_path):
    summary = train(tmp_path, "--base", "tiny-musicgen", "--data", "rendered:107:2", "--eval-fraction", "0",
                    "--lr-scheduler-type", "constant", "--learning-rate", "0.01")
    assert summary["arguments"]["lr_scheduler_type"] == "constant"
    history = summary["train_loss_history"]
    assert [e["step"] for e in history] == [1, 2]  # 2 clips, batch 2: an epoch (and a log) per step
    assert all(math.isfinite(e["loss"]) for e in history)
    # the Trainer's train_loss is the mean over the run: here the mean of the two logged steps
    assert summary["train_loss"] == pytest.approx((history[0]["loss"] + history[1]["loss"]) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="lr_scheduler_type: expected one of .*constant.*, got 'sometimes'"):
        TrainArguments(base="tiny-musicgen", data="rendered:107:2", lr_scheduler_type="sometimes")


@pytest.mark.parametrize("metadata", ["metadata.jsonl", "metadata.csv"])
def test_lora_preset_on_tiny_musicgen_from_a_folder(tmp_path, metadata):
    data = tmp_path / "clips"
    data.mkdir()
    rate = 32000
    for i in range(3):
        tone = 0.3 * np.sin(2 * np.pi * 220 * (i + 1) * np.arange(rate) / rate).astype(np.float32)
        sf.write(data / f"{i}.wav", tone, rate)
    records = [{"path": f"{i}.wav", "description": f"tone {i}"} for i in range(3)]
    if metadata == "metadata.jsonl":
        (data / metadata).write_text("".join(json.dumps(r) + "\n" for r in records))
    else:  # the audiofolder convention's CSV: a header, then one row per file
        (data / metadata).write_text("file_name,text\n" + "".join(f"{i}.wav,tone {i}\n" for i in range(3)))
    summary = train(tmp_path, "--base", "tiny-musicgen", "--data", str(data), "--method", "lora:attn",
                    "--eval-fraction", "0.3")
    assert (summary["train_clips"], summary["eval_clips"]) == (2, 1)
    assert_finite(summary, "eval_cross_entropy_before", "eval_cross_entropy_after")
    model = musicpeft.load_adapter(load_base("tiny-musicgen", "cpu").model, summary["adapter_dir"])
    assert model.peft_config["default"].r == 2


def test_soft_prompt_on_tiny_audioldm2_then_generate(tmp_path):
    summary = train(tmp_path, "--base", "tiny-audioldm2", "--data", "rendered:107:3", "--clip-seconds", "1.28",
                    "--eval-fraction", "0.34")
    assert (summary["family"], summary["steps"]) == ("audioldm2", 2)
    assert list((tmp_path / "encoded").rglob("*.safetensors"))  # VAE latents cached
    assert_finite(summary, "eval_loss_before", "eval_loss_after")
    pipe = load_base("tiny-audioldm2", "cpu").model
    musicpeft.load_adapter(pipe, summary["adapter_dir"])
    audio = pipe(["classical music"], num_inference_steps=2, audio_length_in_s=1.28,
                 generator=torch.Generator().manual_seed(0)).audios
    assert audio.shape[0] == 1 and np.isfinite(audio).all()


def test_unknown_method_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown 'adapterx'.*soft_prompt, lora:<preset>, full.*attn_mlp"):
        main(["train", "--base", "tiny-musicgen", "--data", "rendered:107:4", "--method", "adapterx"])
    with pytest.raises(ValueError, match=r"unknown LoRA preset 'qkv' for musicgen; known presets: lora:self_attn"):
        main(["train", "--base", "tiny-musicgen", "--data", "rendered:107:4", "--method", "lora:qkv",
              "--output-dir", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("data", ["rendered:107", "rendered:300:2", "no-such-folder"])
def test_bad_data_spec_is_refused_before_loading(tmp_path, data):
    with pytest.raises((ValueError, FileNotFoundError), match="rendered:<program>:<n>"):
        main(["train", "--base", "tiny-musicgen", "--data", data, "--output-dir", str(tmp_path / "x")])


def test_folder_without_metadata_and_bad_numbers(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no metadata file \(metadata.jsonl, metadata.csv, metadata.parquet"):
        main(["train", "--base", "tiny-musicgen", "--data", str(tmp_path)])
    with pytest.raises(ValueError, match="eval_fraction must be in"):
        TrainArguments(base="tiny-musicgen", data="rendered:107:4", eval_fraction=1.0)
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        TrainArguments(base="tiny-musicgen", data="rendered:107:4", max_steps=0)


def test_non_empty_output_dir_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "adapter_model.safetensors").write_bytes(b"stale adapter")
    common = ["--base", "tiny-musicgen", "--data", "rendered:107:2", "--eval-fraction", "0", "--output-dir", str(out),
              *FAST]
    with pytest.raises(OutputDirNotEmptyError, match=r"is not empty \(adapter_model.safetensors\).*--overwrite"):
        main(["train", *common])
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no staging folder left beside it
    assert (out / "adapter_model.safetensors").read_bytes() == b"stale adapter"
    (out / "stale-notes.txt").write_text("from an older run")
    assert main(["train", *common, "--overwrite", "--method", "lora:attn"]) == 0
    assert "stale-notes.txt" not in {p.name for p in out.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    model = musicpeft.load_adapter(load_base("tiny-musicgen", "cpu").model, str(out))
    assert model.peft_config["default"].r == 2  # the new LoRA, not the stale file


@pytest.mark.parametrize("base", ["tiny-musicgen", "tiny-audioldm2"])
def test_infinite_learning_rate_stops_with_an_error_and_saves_nothing(tmp_path, capsys, base):
    out = tmp_path / "adapter"
    argv = ["train", "--base", base, "--data", "rendered:107:2", "--eval-fraction", "0", "--output-dir", str(out),
            "--learning-rate", "inf", *FAST]
    if base == "tiny-audioldm2":
        argv += ["--clip-seconds", "1.28"]
    assert main(argv, raise_errors=False) == 2
    err = capsys.readouterr().err  # progress bars aside, one line: the reason
    errors = [line[line.index("musicpeft train: error:"):] for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith("musicpeft train: error: training stopped") and "finite" in errors[0], errors
    assert list(tmp_path.iterdir()) == []  # no adapter, no summary, no staging folder
    with pytest.raises(NonFiniteTrainingError, match="training stopped"):
        main(argv)


def _adapter_tensors(folder) -> dict:
    from safetensors.torch import load_file

    files = sorted(folder.rglob("adapter_model.safetensors"))  # pipelines: one per adapted component
    assert files, folder
    return {f"{f.parent.relative_to(folder)}/{k}": v for f in files for k, v in load_file(f).items()}


def test_checkpoint_dir_and_resume_reproduce_the_uninterrupted_run(tmp_path, capsys):
    common = ["--base", "tiny-musicgen", "--data", "rendered:107:4", "--eval-fraction", "0", *FAST,
              "--max-steps", "4", "--learning-rate", "0.01"]
    assert main(["train", *common, "--output-dir", str(tmp_path / "straight"),
                 "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    straight = _adapter_tensors(tmp_path / "straight")
    summary = train(tmp_path, *common, "--resume", str(tmp_path / "ck" / "checkpoint-2"))
    assert summary["steps"] == 4
    resumed = _adapter_tensors(tmp_path / "adapter")
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)

    model_only = tmp_path / "model-only"
    model_only.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json", "trainer_state.json"):
        (model_only / name).write_bytes((tmp_path / "ck" / "checkpoint-2" / name).read_bytes())
    assert main(["train", *common, "--output-dir", str(tmp_path / "x"), "--resume", str(model_only)],
                raise_errors=False) == 2
    assert "lacks optimizer.pt" in capsys.readouterr().err
    with pytest.raises(ValueError, match="only MusicGen runs"):
        main(["train", "--base", "tiny-audioldm2", "--data", "rendered:107:2", "--resume", str(model_only),
              "--output-dir", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


def test_concept_methods_train_and_load_with_the_placeholder(tmp_path):
    from musicpeft.tiny import tiny_musicgen_processor
    from musicpeft.tuners.concept_identifier import loading, placeholders

    for method in ("concepts", "pivotal"):
        out = tmp_path / method
        assert main(["train", "--base", "tiny-musicgen", "--data", "rendered:107:2", "--method", method,
                     "--concept", "koto", "--output-dir", str(out), *FAST, "--epochs", "1",
                     "--encode-cache", str(tmp_path / "enc")]) == 0
        summary = json.loads((out / "train_summary.json").read_text())
        assert (summary["steps"], summary["placeholder"], summary["train_clips"]) == (2, "<koto>", 2)
        assert summary["recipe"] == {"concepts": "tokens_only", "pivotal": "dreamstyler"}[method]
        base = load_base("tiny-musicgen", "cpu")
        processor = tiny_musicgen_processor()
        model = loading.load_concept_adapter(base.model, str(out), processor=processor)
        assert "<koto>" in placeholders.placeholder_definitions(processor.tokenizer)  # the prompt word works again
        assert model.peft_config["default"].concepts == ["koto"]
    with pytest.raises(ValueError, match="concept: --method pivotal needs --concept NAME"):
        TrainArguments(base="tiny-musicgen", data="rendered:107:2", method="pivotal")
    with pytest.raises(ValueError, match="concept: only the methods concepts, pivotal and dreamstyler"):
        TrainArguments(base="tiny-musicgen", data="rendered:107:2", concept="koto")
    with pytest.raises(ValueError, match="concept: 'a b' cannot be written as a placeholder"):  # before any load
        TrainArguments(base="tiny-musicgen", data="rendered:107:2", method="concepts", concept="a b")


def without_dropout(monkeypatch) -> None:
    """Bases loaded by `musicpeft train` get dropout 0, so runs that split a batch differently can agree."""
    import importlib.util
    from pathlib import Path

    import musicpeft.training.runner as train_cli

    script = Path(__file__).parent / "scripts" / "train_without_dropout.py"
    spec = importlib.util.spec_from_file_location("train_without_dropout", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(train_cli, "load_base", module.load_without_dropout)


def test_gradient_accumulation_matches_the_larger_batch(tmp_path, monkeypatch):
    without_dropout(monkeypatch)
    common = ["--base", "tiny-musicgen", "--data", "rendered:107:2", "--eval-fraction", "0", *FAST, "--max-steps",
              "2", "--learning-rate", "0.01", "--encode-cache", str(tmp_path / "enc")]
    assert main(["train", *common, "--batch-size", "2", "--output-dir", str(tmp_path / "big")]) == 0
    assert main(["train", *common, "--batch-size", "1", "--gradient-accumulation-steps", "2",
                 "--output-dir", str(tmp_path / "acc")]) == 0
    big, acc = _adapter_tensors(tmp_path / "big"), _adapter_tensors(tmp_path / "acc")
    assert big.keys() == acc.keys()
    for key in big:
        torch.testing.assert_close(acc[key], big[key], rtol=1e-4, atol=1e-5)
    summaries = [json.loads((tmp_path / d / "train_summary.json").read_text()) for d in ("big", "acc")]
    assert [s["steps"] for s in summaries] == [2, 2]
    assert summaries[1]["train_loss"] == pytest.approx(summaries[0]["train_loss"], rel=1e-5)


@pytest.mark.parametrize("base", ["tiny-musicgen", "tiny-audioldm2"])
def test_bf16_mixed_precision_on_cpu(tmp_path, base):
    extra = ["--clip-seconds", "1.28", "--gradient-accumulation-steps", "2"] if base == "tiny-audioldm2" else []
    summary = train(tmp_path, "--base", base, "--data", "rendered:107:2", "--eval-fraction", "0",
                    "--mixed-precision", "bf16", *extra)
    assert summary["steps"] == 2 and summary["arguments"]["mixed_precision"] == "bf16"
    assert_finite(summary)
    weights = _adapter_tensors(tmp_path / "adapter")
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in weights.values())  # fp32 master weights


def test_overwrite_never_replaces_the_data_or_the_current_folder(tmp_path, monkeypatch):
    data = tmp_path / "out" / "clips"
    data.mkdir(parents=True)
    (data / "metadata.jsonl").write_text(json.dumps({"file_name": "a.wav", "text": "x"}) + "\n")
    with pytest.raises(ValueError, match="data: .*clips lies inside --output-dir"):
        main(["train", "--base", "tiny-musicgen", "--data", str(data), "--output-dir", str(tmp_path / "out"),
              "--overwrite"])
    monkeypatch.chdir(data)
    for output in (".", str(tmp_path)):
        with pytest.raises(ValueError, match="output_dir: .* is the current folder or holds it"):
            main(["train", "--base", "tiny-musicgen", "--data", "rendered:107:2", "--output-dir", output,
                  "--overwrite"])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["clips", "metadata.jsonl", "out"]
