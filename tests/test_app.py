"""`musicpeft app`: the model logic, the CLI without gradio, and the page in a real headless Chromium.

The browser test needs the `app-test` extra (gradio, playwright) and a Chromium on the machine
(`scripts/install_browser.sh` installs all three); it is skipped, saying which is missing, otherwise.
"""

import importlib.util
import io
import os
import shutil
import socket

import numpy as np
import pytest
import soundfile as sf
import torch

import musicpeft
from musicpeft.app import AppModels, declared_placeholders, prompt_for
from musicpeft.cli import main
from musicpeft.evaluation.generation import TINY_MUSICGEN
from musicpeft.tiny import tiny_musicgen, tiny_musicgen_processor
from musicpeft.tuners.concept_identifier import ConceptIdentifierConfig, binding
from musicpeft.tuners.concept_identifier.placeholders import UnknownConceptError

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def koto_adapter(tmp_path_factory):
    """A saved concept adapter for `<koto>` whose identifier tokens were moved away from their init."""
    model, processor = tiny_musicgen(0), tiny_musicgen_processor()
    binding.bind_processor(model, processor)
    peft_model = musicpeft.add_adapter(model, ConceptIdentifierConfig(concepts=["koto"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in peft_model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 5)
    folder = tmp_path_factory.mktemp("adapters") / "koto"
    musicpeft.save_adapter(peft_model, str(folder))
    return str(folder)


class RecordingModels(AppModels):
    """AppModels that keep every clip they returned, to compare with what the browser received."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.clips = []

    def generate(self, *args, **kwargs):
        clips = super().generate(*args, **kwargs)
        self.clips.append(clips)
        return clips


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return RecordingModels(output_dir=str(tmp_path_factory.mktemp("app-output")))


def test_prompt_for_keeps_own_placeholders_and_names_the_others():
    known = {"<koto>", "<shamisen>"}
    assert prompt_for("<koto> and <shamisen> duet", {"<koto>"}, known) == "<koto> and shamisen duet"
    assert prompt_for("<koto> and <shamisen> duet", set(), known) == "koto and shamisen duet"
    assert prompt_for("a <b> tag", set(), known) == "a <b> tag"  # not a loaded concept: left for the check


def test_declared_placeholders_read_from_the_adapter_config(koto_adapter, tmp_path):
    assert declared_placeholders(koto_adapter) == ["<koto>"]
    assert declared_placeholders(str(tmp_path)) == []  # no adapter_config.json


def test_bad_inputs_are_refused_naming_the_field(models, koto_adapter):
    with pytest.raises(ValueError, match="Prompt"):
        models.generate(TINY_MUSICGEN, [koto_adapter], "  ", seconds=0.5, seed=0)
    with pytest.raises(ValueError, match="Guidance scale.*got 0.5"):
        models.generate(TINY_MUSICGEN, [koto_adapter], "a jig", seconds=0.5, seed=0, guidance_scale=0.5)
    with pytest.raises(ValueError, match="Base: 'no-such-base'"):
        models.generate("no-such-base", [], "a jig", seconds=0.5, seed=0)
    with pytest.raises(UnknownConceptError, match=r"<shamisen>.*known placeholders: <koto>"):
        models.generate(TINY_MUSICGEN, [koto_adapter], "<koto> and <shamisen>", seconds=0.5, seed=0)
    assert models.clips == []


def test_cli_app_without_gradio_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    with pytest.raises(SystemExit, match=r"needs gradio.*pip install 'musicpeft\[app\]'"):
        main(["app", "--port", "0"])


def _chromium() -> str | None:
    found = os.environ.get("MUSICPEFT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return found if found and os.path.exists(found) else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _decoded(response) -> tuple[np.ndarray, int]:
    assert response.ok, (response.url, response.status)
    audio, rate = sf.read(io.BytesIO(response.body()), dtype="float32")
    return audio, rate


def test_browser_generates_audible_clips(models, koto_adapter, tmp_path):
    # about 30 s on 2 idle cores; the waits are generous so that a loaded machine is slow, not failing
    pytest.importorskip("gradio", reason="gradio is not installed: pip install 'musicpeft[app-test]'")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: "
                                   "pip install 'musicpeft[app-test]'")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium, or bash scripts/install_browser.sh)")
    from musicpeft.app import build_app

    demo = build_app(TINY_MUSICGEN, [koto_adapter], seconds=0.5, models=models)
    port = _free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    external = []
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1280, "height": 1300})
            try:
                page = browser.new_page()
                page.on("request", lambda r: None if r.url.startswith(("http://127.0.0.1", "data:", "blob:"))
                        else external.append(r.url))
                page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
                page.locator("#placeholders").get_by_text("<koto>").wait_for(timeout=30_000)

                # a placeholder nobody defines: an error naming the known ones, and no clip
                page.locator("#prompt textarea").fill("a jig on <shamisen>")
                page.locator("#generate").click()
                page.get_by_text("known placeholders: <koto>").first.wait_for(timeout=300_000)

                page.locator("#prompt textarea").fill("a jig on <koto>")
                page.locator("#generate").click()
                for i in range(2):
                    page.wait_for_selector(f"#clip-{i} audio[src]", state="attached", timeout=300_000)
                page.locator("#status").get_by_text("Generated 2 clip(s)").wait_for(timeout=30_000)
                players = "#clip-0 audio[src], #clip-1 audio[src]"
                # the browser itself decoded the wavs' headers: both players know their clip's length
                page.wait_for_function(f"[...document.querySelectorAll('{players}')].every(a => a.readyState >= 1)",
                                       timeout=30_000)
                durations = page.eval_on_selector_all(players, "els => els.map(e => e.duration)")
                srcs = page.eval_on_selector_all(players, "els => els.map(e => e.src)")
                received = [_decoded(page.request.get(src)) for src in srcs]
                page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
                if os.environ.get("MUSICPEFT_APP_SCREENSHOT"):
                    shutil.copy(tmp_path / "app.png", os.environ["MUSICPEFT_APP_SCREENSHOT"])
            finally:
                browser.close()
    finally:
        demo.close()

    assert durations == pytest.approx([0.5, 0.5], abs=1e-3)
    assert len(models.clips) == 1  # the refused prompt generated nothing
    clips = models.clips[0]
    assert [c.label for c in clips] == ["base", "koto"]
    assert [c.prompt for c in clips] == ["a jig on koto", "a jig on <koto>"]  # the base hears the plain word
    assert not np.array_equal(clips[0].audio, clips[1].audio)  # the adapter is applied
    for clip, (audio, rate) in zip(clips, received, strict=True):
        assert rate == clip.sampling_rate == 16000 and audio.shape == (8000,)
        ac_rms = float(np.sqrt(np.mean((audio - audio.mean()) ** 2)))
        assert ac_rms > 1e-3, f"{clip.label}: the browser's clip is silent (RMS {ac_rms:.2e} without DC)"
        np.testing.assert_allclose(audio, np.clip(clip.audio, -1, 1), atol=2 / 32768)  # exactly what was made
    assert (tmp_path / "app.png").stat().st_size > 10_000
    assert external == [], f"the page reached outside the machine: {external}"
