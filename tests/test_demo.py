"""`musicpeft demo` end to end on the shipped tiny trained models, with small settings."""

from __future__ import annotations

import json
import math
import shlex

import pytest
import soundfile as sf
import torch
from peft import PeftModel

import musicpeft
from musicpeft.cli import main
from musicpeft.evaluation.micro_world import trained_models_available

pytestmark = pytest.mark.skipif(
    not trained_models_available(), reason="the trained tiny models are not in this checkout (issue 8)"
)


def test_demo_writes_its_report_audio_figure_and_a_loadable_adapter(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), "--steps", "4", "--train-clips", "8", "--heldout-clips", "4",
                 "--generations", "2", "--seconds", "1.0", "--num-virtual-tokens", "4"]) == 0
    printed = capsys.readouterr().out
    assert "held-out token cross-entropy" in printed and "classifier" in printed
    report = json.loads((out / "report.json").read_text())
    for side in ("before", "after"):
        for key in ("clap_score", "audio_alignment", "classifier_rate", "classifier_probability", "kld",
                    "heldout_cross_entropy"):
            assert math.isfinite(report[side][key]), (side, key)
    # the held-out koto clips are the ceiling: the classifier recognises them and they are their own KLD reference
    assert report["heldout_clips"]["classifier_rate"] > 0.5 and report["heldout_clips"]["kld"] < 1e-9
    assert set(report["improved"]) >= {"clap_score", "kld", "classifier_rate", "heldout_cross_entropy"}
    assert report["first_logged_loss"] != report["last_logged_loss"]
    md = (out / "report.md").read_text()
    assert "| held-out token cross-entropy (nats) | lower |" in md and "spectrograms.png" in md
    # everything the demo leaves is listed in its report (no stray trainer/ scratch folder)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["data", "evaluation", "koto-prompt", "report.md", "report.json", "spectrograms.png", "before.wav",
         "after.wav", "reference.wav"])
    for listed in ("`data/`", "`koto-prompt/`", "`evaluation/`"):
        assert listed in md
    assert (out / "data" / "train" / "metadata.jsonl").read_text().count("\n") == 8
    assert (out / "koto-prompt" / "train_summary.json").is_file() and (out / "evaluation" / "report.md").is_file()
    # it ran musicpeft train and musicpeft evaluate: the commands it lists parse back to its arguments
    from musicpeft.cli import build_parser

    train = build_parser().parse_args(shlex.split(report["commands"]["train"])[1:])
    assert (train.max_steps, train.num_virtual_tokens, train.lr_scheduler_type) == (4, 4, "constant")
    assert train.data == str(out / "data" / "train") and train.output_dir == str(out / "koto-prompt")
    evaluate = build_parser().parse_args(shlex.split(report["commands"]["evaluate"])[1:])
    assert evaluate.adapters == [str(out / "koto-prompt")] and evaluate.score_reference
    assert evaluate.heldout == evaluate.reference == str(out / "data" / "heldout")
    assert report["commands"]["train"] in md and report["commands"]["evaluate"] in md
    from musicpeft.tiny import load_trained_musicgen

    base, _ = load_trained_musicgen()
    for name in ("before", "after", "reference"):
        audio, rate = sf.read(out / f"{name}.wav")
        assert rate == base.config.audio_encoder.sampling_rate
        assert len(audio) == int(round(1.0 * rate)) and abs(audio).max() > 0
    assert (out / "spectrograms.png").stat().st_size > 10_000

    def prompt_of(model):
        return [p for n, p in model.named_parameters() if "soft_prompt" in n][0].detach().clone()

    loaded = prompt_of(PeftModel.from_pretrained(base, out / "koto-prompt"))
    untrained = prompt_of(musicpeft.add_adapter(load_trained_musicgen()[0],
                                                musicpeft.SoftMusicPromptConfig(num_virtual_tokens=4, init_seed=0)))
    assert loaded.shape == untrained.shape and torch.isfinite(loaded).all()
    assert not torch.allclose(loaded, untrained), "the saved prompt is its initialisation: training did not reach it"
