"""``musicpeft demo``: the offline demo on the trained tiny MusicGen."""

from __future__ import annotations

import argparse

from ..demo import DemoArguments, format_summary, run_demo
from .arguments import add_dataclass_arguments, from_namespace


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("demo", help="Offline demo: teach the trained tiny MusicGen koto with a soft prompt.")
    add_dataclass_arguments(parser, DemoArguments)
    parser.set_defaults(run=run, subparser=parser)


def run(namespace: argparse.Namespace) -> int:
    report = run_demo(from_namespace(DemoArguments, namespace))
    print("\n" + format_summary(report))
    return 0
