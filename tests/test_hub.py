"""Publishing and loading adapters through a Hub: the real huggingface_hub client against LocalHubServer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fixtures import musicgen_inputs, musicgen_logits, perturb_adapter, tiny_musicgen
from hub import LocalHubServer, client_env
from huggingface_hub import ModelCard, get_session, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError
from peft import PeftModel

import musicpeft
from musicpeft import AdapterFileError, SoftMusicPromptConfig
from musicpeft.hub import push_adapter_to_hub, render_model_card


@pytest.fixture(scope="module")
def inputs():
    return musicgen_inputs()


_logits = musicgen_logits


def _prompted(seed: int = 3):
    """A soft prompt moved away from its seeded init, so a loader that ignored the uploaded file would fail."""
    model = musicpeft.add_adapter(tiny_musicgen(), SoftMusicPromptConfig(num_virtual_tokens=5, init_seed=seed))
    perturb_adapter(model, seed=seed)
    return model


def test_push_then_load_with_musicpeft_and_with_peft(local_hub, inputs):
    original = _prompted()
    url = push_adapter_to_hub(original, "user/korean-prompt", model_card={"training_data": "Sanjo recordings."})
    assert url.startswith(f"{local_hub.endpoint}/user/korean-prompt/commit/")
    files = local_hub.api.list_repo_files("user/korean-prompt")
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(files)
    assert not [f for f in files if f.endswith(".bin")]

    loaded = musicpeft.load_adapter(tiny_musicgen(), "user/korean-prompt")
    assert torch.equal(_logits(loaded, inputs), _logits(original, inputs))
    stock = PeftModel.from_pretrained(tiny_musicgen(), "user/korean-prompt")
    assert torch.equal(_logits(stock, inputs), _logits(original, inputs))
    # The upload took the regular path the server asked for: no LFS or Xet round trip.
    assert not [path for _, path in local_hub.server.requests if "lfs" in path or "xet" in path]


def test_model_card_on_the_server_has_metadata_and_loading_instructions(local_hub):
    push_adapter_to_hub(
        _prompted(),
        "user/korean-prompt",
        model_card={"training_data": "Korean **sanjo** recordings.", "metrics": {"CLAP": 0.31}, "license": "mit"},
    )
    card = ModelCard.load("user/korean-prompt")
    assert card.data.library_name == "peft"
    assert card.data.pipeline_tag == "text-to-audio"
    assert card.data.license == "mit"
    assert card.data.tags[:4] == ["musicpeft", "text-to-music", "soft-music-prompt", "musicgen"]
    for text in (
        'musicpeft.load_adapter(model, "user/korean-prompt")',
        'PeftModel.from_pretrained(model, "user/korean-prompt")',
        "| `num_virtual_tokens` | `5` |",
        "Korean **sanjo** recordings.",
        "| CLAP | 0.31 |",
        "Trainable parameters: 160",  # 5 tokens x width 32
    ):
        assert text in card.text, text
    # The server reads the same YAML header back as the Hub would (repo info `cardData`).
    info = local_hub.api.model_info("user/korean-prompt")
    assert info.card_data.library_name == "peft" and "musicpeft" in info.tags


def test_a_second_push_is_a_new_commit_and_an_unchanged_push_is_not(local_hub):
    first = push_adapter_to_hub(_prompted(seed=1), "user/korean-prompt")
    second = push_adapter_to_hub(_prompted(seed=2), "user/korean-prompt", commit_message="retrained")
    assert first != second
    again = push_adapter_to_hub(_prompted(seed=2), "user/korean-prompt")
    assert again == second
    titles = [c.title for c in local_hub.api.list_repo_commits("user/korean-prompt")]
    assert titles == ["retrained", "Upload SOFT_MUSIC_PROMPT adapter with musicpeft", "initial commit"]


def test_a_bare_repo_name_lands_in_the_users_namespace(local_hub):
    url = push_adapter_to_hub(_prompted(), "bare-prompt")
    assert url.startswith(f"{local_hub.endpoint}/user/bare-prompt/commit/")
    assert 'load_adapter(model, "user/bare-prompt")' in ModelCard.load("user/bare-prompt").text


def test_peft_push_to_hub_works_against_the_server(local_hub, inputs):
    original = _prompted()
    original.push_to_hub("user/other")
    assert "adapter_model.safetensors" in local_hub.api.list_repo_files("user/other")
    loaded = musicpeft.load_adapter(tiny_musicgen(), "user/other")
    assert torch.equal(_logits(loaded, inputs), _logits(original, inputs))


def test_a_repo_with_only_a_pickle_is_refused_unless_allowed(local_hub, tmp_path, inputs):
    original = _prompted()
    original.save_pretrained(tmp_path, safe_serialization=False)
    assert sorted(os.listdir(tmp_path)) == ["README.md", "adapter_config.json", "adapter_model.bin"]
    local_hub.api.create_repo("user/pickled")
    local_hub.api.upload_folder(folder_path=tmp_path, repo_id="user/pickled")

    with pytest.raises(AdapterFileError, match="only pickled weights .adapter_model.bin.*allow_pickle=True"):
        musicpeft.load_adapter(tiny_musicgen(), "user/pickled")
    with pytest.raises(AdapterFileError, match="does not load pickled adapters"):
        PeftModel.from_pretrained(tiny_musicgen(), "user/pickled")
    loaded = musicpeft.load_adapter(tiny_musicgen(), "user/pickled", allow_pickle=True)
    assert torch.equal(_logits(loaded, inputs), _logits(original, inputs))


def test_an_unknown_repo_is_a_clear_error(local_hub):
    with pytest.raises(
        AdapterFileError, match="'user/no-such-adapter' is neither a local adapter folder nor a reachable"
    ):
        musicpeft.load_adapter(tiny_musicgen(), "user/no-such-adapter")


def test_private_repo_needs_the_token(local_hub, inputs):
    original = _prompted()
    local_hub.require_token("hf_local_secret")
    with pytest.raises(HfHubHTTPError, match="401"):
        push_adapter_to_hub(original, "user/secret-prompt", private=True)
    push_adapter_to_hub(original, "user/secret-prompt", private=True, token="hf_local_secret")
    with pytest.raises(AdapterFileError, match="user/secret-prompt"):
        musicpeft.load_adapter(tiny_musicgen(), "user/secret-prompt")
    loaded = musicpeft.load_adapter(tiny_musicgen(), "user/secret-prompt", token="hf_local_secret")
    assert torch.equal(_logits(loaded, inputs), _logits(original, inputs))


def test_render_model_card_base_model_and_errors(tmp_path):
    config = _prompted().peft_config["default"]
    config.base_model_name_or_path = "facebook/musicgen-small"
    card = ModelCard(render_model_card(config, "musicgen", {"tags": ["korean"]}, repo_id="user/x"))
    assert card.data.base_model == "facebook/musicgen-small"
    assert card.data.tags[-1] == "korean"
    assert 'MusicgenForConditionalGeneration.from_pretrained("facebook/musicgen-small")' in card.text

    config.base_model_name_or_path = str(tmp_path)  # a local path means nothing on the Hub
    assert ModelCard(render_model_card(config, "musicgen")).data.base_model is None
    with pytest.raises(ValueError, match="unknown key.*'trainig_data'.*training_data"):
        render_model_card(config, "musicgen", {"trainig_data": "typo"})
    with pytest.raises(ValueError, match=r"model_card\['metrics'\] must be a mapping"):
        render_model_card(config, "musicgen", {"metrics": [0.3]})
    with pytest.raises(ValueError, match="Unknown model family 'nope'"):
        render_model_card(config, "nope")


def test_server_speaks_the_resolve_protocol(local_hub):
    api, http = local_hub.api, get_session()
    api.create_repo("user/files")
    commit = api.upload_file(path_or_fileobj=b"0123456789", path_in_repo="dir/digits.txt", repo_id="user/files")
    url = f"{local_hub.endpoint}/user/files/resolve/main/dir/digits.txt"
    head = http.head(url)
    assert head.status_code == 200
    assert head.headers["X-Repo-Commit"] == commit.oid
    assert head.headers["Content-Length"] == "10"
    assert head.headers["ETag"].strip('"') == api.get_paths_info("user/files", "dir/digits.txt")[0].blob_id
    partial = http.get(url, headers={"Range": "bytes=4-"})
    assert (partial.status_code, partial.content, partial.headers["Content-Range"]) == (206, b"456789", "bytes 4-9/10")

    def error_code(method: str, path: str) -> tuple[int, str]:
        response = http.request(method, local_hub.endpoint + path)
        return response.status_code, response.headers.get("X-Error-Code")

    assert error_code("HEAD", "/user/files/resolve/main/nope.txt") == (404, "EntryNotFound")
    assert error_code("HEAD", "/user/nope/resolve/main/x") == (404, "RepoNotFound")
    assert error_code("GET", "/api/models/user/files/revision/v9") == (404, "RevisionNotFound")
    tree = http.get(f"{local_hub.endpoint}/api/models/user/files/tree/main").json()
    assert [(e["type"], e["path"]) for e in tree] == [("file", ".gitattributes"), ("directory", "dir")]
    unknown = http.get(f"{local_hub.endpoint}/api/models/user/files/discussions")
    assert unknown.status_code == 501 and "does not implement GET" in unknown.json()["error"]


METRIC_SCRIPT = """
import datasets
import evaluate


