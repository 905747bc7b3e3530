"""``musicpeft app``: the browser demo (Gradio), from the ``app`` extra."""

from __future__ import annotations

import argparse
import importlib.util

from ..app import AppArguments, launch_app
from .arguments import add_dataclass_arguments, from_namespace


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("app", help="Browser demo (Gradio): a base and its adapters on one prompt, audio and "
                                             "spectrograms; needs the 'app' extra.")
    add_dataclass_arguments(parser, AppArguments)
    parser.set_defaults(run=run, subparser=parser)


def run(namespace: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise SystemExit("musicpeft app: the browser demo needs gradio, which is not installed; "
                         "install it with: pip install 'musicpeft[app]'")
    launch_app(from_namespace(AppArguments, namespace))
    return 0
