"""The documentation site builds strictly, and the strict build really fails on a broken page.

Needs the `docs` extra (mkdocs, mkdocstrings-python); skipped without it (CI builds the site with
scripts/build_docs.sh after the tests either way).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings_handlers.python")

ROOT = Path(__file__).resolve().parent.parent


def _build(config_dir: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=config_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy_project(tmp_path: Path) -> Path:
    """mkdocs.yml, docs/ and the package (linked) in a scratch folder, so a test can break a page."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", project / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", project / "docs")
    os.symlink(ROOT / "musicpeft", project / "musicpeft")
    return project


def test_docs_build_strictly_with_the_api_reference(tmp_path):
    proc = _build(ROOT, tmp_path / "site")
    assert proc.returncode == 0, proc.stderr[-3000:]
    api = tmp_path / "site" / "api"
    # The reference is generated from docstrings: the public names have their own anchored entries.
    configs = (api / "configs" / "index.html").read_text()
    for name in ("SoftMusicPromptConfig", "ConceptIdentifierConfig", "PivotalMaskConfig"):
        assert f'id="musicpeft.{name}"' in configs, name
    adapters = (api / "adapters" / "index.html").read_text()
    for name in ("add_adapter", "save_adapter", "load_adapter", "hub.push_adapter_to_hub"):
        assert f'id="musicpeft.{name}"' in adapters, name
    assert (
        'id="musicpeft.training.musicgen_trainer.make_musicgen_trainer"'
        in (api / "training" / "index.html").read_text()
    )
    assert 'id="musicpeft.data.dataset.load_audio_folder"' in (api / "data" / "index.html").read_text()
    assert 'id="musicpeft.metrics.core.compute_clap_kld"' in (api / "metrics" / "index.html").read_text()


def test_strict_build_fails_on_a_broken_link(tmp_path):
    project = _copy_project(tmp_path)
    index = project / "docs" / "index.md"
    index.write_text(index.read_text() + "\nSee [the missing page](no_such_page.md).\n")
    proc = _build(project, tmp_path / "site")
    assert proc.returncode != 0
    assert "no_such_page.md" in proc.stderr
