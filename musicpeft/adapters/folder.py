"""All-or-nothing writes of a whole adapter folder: the one writer of adapter folders in musicpeft.

Writing each file atomically is not enough: a kill between two files leaves new weights beside an old
config, or (for a pipeline) one component new and one old, and that mix loads without error. So an
adapter folder is written completely into a hidden sibling staging folder, then swapped in: the old
folder is renamed away, the staging folder is renamed to the target name, and the old one is deleted.
Each rename is atomic, so a reader sees the old adapter, no folder, or the new adapter; never a mix.

Entries of the old folder that are not adapter files (a training run's checkpoints, logs, ...) are moved
into the new folder, so saving into a working directory keeps what else lives there. Staging folders
are removed when the write fails, and left-overs of killed writes are removed by the next save.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

from .files import CONFIG_NAME, PICKLE_NAME, SAFETENSORS_NAME
from .manifest import MANIFEST_NAME

_STAGING = ".musicpeft-staging-"
_OLD = ".musicpeft-old-"
# Files a save of an adapter writes (README.md: peft's card); a new save replaces all of them.
ADAPTER_FILES = frozenset({CONFIG_NAME, SAFETENSORS_NAME, PICKLE_NAME, MANIFEST_NAME, "README.md"})


def _adapter_entries(folder: str) -> set[str]:
    """Entries of an existing folder that belong to an adapter saved there (replaced by a new save)."""
    names = set(os.listdir(folder))
    owned = names & ADAPTER_FILES
    manifest = os.path.join(folder, MANIFEST_NAME)
    components: list[str] = []
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
        with open(manifest) as handle:
            components = list(json.load(handle).get("components", {}).values())
    for name in names - owned:
        path = os.path.join(folder, name)
        if name in components or (os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_NAME))):
            owned.add(name)
        elif name.startswith(_STAGING):
            owned.add(name)  # a nested left-over of an older layout
    return owned


def _remove_leftovers(parent: str, base: str) -> None:
    """Delete staging folders of killed writes to `<parent>/<base>`; old folders only when nothing else is in them."""
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if name.startswith(f".{base}{_STAGING}"):
            shutil.rmtree(path, ignore_errors=True)
        elif name.startswith(f".{base}{_OLD}") and os.path.isdir(path):
            if set(os.listdir(path)) <= _adapter_entries(path):
                shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(directory: str | os.PathLike) -> Iterator[str]:
    """Yield an empty staging folder; when the block ends without error it replaces `directory` whole.

    On an exception the staging folder is deleted and `directory` is left exactly as it was.
    """
    # A link to a folder keeps pointing at it: the real folder is what gets replaced.
    directory = os.path.realpath(os.fspath(directory))
    parent, base = os.path.split(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(f"{directory} is a file; an adapter is saved as a folder.")
    os.makedirs(parent, exist_ok=True)
    _remove_leftovers(parent, base)
    staging = tempfile.mkdtemp(prefix=f".{base}{_STAGING}", dir=parent)
    os.chmod(staging, _folder_mode(directory))  # mkdtemp makes it private (0700)
    try:
        yield staging
        swap_in(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _folder_mode(directory: str) -> int:
    """The replaced folder's permissions, or what os.makedirs would give a new one (umask applied)."""
    if os.path.isdir(directory):
        return os.stat(directory).st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def swap_in(staging: str | os.PathLike, directory: str | os.PathLike, *, keep_foreign: bool = True) -> None:
    """Rename the complete folder `staging` to `directory`, replacing what was there, with atomic renames only.

    The old folder is renamed aside first and put back if the second rename fails. With `keep_foreign`,
    entries of the old folder that are not adapter files move into the new one; without it the old
    folder is replaced whole (a training run's output folder).
    """
    staging, directory = os.fspath(staging), os.path.abspath(os.fspath(directory))
    parent, base = os.path.split(directory)
    if not os.path.isdir(directory):
        os.replace(staging, directory)
        return
    keep = set(os.listdir(directory)) - _adapter_entries(directory) if keep_foreign else set()
    keep = sorted(keep - set(os.listdir(staging)))
    old = tempfile.mkdtemp(prefix=f".{base}{_OLD}", dir=parent)
    os.rmdir(old)  # only the unique name is wanted: the old folder is renamed onto it
    os.replace(directory, old)
    try:
        os.replace(staging, directory)
    except BaseException:
        os.replace(old, directory)  # put the old adapter back
        raise
    for name in keep:  # not adapter files: they stay with the folder
        os.replace(os.path.join(old, name), os.path.join(directory, name))
    shutil.rmtree(old, ignore_errors=True)


def write_folder_atomically(directory: str | os.PathLike, write: Callable[[str], None]) -> str:
    """Call `write(folder)` on a fresh staging folder, then swap it in as `directory` (see module docstring)."""
    with staged_folder(directory) as staging:
        write(staging)
    return os.fspath(directory)
