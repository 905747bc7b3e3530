"""The project's input errors: what the ``musicpeft`` command reports as one line instead of a traceback.

Why a base class: the command line must tell a user's mistake (a bad flag value, a missing or malformed file,
a refused output folder, a training run that diverged) from a bug in musicpeft. Everything raised for the
first kind subclasses :class:`MusicpeftInputError` (itself a ``ValueError``, so ``except ValueError`` in
callers keeps working); older helpers raise plain ``ValueError`` / ``FileNotFoundError`` with a message
naming the file or flag, which the command line treats the same way (see :data:`INPUT_ERRORS`).
"""

from __future__ import annotations

from .families import UnsupportedModelError


class MusicpeftInputError(ValueError):
    """A user input (flag, file, folder, data) that musicpeft refuses, with a message naming it."""


class OutputDirNotEmptyError(MusicpeftInputError):
    """``--output-dir`` already holds files and ``--overwrite`` was not given."""


class NonFiniteTrainingError(MusicpeftInputError):
    """Training produced a NaN/Inf loss or gradient (a learning rate too high, broken data): stopped, nothing saved."""


class ResumeError(MusicpeftInputError):
    """A checkpoint that cannot be resumed exactly (e.g. it holds the model only, no optimizer or schedule)."""



def input_error_types() -> tuple[type[BaseException], ...]:
    """What ``musicpeft`` turns into ``musicpeft <command>: error: <message>`` and exit status 2.

    ``OSError`` covers FileNotFoundError / NotADirectoryError / PermissionError on the user's paths;
    ``UnsupportedModelError`` a base that is neither MusicGen nor AudioLDM2. Other exceptions are bugs and
    keep their traceback.
    """
    return (ValueError, OSError, UnsupportedModelError)
