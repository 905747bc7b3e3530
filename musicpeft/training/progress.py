"""Progress bars for the long steps (training, encoding, generation, scoring), all from one place.

Why one helper: every long step of the package shows the same kind of bar (``tqdm`` on stderr, removed
when done, as rendering does), and all of them are switched off the same way: automatically when stderr
is not a terminal (logs, CI, captured test output stay clean), or everywhere with ``TQDM_DISABLE=1``
(tqdm's own variable, which the rendering bars honour too). Standard output is never written to, so the
lines the commands print stay parsable.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

_OFF = ("1", "true", "yes", "on")


def progress_disabled() -> bool | None:
    """``True`` when ``TQDM_DISABLE`` switches bars off, else ``None`` (tqdm: off when stderr is no terminal)."""
    return True if os.environ.get("TQDM_DISABLE", "").strip().lower() in _OFF else None


def bars_off() -> bool:
    """Whether bars are off right now: ``TQDM_DISABLE`` set, or stderr not a terminal (the rule tqdm applies).

    For tools that take a plain on/off switch instead of tqdm's ``disable=None`` (the Trainer's ``disable_tqdm``).
    """
    return bool(progress_disabled()) or not sys.stderr.isatty()


def progress_bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str, unit: str = "it",
                 leave: bool = False) -> tqdm:
    """A ``tqdm`` bar over ``iterable`` (or updated by hand up to ``total``) that follows :func:`progress_disabled`."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, disable=progress_disabled(),
                dynamic_ncols=True)
