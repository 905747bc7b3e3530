"""`musicpeft evaluate` end to end on the tiny models: report, plots, wavs, cross-entropy; prompt file errors."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from fixtures import tiny_audioldm2_pipeline, tiny_musicgen
from PIL import Image

import musicpeft
from musicpeft.cli import main
from musicpeft.data.render import render_clips
from musicpeft.data.sources import parse_rendered
from musicpeft.evaluation import EvaluateArguments, parse_adapters
from musicpeft.evaluation.generation import generate_clips, load_base
from musicpeft.evaluation.prompt_sets import load_prompt_set

SR = 16000
PROMPTS = {"instruments": ["a folk melody on koto", "a slow piano waltz"],
           "genres": ["a cheerful irish jig", "a calm baroque chorale"]}
PLOTS = ("per_prompt_clap_score", "per_prompt_kld", "per_prompt_audio_alignment", "per_category",
         "feature_distributions", "spectrograms")
EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "prompts", "four_groups.json")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("evaluate")
    (root / "prompts.json").write_text(json.dumps(PROMPTS))
    model = tiny_musicgen(seed=0)
    musicpeft.add_adapter(model, musicpeft.SoftMusicPromptConfig(num_virtual_tokens=4))
    musicpeft.save_adapter(model, root / "mg-prompt")
    pipe = tiny_audioldm2_pipeline(seed=0)
    musicpeft.add_adapter(pipe, musicpeft.SoftMusicPromptConfig(num_virtual_tokens=4))
    musicpeft.save_adapter(pipe, root / "aldm-prompt")
    heldout = root / "heldout"
    heldout.mkdir()
    with open(heldout / "metadata.jsonl", "w") as handle:
        for i, clip in enumerate(render_clips(2, 1.0, sample_rate=SR, program=107, seed=5)):
            sf.write(heldout / f"clip{i}.wav", clip, SR)
            handle.write(json.dumps({"path": f"clip{i}.wav", "description": "a folk melody on koto"}) + "\n")
    return {"root": root, "prompts": str(root / "prompts.json"), "heldout": str(heldout)}


def run_cli(inputs: dict, name: str, *extra: str) -> tuple[dict, str]:
    out = inputs["root"] / name
    common = ["--prompts", inputs["prompts"], "--reference", "rendered:107:3", "--clap-model", "tiny",
              "--seconds", "1", "--output-dir", str(out)]
    assert main(["evaluate", *common, *extra]) == 0
    return json.loads((out / "results.json").read_text()), (out / "report.md").read_text()


def check_png_plots(out) -> None:
    for plot in PLOTS:
        path = out / f"{plot}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert min(image.size) > 100, (plot, image.size)


def check_scores(payload: dict, names: list[str]) -> None:
    assert payload["baseline"] == "base" and list(payload["results"]) == names
    for name in names:
        result = payload["results"][name]
        assert result["num_scored"] == result["num_items"] == 4
        for key in ("clap_score_per_item", "kld_per_item"):
            assert len(result[key]) == 4 and all(math.isfinite(v) for v in result[key]), (name, key)
        assert math.isfinite(result["kld"]) and result["kld"] > 0
        assert all(math.isfinite(v) for v in result["kld_per_feature"].values())
    assert payload["categories"] == ["instruments"] * 2 + ["genres"] * 2
    assert set(payload["per_category"]["clap_score_per_item"]) == {"instruments", "genres"}


def read_wavs(out, name: str) -> list[np.ndarray]:
    folder = out / "audio" / name
    clips = []
    for file in sorted(os.listdir(folder)):
        audio, rate = sf.read(folder / file, dtype="float32")
        assert rate == SR and len(audio) == SR, (file, rate, len(audio))
        clips.append(audio)
    assert len(clips) == 4
    return clips


@pytest.fixture(scope="module")
def musicgen_run(inputs) -> dict:
    """One `musicpeft evaluate` of a soft prompt on the tiny MusicGen, shared by the tests that read its output."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        payload, report = run_cli(
            inputs, "musicgen", "--base", "tiny-musicgen", "--adapters", f"koto={inputs['root'] / 'mg-prompt'}",
            "--heldout", inputs["heldout"], "--seed", "7",
        )
    return {"payload": payload, "report": report, "out": inputs["root"] / "musicgen", "printed": printed.getvalue()}


