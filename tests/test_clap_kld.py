"""The clap_kld metric: scores on real audio, definitions, bad input, offline loading, LAION checkpoints, reports."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from musicpeft.metrics import (
    CheckpointError,
    ReferenceSet,
    compute_clap_kld,
    convert_laion_checkpoint,
    load_clap_backend,
    strip_placeholders,
    write_report,
)
from musicpeft.metrics.laion import infer_clap_config
from musicpeft.tiny.clap import tiny_clap, tiny_clap_config, tiny_clap_processor

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


@pytest.fixture(scope="module")
def clap():
    return load_clap_backend(tiny_clap(), tiny_clap_processor())


def _tones(n, seconds=1.0, sr=SR, base=220.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return [0.3 * np.sin(2 * np.pi * (base + 37 * i) * t) + 0.01 * rng.standard_normal(t.size) for i in range(n)]


@pytest.fixture(scope="module")
def rendered():
    """Bach pieces (4 s, 22.05 kHz): a piano reference set, and other pieces on piano and on violin."""
    from musicpeft.data.render import render_clips

    kw = dict(n=5, seconds=4.0, sample_rate=22050, composer="bach")
    return {
        "reference": render_clips(program=0, seed=0, **kw),
        "piano": render_clips(program=0, seed=1, **kw),
        "violin": render_clips(program=40, seed=1, **kw),
    }


# --- scores ----------------------------------------------------------------------------------


def test_kld_of_a_set_against_itself_is_zero(rendered):
    ref = rendered["reference"]
    result = compute_clap_kld(ref, None, ref, sampling_rate=22050, metrics=["kld"])
    assert result["kld"] == pytest.approx(0.0, abs=1e-12)
    assert set(result["kld_per_feature"]) >= {"mfcc", "chroma", "spectral", "zcr"}
    assert all(v == pytest.approx(0.0, abs=1e-12) for v in result["kld_per_feature"].values())
    assert all(v > 0 and np.isfinite(v) for v in result["kld_per_item"])


def test_kld_same_instrument_is_lower_than_another_instrument(rendered):
    reference = ReferenceSet(rendered["reference"], 22050)
    piano = compute_clap_kld(rendered["piano"], None, reference, sampling_rate=22050, metrics=["kld"])
    violin = compute_clap_kld(rendered["violin"], None, reference, sampling_rate=22050, metrics=["kld"])
    assert piano["kld"] < violin["kld"]
    assert np.mean(piano["kld_per_item"]) < np.mean(violin["kld_per_item"])
    # Timbre shows in the spectral family; the pieces (chroma) are the same in both sets.
    assert piano["kld_per_feature"]["spectral"] < violin["kld_per_feature"]["spectral"]


def test_all_scores_finite_and_in_range(clap, rendered):
    prompts = ["a calm piano piece", "bach chorale on <sks> piano", "a slow piano melody", "piano", "bach"]
    result = compute_clap_kld(rendered["piano"], prompts, rendered["reference"], sampling_rate=22050,
                              clap_model=clap)
    for key in ("clap_score", "text_alignment", "audio_alignment"):
        assert -1.0 <= result[key] <= 1.0, key
    assert result["kld"] >= 0 and result["fd_clap"] >= 0
    for key in ("clap_score_per_item", "kld_per_item", "audio_alignment_per_item"):
        assert len(result[key]) == 5 and all(np.isfinite(v) for v in result[key])
    assert result["num_scored"] == 5 and result["excluded"] == []
    assert result["delta_audio_alignment"] is None  # one concept only
    json.dumps(result)  # JSON-serialisable as it is


def test_clap_score_and_text_alignment_match_their_definitions(clap):
    clips = _tones(4, seconds=1.0)
    prompts = ["a <koto> piano piece", "a piano piece", "fast violin jig", "fast violin jig"]
    result = compute_clap_kld(clips, prompts, sampling_rate=SR, clap_model=clap)
    audio = clap.embed_audio(clips)
    text = clap.embed_text(prompts)
    np.testing.assert_allclose(result["clap_score_per_item"], np.sum(audio * text, axis=1), atol=1e-6)
    # Text alignment: placeholder removed, items of the same (stripped) prompt pooled.
    assert set(result["text_alignment_per_prompt"]) == {"a piano piece", "fast violin jig"}
    mean = audio[:2].mean(axis=0)
    expected = mean @ clap.embed_text(["a piano piece"])[0] / np.linalg.norm(mean)
    assert result["text_alignment_per_prompt"]["a piano piece"] == pytest.approx(expected, abs=1e-6)


def test_audio_alignment_per_concept_and_delta(clap):
    a, b, c = _tones(3, seconds=1.0, base=300.0)
    result = compute_clap_kld([a], ["x"], sampling_rate=SR, clap_model=clap,
                              concept_audio={"<a>": [a], "<bc>": [b, c]},
                              metrics=["audio_alignment", "delta_audio_alignment"])
    per = result["audio_alignment_per_concept"]
    assert per["<a>"] == pytest.approx(1.0, abs=1e-6)  # a clip against itself
    emb = clap.embed_audio([a, b, c])
    assert per["<bc>"] == pytest.approx(float(np.mean(emb[1:] @ emb[0])), abs=1e-6)
    assert result["audio_alignment"] == pytest.approx((per["<a>"] + per["<bc>"]) / 2)
    assert result["delta_audio_alignment"] == pytest.approx(abs(per["<a>"] - per["<bc>"]))


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("<koto> style piano piece", "style piano piece"),
        ("a jig in the style of <my-band> <my-band>_1, played fast", "a jig in the style of, played fast"),
        ("<v1>, calm music", "calm music"),
        ("no placeholder here", "no placeholder here"),
    ],
)
def test_strip_placeholders(prompt, expected):
    assert strip_placeholders(prompt) == expected


def test_long_clips_embed_deterministically_and_leave_numpy_rng_alone(clap):
    long_clip = _tones(1, seconds=6.5)[0]  # longer than the tiny CLAP's 4 s window: cropped
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = clap.embed_audio([long_clip])
    second = clap.embed_audio([long_clip])
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


# --- bad input -------------------------------------------------------------------------------


def test_empty_predictions_are_an_error():
    with pytest.raises(ValueError, match="predictions is empty"):
        compute_clap_kld([], [], metrics=["kld"])


def test_prompt_count_must_match():
    with pytest.raises(ValueError, match="prompts has 1 items but predictions has 2"):
        compute_clap_kld(_tones(2), ["one"], sampling_rate=SR)


def test_unusable_clips_are_excluded_and_reported(clap):
    good = _tones(3, seconds=1.0)
    bad_nan = good[0].copy()
    bad_nan[10] = np.nan
    bad_inf = good[1].copy()
    bad_inf[:3] = np.inf
    clips = [good[0], bad_nan, np.zeros(SR), bad_inf, np.full(SR, 0.25), good[1], good[2]]
    prompts = ["piano"] * len(clips)
    result = compute_clap_kld(clips, prompts, good, sampling_rate=SR, clap_model=clap)
    reasons = {e["index"]: e["reason"] for e in result["excluded"]}
    assert set(reasons) == {1, 2, 3, 4}
    assert "1 NaN" in reasons[1] and "3 Inf" in reasons[3]
    assert reasons[2].startswith("silent") and reasons[4].startswith("constant")
    assert result["num_scored"] == 3
    for key in ("clap_score", "kld", "audio_alignment", "text_alignment", "fd_clap"):
        assert np.isfinite(result[key]), key
    for key in ("clap_score_per_item", "kld_per_item"):
        assert [v is None for v in result[key]] == [False, True, True, True, True, False, False]
    with pytest.raises(ValueError, match=r"predictions\[1\]: non-finite"):
        compute_clap_kld(clips, prompts, good, sampling_rate=SR, clap_model=clap, on_invalid="raise")


def test_nothing_scorable_gives_none_aggregates_with_reasons(clap):
    result = compute_clap_kld([np.zeros(SR), np.full(SR, np.nan)], ["a", "b"], _tones(2), sampling_rate=SR,
                              clap_model=clap)
    assert result["num_scored"] == 0 and len(result["excluded"]) == 2
    assert result["kld"] is None and result["clap_score"] is None and "note" in result


def test_mixed_sampling_rates_are_resampled(clap):
    """Each clip is resampled from its own rate: to 22.05 kHz for the KLD, to the CLAP model's rate for CLAP."""
    import librosa

    clip = _tones(1, seconds=1.0, sr=44100)[0]
    other = _tones(1, seconds=1.0, seed=5)[0]
    reference = ReferenceSet(_tones(3, seconds=1.0), SR)
    mixed = compute_clap_kld([clip, other], ["piano", "violin"], reference, sampling_rate=[44100, SR],
                             clap_model=clap, metrics=["kld", "clap_score"])
    assert mixed["input_sampling_rates"] == [SR, 44100]
    for_kld = librosa.resample(clip, orig_sr=44100, target_sr=22050)
    alone = compute_clap_kld([for_kld], None, reference, sampling_rate=22050, metrics=["kld"])
    assert mixed["kld_per_item"][0] == pytest.approx(alone["kld_per_item"][0], rel=1e-9)
    for_clap = librosa.resample(clip, orig_sr=44100, target_sr=clap.sampling_rate)
    alone = compute_clap_kld([for_clap], ["piano"], sampling_rate=clap.sampling_rate, clap_model=clap,
                             metrics=["clap_score"])
    assert mixed["clap_score_per_item"][0] == pytest.approx(alone["clap_score_per_item"][0], abs=1e-6)
    as_dict = compute_clap_kld([{"array": clip, "sampling_rate": 44100}], None, reference, metrics=["kld"])
    assert as_dict["kld_per_item"][0] == pytest.approx(mixed["kld_per_item"][0], rel=1e-9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sampling_rate=None), r"predictions\[0\] has no sampling rate"),
        (dict(sampling_rate=[SR]), "got 1 sampling rates for 2 clips"),
        (dict(sampling_rate=-5), "positive"),
        (dict(sampling_rate=SR, metrics=["bleu"]), "unknown metrics"),
        (dict(sampling_rate=SR, metrics=["kld"]), "'kld' needs reference_audio"),
        (dict(sampling_rate=SR, metrics=["delta_audio_alignment"], reference_audio=_tones(1)), "two concepts"),
    ],
)
def test_argument_errors_name_the_problem(kwargs, match):
    kwargs.setdefault("prompts", ["a", "b"])
    with pytest.raises(ValueError, match=match):
        compute_clap_kld(_tones(2), **kwargs)


