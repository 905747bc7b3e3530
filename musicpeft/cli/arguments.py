"""Dataclass arguments as argparse flags, and argparse with one-line errors: shared by every command."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, NoReturn


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``musicpeft train: error: argument --batch-size: invalid int value: 'x'``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--flag`` per field. A field without a default is a required flag; a field's metadata may
    give the argparse ``type`` (needed when the default is None), ``nargs`` (lists) and ``action`` (switches)."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kwargs = {"dest": f.name, "help": f.metadata.get("help", "")}
        if "nargs" in f.metadata:
            kwargs["nargs"] = f.metadata["nargs"]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs.update(required=True, type=f.metadata.get("type", str))
            kwargs["help"] += " (required)"
        elif "action" in f.metadata:  # a switch such as --overwrite
            kwargs.update(action=f.metadata["action"], default=f.default)
        else:
            kwargs.update(type=f.metadata.get("type", type(f.default)), default=f.default)
            kwargs["help"] += f" (default: {f.default})"
        parser.add_argument(flag, **kwargs)


def from_namespace(cls: type, namespace: argparse.Namespace) -> Any:
    """The ``cls`` dataclass filled from the parsed flags."""
    return cls(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)})