def test_evaluate_musicgen_soft_prompt(musicgen_run):
    payload, report, out = musicgen_run["payload"], musicgen_run["report"], musicgen_run["out"]
    check_scores(payload, ["base", "koto"])
    ce = payload["token_cross_entropy"]
    assert set(ce) == {"base", "koto"}
    for values in ce.values():
        assert math.isfinite(values["cross_entropy"]) and values["tokens"] == 2 * 4 * 100
        assert values["perplexity"] == pytest.approx(math.exp(values["cross_entropy"]))
    # The soft prompt changes what the decoder sees, so both its likelihood and its clips differ from the base's.
    assert ce["koto"]["cross_entropy"] != ce["base"]["cross_entropy"]
    assert payload["setup"]["seeds"] == [7, 8, 9, 10] and payload["setup"]["family"] == "musicgen"

    assert "| base |" in report and "| koto |" in report
    assert "Token cross-entropy on held-out clips" in report
    check_png_plots(out)
    base_wavs, koto_wavs = read_wavs(out, "base"), read_wavs(out, "koto")
    assert all(not np.array_equal(a, b) for a, b in zip(base_wavs, koto_wavs, strict=True))
    # The base's clips are what a fresh base generates with prompt i's seed, alone rather than in a batch of 4
    # (equal up to float rounding in the codec: batch shapes change the order of float sums, ~6e-8).
    base = load_base("tiny-musicgen", "cpu")
    fresh = generate_clips(base, base.model, [PROMPTS["genres"][0]], [9], seconds=1.0, guidance_scale=3.0)
    np.testing.assert_allclose(fresh[0], base_wavs[2], rtol=0, atol=1e-6)
    printed = musicgen_run["printed"]
    assert "koto" in printed and "cross_entropy" in printed and "report.md" in printed


def test_evaluate_audioldm2_soft_prompt(inputs):
    payload, report = run_cli(
        inputs, "audioldm2", "--base", "tiny-audioldm2", "--adapters", str(inputs["root"] / "aldm-prompt"),
        "--num-inference-steps", "2", "--batch-size", "3",
        # The random tiny vocoder's output peaks near 1e-7, under the default silence threshold.
        "--silence-threshold", "0",
    )
    check_scores(payload, ["base", "aldm-prompt"])
    assert payload["token_cross_entropy"] is None and "Token cross-entropy" not in report
    assert "| base |" in report and "| aldm-prompt |" in report
    out = inputs["root"] / "audioldm2"
    check_png_plots(out)
    base_wavs, adapted = read_wavs(out, "base"), read_wavs(out, "aldm-prompt")
    assert all(np.abs(a - b).max() > 1e-3 * np.abs(a).max() for a, b in zip(base_wavs, adapted, strict=True))


def test_heldout_needs_musicgen_and_fails_before_loading(inputs):
    with pytest.raises(ValueError, match="heldout: token cross-entropy needs a MusicGen base"):
        main(["evaluate", "--base", "tiny-audioldm2", "--adapters", "a", "--prompts", inputs["prompts"],
              "--reference", "rendered:107:2", "--heldout", inputs["heldout"]])


BAD_FILES = [
    ("bad.jsonl", '{"category": "a", "prompt": "x"}\n{"category": "a"}\n', r"bad\.jsonl:2: .*'prompt'"),
    ("bad.jsonl", '{"category": "a", "prompt": "x"}\n\n{"category": 1, prompt}\n', r"bad\.jsonl:3: not valid JSON"),
    ("bad.jsonl", '{"category": "a", "prompt": "x"}\n["a", "y"]\n', r"bad\.jsonl:2: expected a JSON object"),
    ("bad.jsonl", '{"category": "", "prompt": "x"}\n', r"bad\.jsonl:1: 'category' must be a non-empty string"),
    ("bad.json", '["a folk melody", "a jig"]', r"bad\.json:1: the file holds a JSON list"),
    ("bad.json", '{\n  "a": ["x"],\n  "b": ["y",]\n}\n', r"bad\.json:3:\d+: not valid JSON"),
    ("bad.json", '{"a": "a folk melody"}', r"bad\.json: category 'a': expected a non-empty list"),
    ("bad.json", '{"a": ["x", 3]}', r"bad\.json: category 'a' item 1: a prompt must be a non-empty string"),
    ("bad.json", '{"a": []}', r"bad\.json: category 'a': expected a non-empty list"),
    ("bad.json", " \n", r"bad\.json: the file is empty"),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD_FILES)
def test_bad_prompt_files_name_file_and_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_prompt_set(path)


def test_bad_prompt_file_fails_the_cli_before_any_model_loads(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"category": "a", "prompt": "x"}\n{"category": "a", "promt": "y"}\n')
    with pytest.raises(ValueError, match=r"prompts\.jsonl:2: the object has no 'prompt' key"):
        main(["evaluate", "--base", "no/such-model", "--adapters", "a", "--prompts", str(path),
              "--reference", "rendered:107:2"])
    with pytest.raises(FileNotFoundError, match="no such prompts file"):
        load_prompt_set(tmp_path / "missing.json")


