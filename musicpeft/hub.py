"""Publish an adapter on the Hugging Face Hub with a model card that says how to load it.

`push_adapter_to_hub` saves the adapter exactly as `musicpeft.save_adapter` does (safetensors only);
`push_adapter_folder` (what `musicpeft push` runs) takes a folder `save_adapter` wrote. Either way only
the adapter's own files go up: `musicpeft_adapter.json`, and per adapted component `adapter_config.json`
and `adapter_model.safetensors` (`adapter_files`), never anything else that happens to sit in the folder,
and never through a symbolic link (a link is refused, naming it: following one once uploaded a secret).
Next to them: the `README.md` card (`musicpeft.model_card`), with a metrics table when the results.json
of `musicpeft evaluate` is given, and declared audio samples under `samples/` with a spectrogram PNG.
Everything goes up in one commit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from peft import PeftConfig

from .adapters.files import CONFIG_NAME, SAFETENSORS_NAME, AdapterFileError, check_local_adapter_folder
from .api import MANIFEST_NAME, save_adapter
from .families import get_family
from .model_card import (
    CARD_KEYS,
    CardSample,
    check_card_keys,
    evaluation_table,
    method_name,
    render_model_card,
    spectrogram_png,
)

__all__ = ["CARD_KEYS", "adapter_files", "push_adapter_folder", "push_adapter_to_hub", "render_model_card"]

SAMPLE_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
SAMPLES_FOLDER = "samples"
MAX_SAMPLES_FROM_RESULTS = 4


def push_adapter_to_hub(
    model_or_pipe: Any,
    repo_id: str,
    adapter_name: str = "default",
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    model_card: dict[str, Any] | None = None,
    results: str | os.PathLike | None = None,
    results_model: str | None = None,
    samples: Sequence[str | os.PathLike] | None = None,
) -> str:
    """Upload one adapter (weights, config, model card, samples) to the Hub repo `repo_id`; returns the commit URL.

    The repo is created if needed (`private` applies only then). `model_card` fills the card's optional
    parts (see `CARD_KEYS`); `results` is a `musicpeft evaluate` results.json for the metrics table
    (`results_model`: this adapter's name in it); `samples` are audio files to upload and link (default:
    the first clips of this adapter in `results`). Nothing is uploaded if any of it is unusable.
    """
    with tempfile.TemporaryDirectory(prefix="musicpeft-push-") as folder:
        save_adapter(model_or_pipe, folder, adapter_name)
        return push_adapter_folder(folder, repo_id, private=private, token=token, commit_message=commit_message,
                                   model_card=model_card, results=results, results_model=results_model,
                                   samples=samples)


def push_adapter_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    model_card: dict[str, Any] | None = None,
    results: str | os.PathLike | None = None,
    results_model: str | None = None,
    samples: Sequence[str | os.PathLike] | None = None,
) -> str:
    """Upload an adapter folder written by `musicpeft.save_adapter` (what `musicpeft push` does).

    Arguments as for `push_adapter_to_hub`. Every input is checked before anything is sent.
    """
    folder = os.fspath(folder)
    files, family_name = adapter_files(folder)
    family = get_family(family_name)
    check_card_keys(model_card or {})
    evaluation = None
    if results is not None:
        evaluation = evaluation_table(results, results_model, folder)
    chosen = _samples(samples, evaluation)
    with tempfile.TemporaryDirectory(prefix="musicpeft-push-") as staging:
        # A copy of exactly the adapter's files, so that nothing else in the folder (nor the README written
        # for the Hub) is uploaded or lands in the user's folder.
        for relative in files:
            target = os.path.join(staging, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(os.path.join(folder, relative), target, follow_symlinks=False)
        card_samples, spectrogram = _stage_samples(chosen, staging)
        return _upload(staging, repo_id, family, private, token, commit_message, model_card, evaluation,
                       card_samples, spectrogram)


def adapter_files(folder: str | os.PathLike) -> tuple[list[str], str]:
    """(relative paths of the adapter's own files, family name) of a folder written by `save_adapter`.

    Refuses a folder that is not an adapter, a component path that leaves the folder, and any of those
    files (or component folders) that is a symbolic link.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise AdapterFileError(f"{folder}: not a folder; pass the folder musicpeft.save_adapter wrote.")
    manifest, config = os.path.join(folder, MANIFEST_NAME), os.path.join(folder, CONFIG_NAME)
    for path in (manifest, config):
        _refuse_link(path)
    source = manifest if os.path.isfile(manifest) else config
    if not os.path.isfile(source):
        raise AdapterFileError(f"{folder}: neither {MANIFEST_NAME} nor {CONFIG_NAME}; not an adapter folder.")
    try:
        with open(source, encoding="utf-8") as handle:
            record = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AdapterFileError(f"{source}: not valid JSON ({err}).") from None
    if not isinstance(record, dict):
        raise AdapterFileError(f"{source}: expected a JSON object, got {type(record).__name__}.")
    family_name = record.get("family", record.get("base_family"))
    if not isinstance(family_name, str):
        raise AdapterFileError(f"{source}: names no model family; save the adapter with musicpeft.save_adapter.")
    components = record.get("components") if source == manifest else None
    if components is not None and not (
        isinstance(components, dict) and all(isinstance(v, str) for v in components.values())
    ):
        raise AdapterFileError(f"{source}: 'components' must map component names to subfolders, got {components!r}.")
    files = [MANIFEST_NAME] if source == manifest else []
    root = os.path.realpath(folder)
    for subfolder in (components or {}).values() or ["."]:
        relative = os.path.normpath(subfolder)
        if os.path.isabs(subfolder) or relative == ".." or relative.startswith(".." + os.sep):
            raise AdapterFileError(f"{source}: component folder {subfolder!r} is outside {folder}.")
        path = os.path.join(folder, relative)
        if relative != ".":
            _refuse_link(path)
        if os.path.commonpath([root, os.path.realpath(path)]) != root:
            raise AdapterFileError(f"{source}: component folder {subfolder!r} is outside {folder}.")
        for name in (CONFIG_NAME, SAFETENSORS_NAME):
            _refuse_link(os.path.join(path, name))
        check_local_adapter_folder(path, allow_pickle=False)
        files += [Path(relative, name).as_posix() for name in (CONFIG_NAME, SAFETENSORS_NAME)]
    return files, family_name


def _refuse_link(path: str) -> None:
    if os.path.islink(path):
        raise AdapterFileError(
            f"{path} is a symbolic link (to {os.readlink(path)}); musicpeft push uploads only the adapter's own "
            "files and never follows links. Replace the link with the file itself."
        )


def _samples(samples: Sequence[str | os.PathLike] | None, evaluation: Mapping[str, Any] | None) -> list[tuple]:
    """[(path, caption)] of the samples to upload: the given files, else this adapter's first evaluation clips."""
    if samples:
        chosen = [(os.fspath(path), None) for path in samples]
        what = "samples"
    elif evaluation is not None and evaluation["clips"]:
        prompts = evaluation["prompts"]
        clips = evaluation["clips"][:MAX_SAMPLES_FROM_RESULTS]
        chosen = [(path, prompts[i] if i < len(prompts) else None) for i, path in enumerate(clips)]
        what = "results clips"
    else:
        return []
    import soundfile as sf

    for path, _ in chosen:
        _refuse_link(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what}: {path} is not a file.")
        if not path.lower().endswith(SAMPLE_EXTENSIONS):
            raise ValueError(f"{what}: {path} is not an audio file ({', '.join(SAMPLE_EXTENSIONS)}).")
        try:
            sf.info(path)
        except RuntimeError as err:
            raise ValueError(f"{what}: {path} is not readable audio ({err}).") from None
    return chosen


def _stage_samples(chosen: list[tuple], staging: str) -> tuple[list[CardSample], str | None]:
    if not chosen:
        return [], None
    os.makedirs(os.path.join(staging, SAMPLES_FOLDER))
    card_samples = []
    for i, (path, caption) in enumerate(chosen):
        stem, ext = os.path.splitext(os.path.basename(path))
        slug = re.sub(r"[^A-Za-z0-9]+", "-", stem).strip("-").lower()[:40] or "sample"
        relative = f"{SAMPLES_FOLDER}/{i:02d}-{slug}{ext.lower()}"
        shutil.copyfile(path, os.path.join(staging, relative))
        card_samples.append(CardSample(relative, _escape(caption) if caption else None))
    spectrogram = f"{SAMPLES_FOLDER}/spectrograms.png"
    spectrogram_png([(os.path.join(staging, s.path), s.caption) for s in card_samples],
                    os.path.join(staging, spectrogram))
    return card_samples, spectrogram


def _escape(text: str) -> str:
    """A prompt as plain text in Markdown/HTML (placeholders such as <koto> would read as tags)."""
    return " ".join(text.split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "'")


def _upload(folder, repo_id, family, private, token, commit_message, model_card, evaluation, samples,
            spectrogram) -> str:
    from huggingface_hub import HfApi

    configs = _saved_configs(folder)
    card_config = configs[None] if list(configs) == [None] else configs
    num_parameters = _count_parameters(folder)

    def card(repo: str) -> str:
        return render_model_card(card_config, family, model_card, repo_id=repo, num_parameters=num_parameters,
                                 evaluation=evaluation, samples=samples, spectrogram=spectrogram)

    text = card(repo_id)  # render (and check) before creating anything on the Hub
    api = HfApi(token=token)
    repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if repo.repo_id != repo_id:  # "name" alone: the Hub put it in the token owner's namespace
        text = card(repo.repo_id)
    Path(folder, "README.md").write_text(text, encoding="utf-8")
    method = method_name(next(iter(configs.values())))
    info = api.upload_folder(
        folder_path=folder,
        repo_id=repo.repo_id,
        repo_type="model",
        commit_message=commit_message or f"Upload {method} adapter with musicpeft",
        delete_patterns=[f"{SAMPLES_FOLDER}/*"],  # samples of an earlier push that this card no longer links
    )
    return str(info.commit_url)


def _saved_configs(folder: str) -> dict[str | None, PeftConfig]:
    """The adapter configs `save_adapter` wrote: at the root (None) or one per component subfolder."""
    configs: dict[str | None, PeftConfig] = {}
    for config_file in sorted(Path(folder).rglob(CONFIG_NAME)):
        sub = config_file.parent.relative_to(folder)
        configs[None if sub == Path(".") else sub.as_posix()] = PeftConfig.from_pretrained(str(config_file.parent))
    if not configs:
        raise ValueError(f"save_adapter wrote no {CONFIG_NAME} under {folder}; nothing to push.")
    return configs


def _count_parameters(folder: str) -> int:
    from safetensors import safe_open

    total = 0
    for weights in Path(folder).rglob(SAFETENSORS_NAME):
        with safe_open(str(weights), framework="pt") as handle:
            for key in handle.keys():
                n = 1
                for dim in handle.get_slice(key).get_shape():
                    n *= dim
                total += n
    return total