class ClapKld(evaluate.Metric):
    def _info(self):
        value = datasets.Value("float32")
        features = datasets.Features({"predictions": value, "references": value})
        return evaluate.MetricInfo(description="test", citation="", inputs_description="", features=features)

    def _compute(self, predictions, references):
        return {"kld": float(sum(abs(p - r) for p, r in zip(predictions, references)))}
"""


def test_a_space_hosts_an_evaluate_metric(local_hub):
    api = local_hub.api
    api.create_repo("user/clap_kld", repo_type="space", space_sdk="gradio")
    api.upload_file(
        path_or_fileobj=METRIC_SCRIPT.encode(), path_in_repo="clap_kld.py", repo_id="user/clap_kld", repo_type="space"
    )
    path = hf_hub_download("user/clap_kld", "clap_kld.py", repo_type="space")
    assert open(path).read() == METRIC_SCRIPT
    assert api.space_info("user/clap_kld").sdk == "gradio"

    import evaluate

    metric = evaluate.load("user/clap_kld")
    assert metric.compute(predictions=[1.0, 2.0], references=[1.5, 2.0]) == {"kld": 0.5}


def test_the_session_points_every_client_at_the_local_hub_and_stays_offline():
    import huggingface_hub.constants as constants
    import transformers.utils.hub
    from huggingface_hub.hf_api import api

    endpoint = os.environ["HF_ENDPOINT"]
    assert endpoint.startswith("http://127.0.0.1:")
    assert constants.ENDPOINT == api.endpoint == endpoint  # read from the environment at import, not patched
    assert constants.HUGGINGFACE_CO_URL_TEMPLATE.startswith(endpoint + "/{repo_id}/resolve/")
    assert transformers.utils.hub.is_offline_mode() and constants.HF_HUB_OFFLINE is True
    assert constants.HF_HUB_CACHE == os.path.join(os.environ["HF_HOME"], "hub")
    assert "HF_TOKEN" not in os.environ and constants.HF_TOKEN_PATH.startswith(os.environ["HF_HOME"])


def test_local_hub_is_online_for_its_test_and_a_reset_empties_it(local_hub):
    import huggingface_hub.constants as constants

    assert constants.HF_HUB_OFFLINE is False and os.environ["HF_HUB_OFFLINE"] == "0"
    assert local_hub.endpoint == os.environ["HF_ENDPOINT"]
    local_hub.api.create_repo("user/leftover")
    assert [m.id for m in local_hub.api.list_models()] == ["user/leftover"]
    local_hub.server.reset()  # what the fixture does before each test
    assert list(local_hub.server.requests) == [] and list(local_hub.api.list_models()) == []


def test_client_env_points_at_the_endpoint_without_the_developers_token():
    base = {"PATH": "/bin", "HF_TOKEN": "hf_real", "HF_HUB_CACHE": "/elsewhere", "TRANSFORMERS_OFFLINE": "1"}
    online = client_env("http://127.0.0.1:8/", "/tmp/home", base=base)
    assert online["HF_ENDPOINT"] == "http://127.0.0.1:8" and online["HF_HOME"] == "/tmp/home"
    assert online["PATH"] == "/bin" and "HF_TOKEN" not in online and "HF_HUB_CACHE" not in online
    assert online["HF_HUB_OFFLINE"] == online["TRANSFORMERS_OFFLINE"] == online["HF_EVALUATE_OFFLINE"] == "0"
    assert "127.0.0.1" in online["NO_PROXY"].split(",")
    offline = client_env("http://127.0.0.1:8", "/tmp/home", offline=True, base=base)
    assert offline["HF_HUB_OFFLINE"] == "1" and "TRANSFORMERS_OFFLINE" not in offline


def test_server_binds_loopback_and_stops_by_itself():
    server = LocalHubServer(max_lifetime_s=0.5).start()
    assert server.endpoint.startswith("http://127.0.0.1:")
    storage = server.store.root
    deadline = time.monotonic() + 10
    while server.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server.running and not storage.exists()
    with pytest.raises(RuntimeError, match="not running"):
        server.endpoint  # noqa: B018
    with pytest.raises(ValueError, match="max_lifetime_s"):
        LocalHubServer(max_lifetime_s=0)


END_TO_END = """
import torch, musicpeft
from huggingface_hub import constants
from musicpeft.hub import push_adapter_to_hub
from musicpeft.tiny import tiny_musicgen, tiny_musicgen_processor

