"""One way to attach, save and load adapters, whatever the model family: the public verbs.

`add_adapter`, `save_adapter` and `load_adapter` take a MusicGen model (or a PeftModel around one) or an
AudioLDM2 pipeline. The code lives in `musicpeft.adapters` (hosts, the one attach / save / load path, the
manifest, the folder writer, rollback); this module is the stable place to import them from.
"""

from __future__ import annotations

from .adapters.base import family_adapts_components, is_pipeline, unwrap_peft
from .adapters.hosts import host_of
from .adapters.lifecycle import (
    add_adapter,
    attach,
    load_adapter,
    resolve_source,
    save_adapter,
    save_peft_adapter,
    set_active_adapter,
    unload_adapters,
    write_peft_adapter,
)
from .adapters.manifest import MANIFEST_NAME, manifest_payload, write_manifest
from .adapters.manifest import read_manifest as _read_manifest
from .families import ModelFamily


def read_manifest(folder: str, family: ModelFamily) -> dict | None:
    """The folder's validated manifest for `family` (None for a plain peft folder)."""
    return _read_manifest(folder, family, per_component=family_adapts_components(family))


__all__ = [
    "MANIFEST_NAME",
    "add_adapter",
    "attach",
    "host_of",
    "is_pipeline",
    "load_adapter",
    "manifest_payload",
    "read_manifest",
    "resolve_source",
    "save_adapter",
    "save_peft_adapter",
    "set_active_adapter",
    "unload_adapters",
    "unwrap_peft",
    "write_manifest",
    "write_peft_adapter",
]