def test_audio_shapes():
    clips = _tones(2)
    with pytest.raises(ValueError, match=r"\(channels, samples\)"):
        compute_clap_kld([np.stack([clips[0]] * 2, axis=1)], None, clips, sampling_rate=SR, metrics=["kld"])
    stereo = compute_clap_kld([np.stack([clips[0], clips[0]])], None, clips, sampling_rate=SR, metrics=["kld"])
    mono = compute_clap_kld([clips[0]], None, clips, sampling_rate=SR, metrics=["kld"])
    assert stereo["kld"] == pytest.approx(mono["kld"])


def test_reference_shorter_than_one_frame_is_an_error():
    with pytest.raises(ValueError, match=r"reference_audio has no usable clip.*shorter than one analysis frame"):
        compute_clap_kld(_tones(2), None, [np.ones(300) * 0.1, np.sin(np.arange(500))], sampling_rate=SR,
                         metrics=["kld"])
    with pytest.raises(ValueError, match="reference_audio is empty"):
        compute_clap_kld(_tones(2), None, [], sampling_rate=SR, metrics=["kld"])


# --- evaluate --------------------------------------------------------------------------------


_LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import musicpeft  # registers clap_kld with evaluate
    assert "evaluate" not in sys.modules, "registering must not import evaluate"
    import evaluate  # the import hook wraps evaluate's module factory now
    from musicpeft.tiny.clap import tiny_clap, tiny_clap_processor
    out = {}
    try:  # evaluate on its own cannot resolve the bare name offline
        evaluate.loading.evaluation_module_factory.__wrapped__("clap_kld")
    except FileNotFoundError as err:
        out["unregistered"] = str(err)
    clips = [0.3 * np.sin(2 * np.pi * f * np.arange(16000) / 16000) for f in (220, 330, 440)]
    for label, path in (("bare", "clap_kld"), ("space", sys.argv[1])):
        metric = evaluate.load(path, clap_model=tiny_clap(), clap_processor=tiny_clap_processor(),
                               keep_in_memory=True)
        r = metric.compute(predictions=clips, prompts=["piano", "violin", "flute"], reference_audio=clips,
                           sampling_rate=16000)
        out[label] = {"cls": type(metric).__name__, "kld": r["kld"], "clap_score": r["clap_score"]}
    try:
        evaluate.load("clap_kld", keep_in_memory=True).compute(predictions=[], prompts=[])
    except ValueError as err:
        out["empty"] = str(err)
    print(json.dumps(out))
    """
)


def test_bare_name_loads_offline_in_a_fresh_process(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1",
               HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, str(ROOT / "metrics" / "clap_kld")],
                          env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "Couldn't find a module script" in out["unregistered"]
    assert out["bare"]["cls"] == "ClapKld"
    assert out["bare"]["kld"] == pytest.approx(0.0, abs=1e-12)
    assert -1 <= out["bare"]["clap_score"] <= 1
    assert out["space"] == out["bare"]  # the Space folder loads the same metric
    assert out["empty"].startswith("predictions is empty")


def test_evaluate_metric_checks_lengths(clap):
    """Also the in-process path: evaluate imported before registration gets wrapped at registration."""
    import evaluate

    from musicpeft.metrics import register_clap_kld

    register_clap_kld()
    metric = evaluate.load("clap_kld", clap_model=clap, keep_in_memory=True)
    with pytest.raises(ValueError, match="prompts has 1 items but predictions has 2"):
        metric.compute(predictions=_tones(2), prompts=["x"], sampling_rate=SR)
    result = metric.compute(predictions=_tones(2), prompts=["x", "y"], sampling_rate=SR, metrics=["clap_score"])
    assert len(result["clap_score_per_item"]) == 2
    unloaded = evaluate.load("clap_kld", keep_in_memory=True)  # the model can also come at compute time
    again = unloaded.compute(predictions=_tones(2), prompts=["x", "y"], sampling_rate=SR, metrics=["clap_score"],
                             clap_model=clap)
    assert again["clap_score_per_item"] == pytest.approx(result["clap_score_per_item"], abs=1e-6)


# --- LAION checkpoints -----------------------------------------------------------------------


def _to_laion_layout(state):
    """The inverse of the conversion, written independently: transformers names -> LAION-CLAP names."""
    out = {}
    for key, value in state.items():
        if key.endswith(("position_ids", "token_type_ids", "relative_position_index")):
            continue
        k = key.replace("text_model.", "text_branch.").replace("audio_model.audio_encoder.", "audio_branch.")
        k = k.replace("audio_branch.batch_norm.", "audio_branch.bn0.")
        k = re.sub(r"_projection\.linear1\.", "_projection.0.", k)
        k = re.sub(r"_projection\.linear2\.", "_projection.2.", k)
        if k.startswith("audio_branch."):
            for new, old in (("layernorm_before", "norm1"), ("layernorm_after", "norm2"),
                             ("attention.output.dense", "attn.proj"), ("intermediate.dense", "mlp.fc1"),
                             ("output.dense", "mlp.fc2"), ("attention.self.relative_position_bias_table",
                                                           "attn.relative_position_bias_table")):
                k = k.replace(new, old)
            m = re.match(r"(.*)\.attention\.self\.(query|key|value)\.(weight|bias)$", k)
            if m:
                if m.group(2) == "query":
                    parts = [state[key.replace(".query.", f".{p}.")] for p in ("query", "key", "value")]
                    out[f"{m.group(1)}.attn.qkv.{m.group(3)}"] = torch.cat(parts, dim=0)
                continue
        out[k] = value
    # LAION-only modules the conversion must ignore.
    out["audio_branch.spectrogram_extractor.stft.conv_real.weight"] = torch.zeros(3)
    out["audio_transform.sequential.0.weight"] = torch.zeros(2, 2)
    return {"module." + k: v for k, v in out.items()}


@pytest.mark.parametrize("fusion", [False, True])
def test_laion_checkpoint_round_trip(tmp_path, fusion):
    original = tiny_clap(seed=3, enable_fusion=fusion)
    laion = _to_laion_layout(original.state_dict())
    path = tmp_path / "630k-tiny.pt"
    torch.save({"state_dict": laion, "epoch": 3, "name": "tiny"}, path)

    inferred = infer_clap_config({k[len("module."):]: v for k, v in laion.items()}, text_num_attention_heads=4)
    expected = tiny_clap_config(enable_fusion=fusion)
    for attr in ("num_mel_bins", "window_size", "depths", "num_attention_heads", "patch_embeds_hidden_size",
                 "hidden_size", "enable_fusion"):
        assert list(np.atleast_1d(getattr(inferred.audio_config, attr))) == list(
            np.atleast_1d(getattr(expected.audio_config, attr))), attr
    assert inferred.projection_dim == expected.projection_dim

    converted = convert_laion_checkpoint(path, config=tiny_clap_config(enable_fusion=fusion))
    processor = tiny_clap_processor()
    a = load_clap_backend(original, processor)
    b = load_clap_backend(converted, processor)
    clips = _tones(2, seconds=1.0)
    np.testing.assert_allclose(a.embed_audio(clips), b.embed_audio(clips), atol=1e-6)
    np.testing.assert_allclose(a.embed_text(["piano", "a fast jig"]), b.embed_text(["piano", "a fast jig"]), atol=1e-6)

    from safetensors.torch import save_file

    st = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in laion.items()}, st)
    backend = load_clap_backend(str(st), processor, config=tiny_clap_config(enable_fusion=fusion))
    np.testing.assert_allclose(backend.embed_audio(clips), a.embed_audio(clips), atol=1e-6)


class _Payload:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_laion_checkpoint_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"audio_branch.bn0.weight": torch.zeros(2)}, "extra": _Payload()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        convert_laion_checkpoint(path)


def test_laion_checkpoint_missing_weights_is_an_error(tmp_path):
    laion = _to_laion_layout(tiny_clap().state_dict())
    laion = {k: v for k, v in laion.items() if "layers.1." not in k}
    with pytest.raises(CheckpointError, match="lacks .* weights"):
        convert_laion_checkpoint({k[len("module."):]: v for k, v in laion.items()}, config=tiny_clap_config())


def test_near_empty_tokenizer_is_refused():
    from transformers import ClapProcessor, RobertaTokenizer

    processor = tiny_clap_processor()
    empty = RobertaTokenizer(vocab={"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}, merges=[])
    with pytest.raises(ValueError, match="near-empty"):
        load_clap_backend(tiny_clap(), ClapProcessor(feature_extractor=processor.feature_extractor, tokenizer=empty))


# --- report and Space app --------------------------------------------------------------------


def test_write_report_writes_every_file(clap, tmp_path):
    prompts = ["calm piano", "fast violin jig", "<koto> piece", "slow flute"]
    reference = _tones(3, seconds=1.0, base=250.0, seed=1)
    base_audio = _tones(4, seconds=1.0, base=200.0, seed=2)
    adapter_audio = _tones(4, seconds=1.0, base=260.0, seed=3)
    ref = ReferenceSet(reference, SR)
    results = {
        "base": compute_clap_kld(base_audio, prompts, ref, sampling_rate=SR, clap_model=clap),
        "soft-prompt": compute_clap_kld(adapter_audio, prompts, ref, sampling_rate=SR, clap_model=clap),
    }
    written = write_report(results, tmp_path / "report", prompts=prompts,
                           categories=["instrument", "genre", "instrument", "genre"],
                           audio={"base": base_audio, "soft-prompt": adapter_audio}, sampling_rate=SR,
                           reference_audio=reference)
    expected = {"json", "markdown", "per_prompt_clap_score", "per_prompt_kld", "per_prompt_audio_alignment",
                "per_category", "feature_distributions", "spectrograms"}
    assert set(written) == expected
    for path in written.values():
        assert path.is_file() and path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = json.loads(written["json"].read_text())
    assert payload["baseline"] == "base" and set(payload["per_category"]["kld_per_item"]) == {"instrument", "genre"}
    md = written["markdown"].read_text()
    assert "| base |" in md and "fast violin jig" in md and "soft-prompt − base" in md
    assert "&lt;koto&gt; piece" in md  # placeholders stay visible in rendered Markdown
    with pytest.raises(ValueError, match="categories has 1 entries"):
        write_report(results, tmp_path / "bad", categories=["x"])
    assert not [p for p in (tmp_path / "report").iterdir() if p.name.startswith(".")]  # no temporary files left


def _table_widths(markdown: str) -> list[set[int]]:
    """Cell counts of each Markdown table (consecutive lines starting with '|')."""
    tables, current = [], set()
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            current.add(line.count("|"))
        elif current:
            tables.append(current)
            current = set()
    return tables


def test_report_tables_stay_well_formed_when_nothing_is_scored(clap, tmp_path):
    silent = [np.zeros(SR, dtype=np.float32)] * 2
    results = {"base": compute_clap_kld(silent, ["a", "b"], None, sampling_rate=SR, clap_model=clap,
                                        metrics=["clap_score"])}
    assert results["base"]["num_scored"] == 0
    md = write_report(results, tmp_path / "empty", prompts=["a", "b"])["markdown"].read_text()
    assert all(len(widths) == 1 for widths in _table_widths(md)), md


def test_space_app_scores_files(clap, tmp_path):
    import importlib.util

    import soundfile as sf

    spec = importlib.util.spec_from_file_location("clap_kld_app", ROOT / "metrics" / "clap_kld" / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    paths = []
    for i, clip in enumerate(_tones(2, seconds=1.0)):
        paths.append(str(tmp_path / f"gen{i}.wav"))
        sf.write(paths[-1], clip, SR)
    result = app.score_files(paths, "piano\nviolin\n", paths, clap_model=clap)
    assert result["num_scored"] == 2 and result["kld"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="2 generated files but 1 prompt lines"):
        app.score_files(paths, "piano", clap_model=clap)


# --- integer PCM and non-finite reference audio ---------------------------------------------


def _pcm(clip: np.ndarray, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    half = (int(info.max) - int(info.min) + 1) // 2
    centre = 0 if info.min < 0 else half
    return np.clip(np.round(clip * half) + centre, info.min, info.max).astype(dtype)


def test_integer_pcm_is_scaled_like_the_float_audio_it_encodes(clap):
    """int16 read as raw floats is 32768 times too loud; every score must match the float clip's instead."""
    import evaluate

    clips, prompts = _tones(3), ["a piano", "a violin", "a flute"]
    reference = _tones(4, seed=1, base=300.0)
    as_float = compute_clap_kld(clips, prompts, reference, sampling_rate=SR, clap_model=clap)
    for dtype, tolerance in ((np.int16, 1e-3), (np.int32, 1e-6), (np.uint8, 0.05)):
        pcm = [_pcm(c, dtype) for c in clips]
        scaled = compute_clap_kld(pcm, prompts, [_pcm(c, dtype) for c in reference], sampling_rate=SR,
                                  clap_model=clap)
        for key in ("clap_score", "kld", "audio_alignment"):
            assert scaled[key] == pytest.approx(as_float[key], rel=tolerance, abs=tolerance), (dtype, key)
    tensors = [torch.from_numpy(_pcm(c, np.int16)) for c in clips]
    from_tensors = compute_clap_kld(tensors, prompts, reference, sampling_rate=SR, clap_model=clap)
    assert from_tensors["clap_score"] == pytest.approx(as_float["clap_score"], abs=1e-3)
    # Through evaluate's Arrow storage (float32) too: the conversion happens before it.
    metric = evaluate.load("clap_kld", clap_model=clap, keep_in_memory=True)
    through = metric.compute(predictions=[_pcm(c, np.int16) for c in clips], prompts=prompts,
                             reference_audio=reference, sampling_rate=SR)
    assert through["clap_score"] == pytest.approx(as_float["clap_score"], abs=1e-3)
    assert through["kld"] == pytest.approx(as_float["kld"], rel=1e-3)


@pytest.mark.parametrize("bad", [np.arange(4000, dtype=np.int64), np.ones(4000, dtype=bool),
                                 np.ones(4000, dtype=np.complex64), torch.arange(4000)])
def test_audio_of_unsupported_dtype_is_refused_naming_the_item(bad):
    with pytest.raises(ValueError, match=r"predictions\[1\]: audio of dtype .* is not supported.*int16"):
        compute_clap_kld([_tones(1)[0], bad], None, _tones(2), sampling_rate=SR, metrics=["kld"])


def test_non_finite_reference_audio_is_refused_naming_the_item():
    reference = _tones(3)
    reference[2] = reference[2].copy()
    reference[2][5] = np.inf
    with pytest.raises(ValueError, match=r"reference_audio\[2\]: non-finite samples: 0 NaN and 1 Inf"):
        compute_clap_kld(_tones(2), None, reference, sampling_rate=SR, metrics=["kld"])
    with pytest.raises(ValueError, match=r"koto\[0\]: non-finite samples: 1 NaN"):
        bad = _tones(1)[0].copy()
        bad[0] = np.nan
        ReferenceSet([bad], SR, name="koto")