assert constants.ENDPOINT.startswith("http://127.0.0.1:"), constants.ENDPOINT
inputs = tiny_musicgen_processor()(text=["a slow waltz"], return_tensors="pt")
dec = torch.arange(12).reshape(4, 3) % 64  # 1 prompt x 4 codebooks, 3 frames
original = musicpeft.add_adapter(tiny_musicgen(), musicpeft.SoftMusicPromptConfig(num_virtual_tokens=4))
print(push_adapter_to_hub(original, "user/e2e"))
loaded = musicpeft.load_adapter(tiny_musicgen(), "user/e2e")
with torch.no_grad():
    assert torch.equal(loaded(**inputs, decoder_input_ids=dec).logits, original(**inputs, decoder_input_ids=dec).logits)
print("round trip ok")
"""


def test_end_to_end_in_a_subprocess_with_hf_endpoint_set(local_hub):
    result = local_hub.run_python(END_TO_END)
    assert result.stdout.splitlines()[-1] == "round trip ok"
    assert result.stdout.splitlines()[0].startswith(f"{local_hub.endpoint}/user/e2e/commit/")
    assert "adapter_model.safetensors" in local_hub.api.list_repo_files("user/e2e")


def test_push_command_uploads_a_saved_folder(local_hub, tmp_path, inputs):
    from musicpeft.cli import main

    original = _prompted()
    musicpeft.save_adapter(original, tmp_path / "prompt")
    before = sorted(p.name for p in (tmp_path / "prompt").iterdir())
    assert (
        main(
            ["push", "--folder", str(tmp_path / "prompt"), "--repo-id", "user/pushed", "--description", "A koto style."]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "prompt").iterdir()) == before  # the card went to the Hub only
    files = local_hub.api.list_repo_files("user/pushed")
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors", "musicpeft_adapter.json"} <= set(files)
    assert "A koto style." in ModelCard.load("user/pushed").text
    loaded = musicpeft.load_adapter(tiny_musicgen(), "user/pushed")
    assert torch.equal(_logits(loaded, inputs), _logits(original, inputs))
    with pytest.raises(AdapterFileError, match="not an adapter folder"):
        main(["push", "--folder", str(tmp_path), "--repo-id", "user/nothing"])


def test_push_uploads_only_the_adapters_own_files_and_refuses_links(local_hub, tmp_path):
    from musicpeft.cli import main

    folder = tmp_path / "prompt"
    musicpeft.save_adapter(_prompted(), folder)
    secret = tmp_path / "secret.env"
    secret.write_text("HF_TOKEN=hf_do_not_upload")
    (folder / "notes.txt").write_text("private notes")
    (folder / "credentials").symlink_to(secret)
    (folder / "checkpoint-1").mkdir()
    (folder / "checkpoint-1" / "optimizer.safetensors").write_bytes(b"x" * 16)
    assert main(["push", "--folder", str(folder), "--repo-id", "user/clean"]) == 0
    files = sorted(local_hub.api.list_repo_files("user/clean"))
    assert files == [".gitattributes", "README.md", "adapter_config.json", "adapter_model.safetensors",
                     "musicpeft_adapter.json"]

    # A link in place of one of the adapter's own files is refused, naming it, and nothing is created.
    weights = folder / "adapter_model.safetensors"
    weights.rename(tmp_path / "elsewhere.safetensors")
    weights.symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(AdapterFileError, match=r"adapter_model\.safetensors is a symbolic link .*never follows links"):
        main(["push", "--folder", str(folder), "--repo-id", "user/linked"])
    assert "user/linked" not in [m.id for m in local_hub.api.list_models()]


def test_push_refuses_component_folders_outside_the_adapter(local_hub, tmp_path):
    from musicpeft.hub import adapter_files

    folder = tmp_path / "adapter"
    musicpeft.save_adapter(_prompted(), tmp_path / "outside")
    folder.mkdir()
    (folder / "musicpeft_adapter.json").write_text('{"family": "musicgen", "components": {"x": "../outside"}}')
    with pytest.raises(AdapterFileError, match=r"component folder '\.\./outside' is outside"):
        adapter_files(folder)
    (folder / "musicpeft_adapter.json").write_text('{"family": "musicgen", "components": {"x": "inside"}}')
    (folder / "inside").symlink_to(tmp_path / "outside")
    with pytest.raises(AdapterFileError, match="inside is a symbolic link"):
        adapter_files(folder)


def test_private_is_a_flag(local_hub, tmp_path):
    from musicpeft.cli import main

    musicpeft.save_adapter(_prompted(), tmp_path / "prompt")
    common = ["push", "--folder", str(tmp_path / "prompt")]
    for value in (["--private", "yes"], ["--private=yes"], ["--private", "false"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*common, "--repo-id", "user/refused", *value])
        assert exit_info.value.code == 2
    assert [m.id for m in local_hub.api.list_models()] == []
    assert main([*common, "--repo-id", "user/hidden", "--private"]) == 0
    assert main([*common, "--repo-id", "user/shown"]) == 0
    assert local_hub.api.model_info("user/hidden").private is True
    assert local_hub.api.model_info("user/shown").private is False


def test_card_with_samples_and_spectrogram(local_hub, tmp_path):
    import numpy as np
    import soundfile as sf
    from PIL import Image

    from musicpeft.cli import main
    from musicpeft.model_card import check_card_metadata

    musicpeft.save_adapter(_prompted(), tmp_path / "prompt")
    rate = 16000
    t = np.arange(rate) / rate
    sf.write(tmp_path / "Koto Jig.wav", 0.3 * np.sin(2 * np.pi * 440 * t), rate)
    sf.write(tmp_path / "waltz.flac", 0.3 * np.sin(2 * np.pi * 220 * t), rate)
    (tmp_path / "notes.wav").write_text("not audio")
    bad = [str(tmp_path / "notes.wav")]
    with pytest.raises(ValueError, match=r"samples: .*notes\.wav is not readable audio"):
        main(["push", "--folder", str(tmp_path / "prompt"), "--repo-id", "user/samples", "--samples", *bad])
    samples = [str(tmp_path / "Koto Jig.wav"), str(tmp_path / "waltz.flac")]
    assert main(["push", "--folder", str(tmp_path / "prompt"), "--repo-id", "user/samples",
                 "--base-model", "facebook/musicgen-small", "--samples", *samples]) == 0
    files = set(local_hub.api.list_repo_files("user/samples"))
    assert {"samples/00-koto-jig.wav", "samples/01-waltz.flac", "samples/spectrograms.png"} <= files
    card = ModelCard.load("user/samples")
    for path in ("samples/00-koto-jig.wav", "samples/01-waltz.flac"):
        assert f'<audio controls src="{path}"></audio>' in card.text
    assert "![Log-mel spectrograms of the samples](samples/spectrograms.png)" in card.text
    png = hf_hub_download("user/samples", "samples/spectrograms.png")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[1] > 200  # one panel per sample
    downloaded, got_rate = sf.read(hf_hub_download("user/samples", "samples/01-waltz.flac"))
    assert got_rate == rate and np.allclose(downloaded, 0.3 * np.sin(2 * np.pi * 220 * t), atol=1e-4)
    data = check_card_metadata(card.content)
    assert data["base_model"] == "facebook/musicgen-small" and data["pipeline_tag"] == "text-to-audio"
    card.validate()  # the server's YAML check, as the Hub's
    # A later push without samples removes the ones the new card no longer links.
    assert main(["push", "--folder", str(tmp_path / "prompt"), "--repo-id", "user/samples"]) == 0
    assert not [f for f in local_hub.api.list_repo_files("user/samples") if f.startswith("samples/")]
    assert "<audio" not in ModelCard.load("user/samples").text


def test_card_metadata_rules_are_checked_offline():
    from musicpeft.model_card import check_card_metadata

    good = render_model_card(_prompted().peft_config["default"], "musicgen", {"license": "mit", "tags": ["koto"]})
    data = check_card_metadata(good)
    assert (data["library_name"], data["pipeline_tag"], data["license"]) == ("peft", "text-to-audio", "mit")
    assert "koto" in data["tags"] and "musicpeft" in data["tags"]
    header_end = good.index("\n---", 3)
    for bad_line, message in (
        ("tags: 3", "tags must be a string or a list of strings"),
        ("base_model: ../local/path", "base_model must be Hub model id"),
        ("pipeline_tag: [a, b]", "pipeline_tag must be a string"),
        ("library_name: torch", "library_name 'torch'"),
    ):
        with pytest.raises(ValueError, match=message):
            check_card_metadata(good[:header_end] + "\n" + bad_line + good[header_end:])
    with pytest.raises(ValueError, match="no YAML metadata block"):
        check_card_metadata("# just a title\n")


SERVED = """
import os, sys
from huggingface_hub import HfApi, constants
assert constants.ENDPOINT == os.environ["HF_ENDPOINT"] and not constants.HF_HUB_OFFLINE and "HF_TOKEN" not in os.environ
HfApi().upload_file(path_or_fileobj=b"x", path_in_repo="a.txt", repo_id=HfApi().create_repo("user/served").repo_id)
print(sorted(HfApi().list_repo_files("user/served")))
sys.exit(3)
"""


def test_serve_runs_a_command_against_a_fresh_server_and_returns_its_status(tmp_path):
    serve = Path(__file__).parent / "hub" / "serve.py"
    env = {**os.environ, "HF_TOKEN": "hf_should_not_be_sent"}
    command = [sys.executable, str(serve), "--hf-home", str(tmp_path), "--", sys.executable, "-c", SERVED]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert result.stdout.strip() == "['.gitattributes', 'a.txt']"
    assert result.stderr.startswith("HF_ENDPOINT=http://127.0.0.1:")
