"""transformers' own adapter API (`model.add_adapter` / `load_adapter`) works with the pinned transformers and peft.

transformers >= 5.24 refuses peft < 0.22 in these methods ("use a version >= 0.22.0"), and peft 0.22 is
not released where musicpeft is installed, so pyproject.toml pins transformers below 5.24. This checks the
pinned pair does what users of plain transformers expect, with musicpeft imported.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch
from fixtures import musicgen_inputs, musicgen_logits, tiny_musicgen
from packaging.requirements import Requirement
from peft import LoraConfig
from safetensors.torch import load_file

import musicpeft  # noqa: F401  (registered methods must not disturb transformers' integration)


def _pinned(name: str) -> Requirement:
    """The requirement on `name` in this checkout's pyproject.toml (the installed metadata may be another tree's)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        if requirement.name == name:
            return requirement
    raise AssertionError(f"pyproject.toml declares no {name} requirement")


def test_pinned_versions_are_installed():
    """The rest of this file tests the pinned combination; say plainly when the environment is another one."""
    for name in ("transformers", "peft"):
        installed = importlib.metadata.version(name)
        if installed not in _pinned(name).specifier:
            pytest.skip(f"{name} {installed} is installed, outside musicpeft's pin {_pinned(name)}; "
                        "reinstall (`bash scripts/install.sh test`) to test the pinned versions")


def test_add_adapter_save_and_load_adapter_round_trip(tmp_path):
    test_pinned_versions_are_installed()
    inputs = musicgen_inputs()
    model = tiny_musicgen(seed=0)
    base = musicgen_logits(model, inputs)
    model.add_adapter(LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False), "koto")
    assert model.active_adapters() == ["koto"]
    adapted = musicgen_logits(model, inputs)
    assert not torch.allclose(adapted, base)
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert lora and all(not n.startswith("audio_encoder") for n in lora)
    with torch.no_grad():  # weights that no seed can rebuild: loading must read the file
        for parameter in lora.values():
            parameter.add_(0.01 * torch.randn_like(parameter))
    changed = musicgen_logits(model, inputs)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert saved and all("lora_" in key for key in saved)

    fresh = tiny_musicgen(seed=0)
    fresh.load_adapter(str(tmp_path), adapter_name="koto")
    assert torch.allclose(musicgen_logits(fresh, inputs), changed, atol=1e-6)
    fresh.disable_adapters()
    assert torch.allclose(musicgen_logits(fresh, inputs), base, atol=1e-6)
