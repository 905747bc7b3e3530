"""`musicpeft` command line: `musicpeft demo`, ... Arguments are dataclasses shared with the Python API."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence


def _add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    for f in dataclasses.fields(cls):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=type(f.default),
            default=f.default,
            help=f"{f.metadata.get('help', '')} (default: {f.default})",
        )


def _demo(namespace: argparse.Namespace) -> int:
    from .demo import DemoArguments, run_demo

    args = DemoArguments(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(DemoArguments)})
    report = run_demo(args)
    print(
        f"\nHeld-out token cross-entropy: {report['heldout_cross_entropy_before']:.4f} (base) -> "
        f"{report['heldout_cross_entropy_after']:.4f} (with soft prompt)\n"
        f"Adapter: {report['adapter_dir']} ({report['adapter_bytes']} bytes)\n"
        f"Report: {args.output_dir}/report.md, loss curve, before/after wavs. Took {report['seconds']} s."
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .demo import DemoArguments

    parser = argparse.ArgumentParser(prog="musicpeft", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="Offline end-to-end demo on the embedded tiny MusicGen.")
    _add_dataclass_arguments(demo, DemoArguments)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    namespace = parser.parse_args(argv)
    return namespace.run(namespace)


if __name__ == "__main__":
    sys.exit(main())