def test_prompt_sets_read_both_shapes_and_limit(tmp_path):
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"category": "b", "prompt": "y", "id": 3}\n{"category": "a", "prompt": "x"}\n'
                     '{"category": "b", "prompt": "z"}\n')
    prompt_set = load_prompt_set(lines)
    assert prompt_set.prompts == ("y", "x", "z") and prompt_set.category_names() == ["b", "a"]
    assert prompt_set.limit(1).prompts == ("y", "x")
    single = tmp_path / "one.jsonl"
    single.write_text('{"category": "a", "prompt": "x"}')
    assert load_prompt_set(single).prompts == ("x",)

    example = load_prompt_set(EXAMPLE)
    assert example.category_names() == ["instruments", "genres", "cultural_themes", "stories"]
    assert len(example) == 20 and len(example.limit(2)) == 8


def test_adapter_and_rendered_specs():
    assert parse_adapters(["runs/koto-prompt/", "b=user/repo", "user/other"]) == {
        "koto-prompt": "runs/koto-prompt/", "b": "user/repo", "other": "user/other"}
    with pytest.raises(ValueError, match="a second adapter named 'x'"):
        parse_adapters(["a/x", "b/x"])
    with pytest.raises(ValueError, match="the name 'base' is the base model's"):
        parse_adapters(["runs/base"])
    with pytest.raises(ValueError, match="no adapter folder or Hub id after '='"):
        parse_adapters(["name="])
    assert parse_rendered("rendered:107:4", "reference") == (107, 4)
    assert parse_rendered("rendered::4", "reference") == (None, 4)
    assert parse_rendered("some/folder", "reference") is None
    for bad in ("rendered:107", "rendered:200:4", "rendered:koto:4", "rendered:107:0"):
        with pytest.raises(ValueError, match="reference: .* should read 'rendered:<program>:<n>'"):
            parse_rendered(bad, "reference")
    with pytest.raises(ValueError, match="seconds must be > 0, got 0"):
        EvaluateArguments(base="b", adapters=["a"], prompts="p", reference="r", seconds=0)
    with pytest.raises(ValueError, match="dtype must be one of"):
        EvaluateArguments(base="b", adapters="a", prompts="p", reference="r", dtype="fp8")


