"""The output folder of ``musicpeft train``: refused when it holds files, replaced whole or not at all.

Why: training into a folder that already holds an adapter used to leave the old files beside the new ones
(a stale ``adapter_model.safetensors`` next to a new config, or an old ``decoder/`` beside a new soft
prompt), and loading then picked up the stale one. Now a non-empty folder is refused unless the user asks
for ``--overwrite``; the run writes into a staging folder beside it, and only a complete result is renamed
into place (the old folder is moved aside first and removed after). A failed or interrupted run leaves the
old folder exactly as it was.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..adapters.folder import swap_in
from ..errors import MusicpeftInputError, OutputDirNotEmptyError


def check_output_dir(output_dir: str | os.PathLike, overwrite: bool) -> None:
    """Refuse a path that is a file, or a non-empty folder without ``overwrite``."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise MusicpeftInputError(f"output_dir: {path} exists and is not a folder")
    here = Path.cwd().resolve()
    if path.resolve() == here or path.resolve() in here.parents:
        raise MusicpeftInputError(f"output_dir: {path} is the current folder or holds it; name a folder of its own")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        names = sorted(p.name for p in path.iterdir())
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise OutputDirNotEmptyError(f"output_dir: {path} is not empty ({shown}); choose another folder or pass "
                                     "--overwrite to replace it")


def make_staging(output_dir: str | os.PathLike) -> Path:
    """A fresh hidden folder beside ``output_dir`` (same file system, so the final rename is atomic)."""
    path = Path(output_dir).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.staging-", dir=path.parent))


def swap_into_place(new: str | os.PathLike, output_dir: str | os.PathLike) -> None:
    """Rename the complete folder ``new`` to ``output_dir``, replacing what was there (the folder writer of
    ``musicpeft.adapters.folder``, without keeping the old folder's other files: the run's output is whole)."""
    swap_in(new, output_dir, keep_foreign=False)
