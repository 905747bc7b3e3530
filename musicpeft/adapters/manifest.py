"""`musicpeft_adapter.json`: which family an adapter folder was made for, and where each component's adapter is.

A model's adapter sits at the folder's root and its manifest names no component; a pipeline's adapters
sit in one subfolder per adapted component, named in the manifest. The manifest lets a loader refuse an
adapter made for another family before it touches a weight, and lets it find every component's part.
"""

from __future__ import annotations

import json
import os

from ..families import ModelFamily
from ..io import atomic_write_text
from .files import AdapterFileError

MANIFEST_NAME = "musicpeft_adapter.json"


def manifest_payload(family: str, components: dict[str, str]) -> str:
    """The manifest's text: the family's name and component -> subfolder."""
    return json.dumps({"family": family, "components": components}, indent=2) + "\n"


def write_manifest(directory: str, family: str, components: dict[str, str]) -> None:
    """Write `musicpeft_adapter.json` into `directory` (atomically for that one file)."""
    atomic_write_text(os.path.join(directory, MANIFEST_NAME), manifest_payload(family, components))


def read_manifest(folder: str, family: ModelFamily, *, per_component: bool) -> dict | None:
    """The folder's manifest, validated (None for a plain peft folder); refuses an adapter made for another family.

    `per_component`: the family adapts pipeline components, so the manifest must name at least one, each
    a subfolder inside `folder` (no absolute paths, no `..`, no links out of the folder). Otherwise the
    adapter lives at the folder's root and the manifest names none.
    """
    path = os.path.join(folder, MANIFEST_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AdapterFileError(f"{path}: unreadable manifest ({err}).") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("family"), str):
        raise AdapterFileError(f"{path}: expected a JSON object with a string 'family', got {manifest!r:.200}.")
    if manifest["family"] != family.name:
        raise AdapterFileError(
            f"{folder} holds an adapter for the {manifest.get('family')!r} family, but the base is of the "
            f"{family.name!r} family. Load it onto a model of its own family."
        )
    components = manifest.get("components", {})
    if not isinstance(components, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in components.items()
    ):
        raise AdapterFileError(f"{path}: 'components' must map component names to subfolder names, got "
                               f"{components!r:.200}.")
    if per_component and not components:
        raise AdapterFileError(f"{path}: 'components' is empty; the manifest names no adapter to load.")
    if not per_component and components:
        raise AdapterFileError(f"{path}: a {family.name} adapter lives at the folder's root; 'components' must be "
                               f"empty, got {components}.")
    root = os.path.realpath(folder)
    for component, subfolder in components.items():
        target = os.path.realpath(os.path.join(folder, subfolder))
        if os.path.isabs(subfolder) or ".." in subfolder.replace("\\", "/").split("/") or \
                os.path.commonpath([root, target]) != root:
            raise AdapterFileError(
                f"{path}: component {component!r} points to {subfolder!r}, outside the adapter folder; "
                "only subfolders of the folder are loaded."
            )
    return manifest