def test_reference_folder_without_metadata_and_heldout_needing_it(inputs, tmp_path):
    from musicpeft.data.sources import load_clips

    for i, clip in enumerate(render_clips(2, 1.0, sample_rate=SR, program=107, seed=5)):
        sf.write(tmp_path / f"{i}.wav", clip, 2 * SR)  # stored at 32 kHz, read back at the model's 16 kHz
    clips, texts = load_clips(str(tmp_path), SR, 1.0, 0, "reference")
    assert texts is None and [len(c) for c in clips] == [SR // 2, SR // 2]
    with pytest.raises(FileNotFoundError, match=r"heldout: .* has no metadata file \(metadata.jsonl, metadata.csv"):
        load_clips(str(tmp_path), SR, 1.0, 0, "heldout", need_text=True)
    _, heldout = load_clips(inputs["heldout"], SR, 1.0, 0, "heldout", need_text=True)
    assert heldout["text"] == ["a folk melody on koto"] * 2


def test_a_clap_model_that_cannot_load_names_the_flag_and_what_works_offline(tmp_path):
    from musicpeft.evaluation.runner import _clap_backend

    for source in (str(tmp_path / "no-clap-here"), "laion/larger_clap_music"):  # the suite runs offline
        args = EvaluateArguments(base="tiny-musicgen", adapters=["a"], prompts="p.json", reference="rendered:107:2",
                                 clap_model=source)
        expected = rf"(?s)clap_model: cannot load '{source}' .*pass --clap-model a local folder, a LAION-CLAP"
        with pytest.raises(OSError, match=expected + r" checkpoint file or 'tiny-trained'"):
            _clap_backend(args, "cpu")


def test_unreachable_adapter_fails_before_loading(inputs):
    with pytest.raises(musicpeft.AdapterFileError, match="adapters: nothing=nobody/nothing: "):
        main(["evaluate", "--base", "tiny-musicgen", "--adapters", "nobody/nothing", "--prompts", inputs["prompts"],
              "--reference", "rendered:107:2"])
    with pytest.raises(FileNotFoundError, match="reference: 'no/such/folder' is neither a folder nor"):
        main(["evaluate", "--base", "tiny-musicgen", "--adapters", "a", "--prompts", inputs["prompts"],
              "--reference", "no/such/folder"])


def _saved_with_changed_weights(model, config, folder, seed: int) -> str:
    """Attach `config`, move every adapter weight off its seeded initial value, save; returns the folder."""
    import torch

    peft_model = musicpeft.add_adapter(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in (p for p in peft_model.parameters() if p.requires_grad):
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    musicpeft.save_adapter(model, folder)
    return str(folder)


def test_batched_musicgen_clips_do_not_depend_on_the_batch():
    base = load_base("tiny-musicgen", "cpu")
    prompts = ["a folk melody on koto", "a slow piano waltz", "a cheerful irish jig with fiddle and flute", "calm"]
    seeds = [7, 8, 9, 10]
    for guidance in (3.0, 1.0):
        alone = generate_clips(base, base.model, prompts, seeds, seconds=0.5, guidance_scale=guidance, batch_size=1)
        batched = generate_clips(base, base.model, prompts, seeds, seconds=0.5, guidance_scale=guidance, batch_size=3)
        for a, b in zip(alone, batched, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
        # Another batch-mate, another position: the same clip for the same prompt and seed.
        elsewhere = generate_clips(base, base.model, ["drums", prompts[2]], [1, 9], seconds=0.5,
                                   guidance_scale=guidance, batch_size=2)
        np.testing.assert_allclose(elsewhere[1], alone[2], rtol=0, atol=1e-6)
        # ...while another seed gives another clip (by far more than the float rounding allowed above).
        reseeded = generate_clips(base, base.model, [prompts[2]], [99], seconds=0.5, guidance_scale=guidance)
        assert np.abs(reseeded[0] - alone[2]).max() > 1e-5


def test_adapters_switched_on_one_base_generate_what_fresh_loads_do(tmp_path):
    """Two soft prompts share one PeftModel (set_adapter); a LoRA needs another, after which the base is intact."""
    from musicpeft.evaluation.generation import _fingerprint, switch_adapters
    from musicpeft.training.presets import lora_config

    folders = {
        "p1": _saved_with_changed_weights(tiny_musicgen(seed=0), musicpeft.SoftMusicPromptConfig(num_virtual_tokens=3),
                                          tmp_path / "p1", 1),
        "lora": _saved_with_changed_weights(tiny_musicgen(seed=0), lora_config("musicgen", "attn", r=2),
                                            tmp_path / "lora", 2),
        "p2": _saved_with_changed_weights(tiny_musicgen(seed=0), musicpeft.SoftMusicPromptConfig(num_virtual_tokens=5),
                                          tmp_path / "p2", 3),
    }
    prompts, seeds = ["a folk melody on koto", "a slow piano waltz"], [3, 4]
    base = load_base("tiny-musicgen", "cpu")
    before = _fingerprint(base)
    base_clips = generate_clips(base, base.model, prompts, seeds, seconds=0.5, guidance_scale=3.0)
    switched, order = {}, []
    for name, model in switch_adapters(base, folders):
        order.append(name)
        switched[name] = generate_clips(base, model, prompts, seeds, seconds=0.5, guidance_scale=3.0)
    assert order == ["p1", "p2", "lora"]  # one PeftModel per kind: the two soft prompts together
    for name, folder in folders.items():
        fresh = load_base("tiny-musicgen", "cpu")
        expected = generate_clips(fresh, musicpeft.load_adapter(fresh.model, folder), prompts, seeds, seconds=0.5,
                                  guidance_scale=3.0)
        for a, b, plain in zip(switched[name], expected, base_clips, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
            assert np.abs(a - plain).max() > 1e-5, name  # the adapter was active
    assert _fingerprint(base) == before
    assert not [n for n, _ in base.model.named_modules() if "lora" in n or "prompt" in n]
    again = generate_clips(base, base.model, prompts, seeds, seconds=0.5, guidance_scale=3.0)
    for a, b in zip(again, base_clips, strict=True):
        np.testing.assert_array_equal(a, b)


def test_push_card_from_the_evaluation(musicgen_run, inputs, local_hub):
    """`musicpeft push --results`: the card gets the run's table and the adapter's clips, uploaded and linked."""
    from huggingface_hub import ModelCard, hf_hub_download

    from musicpeft.model_card import check_card_metadata

    results = str(musicgen_run["out"] / "results.json")
    folder = str(inputs["root"] / "mg-prompt")
    assert main(["push", "--folder", folder, "--repo-id", "user/koto", "--results", results]) == 0
    summary = musicgen_run["payload"]["summary"]
    ce = musicgen_run["payload"]["token_cross_entropy"]
    card = ModelCard.load("user/koto")
    check_card_metadata(card.content)
    for name, label in (("base", "base (no adapter)"), ("koto", "**koto** (this adapter)")):
        row = next(line for line in card.text.splitlines() if line.startswith(f"| {label} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        numbers = [summary[name]["clap_score"], summary[name]["kld"], summary[name]["fd_clap"],
                   ce[name]["cross_entropy"], ce[name]["perplexity"]]
        assert cells[1:6] == [f"{v:.4f}" for v in numbers] and cells[6] == "4/4", row
    files = set(local_hub.api.list_repo_files("user/koto"))
    wavs = sorted(f for f in files if f.startswith("samples/") and f.endswith(".wav"))
    assert len(wavs) == 4 and "samples/spectrograms.png" in files
    for i, wav in enumerate(wavs):
        assert f'<audio controls src="{wav}"></audio>' in card.text
        assert f'"{PROMPTS[["instruments", "genres"][i // 2]][i % 2]}"' in card.text
        uploaded, _ = sf.read(hf_hub_download("user/koto", wav), dtype="float32")
        np.testing.assert_array_equal(uploaded, read_wavs(musicgen_run["out"], "koto")[i])
    with pytest.raises(ValueError, match="has no adapter named 'nope'; it has koto"):
        main(["push", "--folder", folder, "--repo-id", "user/other", "--results", results, "--results-model", "nope"])
    with pytest.raises(ValueError, match="results: .* has no 'summary'"):
        main(["push", "--folder", folder, "--repo-id", "user/other", "--results", inputs["prompts"]])


def test_the_shipped_trained_tiny_models_are_named_bases_and_judges():
    from musicpeft.evaluation.generation import TINY_MUSICGEN_TRAINED, base_family, load_base
    from musicpeft.evaluation.runner import TINY_CLAP_TRAINED, EvaluateArguments, _clap_backend
    from musicpeft.tiny import load_trained_musicgen

    assert base_family(TINY_MUSICGEN_TRAINED) == "musicgen"
    base = load_base(TINY_MUSICGEN_TRAINED, "cpu")
    shipped, _ = load_trained_musicgen()
    name, weight = next(iter(shipped.state_dict().items()))
    assert torch.equal(base.model.state_dict()[name], weight)
    args = EvaluateArguments(base=TINY_MUSICGEN_TRAINED, adapters=["x=y"], prompts="-", reference="-",
                             clap_model=TINY_CLAP_TRAINED, batch_size=2)
    backend = _clap_backend(args, "cpu")
    # The trained judge tells a piano caption from a trumpet caption for rendered piano (a random CLAP would not).
    from musicpeft.tiny.world import world_clips

    clips = world_clips("piano", "heldout", 2, 4.0, backend.sampling_rate, seed=0)
    audio = backend.embed_audio([c["audio"] for c in clips])
    text = backend.embed_text(["a piece on piano", "a piece on trumpet"])
    scores = audio @ text.T
    assert (scores[:, 0] > scores[:, 1]).all(), scores


def test_extra_scores_and_the_reference_scored_like_a_model(inputs, tmp_path):
    from musicpeft.evaluation import run_evaluation

    seen = []

    def peak(clips, prompts):
        seen.append((len(clips), len(prompts)))
        return {"peak": float(np.mean([np.abs(c).max() for c in clips])), "counts": {"loud": len(clips)}}

    args = EvaluateArguments(base="tiny-musicgen", adapters=[f"koto={inputs['root'] / 'mg-prompt'}"],
                             prompts=inputs["prompts"], reference=inputs["heldout"], clap_model="tiny", seconds=1.0,
                             max_prompts_per_category=1, output_dir=str(tmp_path / "out"), score_reference=True)
    with contextlib.redirect_stdout(io.StringIO()):
        out = run_evaluation(args, extra_scores=peak)
    assert seen == [(2, 2), (2, 2), (2, 2)]  # base, koto, then the two reference clips
    payload = json.loads(open(out["results_json"], encoding="utf-8").read())
    for name in ("base", "koto"):
        assert payload["results"][name]["extra_scores"]["peak"] > 0
    reference = payload["reference_scores"]
    assert reference["texts"] == "captions" and reference["num_items"] == 2  # the heldout folder's metadata
    assert reference["kld"] == pytest.approx(0.0, abs=1e-9)  # the reference against itself
    assert out["reference_scores"]["clap_score"] == pytest.approx(reference["clap_score"])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## The reference clips themselves" in report
    assert "| model | peak |" in report and "| reference clips |" in report  # numeric extras only
