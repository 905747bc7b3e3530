"""`musicpeft` command line: `musicpeft demo`, `musicpeft train`, `musicpeft evaluate`, `musicpeft push`,
`musicpeft app`.

One module per command (``add_command`` registers its flags, ``run`` runs it); arguments are dataclasses
shared with the Python API.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ..errors import input_error_types
from ..families.musicgen_config_notes import musicgen_config_notes_hidden
from ..training.progress import library_bars_follow_rule
from . import app, demo, evaluate, push, train
from .arguments import OneLineErrorParser

COMMANDS = (demo, train, evaluate, push, app)


def build_parser() -> OneLineErrorParser:
    parser = OneLineErrorParser(prog="musicpeft", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_command(commands)
    return parser


def _one_line(error: BaseException) -> str:
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(message.split()) or type(error).__name__


def main(argv: Sequence[str] | None = None, raise_errors: bool | None = None) -> int:
    """Run one ``musicpeft`` command; returns its exit status.

    As the console command (``argv=None``) a refused input (see :func:`musicpeft.errors.input_error_types`)
    prints one line naming the flag or file on stderr and exits with status 2, without a traceback. Called
    from Python with an explicit ``argv``, errors propagate as exceptions unless ``raise_errors=False``.
    ``MUSICPEFT_DEBUG=1`` keeps tracebacks everywhere.
    """
    if raise_errors is None:
        raise_errors = argv is not None or os.environ.get("MUSICPEFT_DEBUG", "") not in ("", "0")
    parser = build_parser()
    namespace, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the subcommand, which names itself and its --help
        namespace.subparser.error(f"unrecognized arguments: {' '.join(unknown)}")
    with library_bars_follow_rule(), musicgen_config_notes_hidden():
        if raise_errors:
            return namespace.run(namespace)
        try:
            return namespace.run(namespace)
        except input_error_types() as error:
            print(f"musicpeft {namespace.command}: error: {_one_line(error)}", file=sys.stderr)
            return 2
