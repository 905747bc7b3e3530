"""Progress bars for the long steps (training, encoding, generation, scoring), all from one place.

Why one helper: every long step of the package shows the same kind of bar (``tqdm`` on stderr, removed
when done, as rendering does), and all of them are switched off the same way: automatically when stderr
is not a terminal (logs, CI, captured test output stay clean), or everywhere with ``TQDM_DISABLE=1``
(tqdm's own variable, which the rendering bars honour too). Standard output is never written to, so the
lines the commands print stay parsable. The bars the Hugging Face libraries draw inside the package's steps
(transformers' "Loading weights", a ``Dataset.map``) follow the same rule through :func:`library_bars_follow_rule`.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
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


def _quietly(switch: Callable[[], None]) -> None:
    with warnings.catch_warnings():  # a library's environment variable may pin its bars: that choice wins
        warnings.simplefilter("ignore")
        switch()


def _library_switches() -> list[tuple[Callable[[], bool], Callable[[], None], Callable[[], None]]]:
    """(bars on?, switch off, switch on) for each Hugging Face library whose own bars can show up in a command.

    huggingface_hub comes first: transformers' switches flip huggingface_hub's bars too, so huggingface_hub's
    own state is set back last.
    """
    import datasets.utils as datasets_utils
    import diffusers.utils.logging as diffusers_logging
    import huggingface_hub.utils as hub_utils
    import transformers.utils.logging as transformers_logging

    return [
        (lambda: not hub_utils.are_progress_bars_disabled(), hub_utils.disable_progress_bars,
         hub_utils.enable_progress_bars),
        (transformers_logging.is_progress_bar_enabled, transformers_logging.disable_progress_bar,
         transformers_logging.enable_progress_bar),
        (lambda: not datasets_utils.are_progress_bars_disabled(), datasets_utils.disable_progress_bars,
         datasets_utils.enable_progress_bars),
        (diffusers_logging.is_progress_bar_enabled, diffusers_logging.disable_progress_bar,
         diffusers_logging.enable_progress_bar),
    ]


@contextmanager
def library_bars_follow_rule() -> Iterator[None]:
    """Inside: the libraries' bars are off whenever :func:`bars_off` says the package's are; afterwards as before.

    Every library's on/off state is put back as it was on entry (a caller's ``disable_progress_bars()`` or
    ``HF_*_DISABLE_PROGRESS_BARS`` is never undone), in reverse order, so side effects between them cancel.
    """
    with ExitStack() as restore:
        if bars_off():
            for is_on, switch_off, switch_on in _library_switches():
                restore.callback(_quietly, switch_on if is_on() else switch_off)
                _quietly(switch_off)
        yield
