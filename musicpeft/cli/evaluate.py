"""``musicpeft evaluate``: the base vs its adapters on a prompt set, with a report."""

from __future__ import annotations

import argparse

from ..evaluation.runner import EvaluateArguments, run_evaluation
from .arguments import add_dataclass_arguments, from_namespace


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate", help="Base model vs adapters on a prompt set: clap_kld, token cross-entropy, report with plots."
    )
    add_dataclass_arguments(parser, EvaluateArguments)
    parser.set_defaults(run=run, subparser=parser)


def run(namespace: argparse.Namespace) -> int:
    args = from_namespace(EvaluateArguments, namespace)
    report = run_evaluation(args)
    print(f"\nReport: {report['files']['markdown']} and {report['results_json']}; plots and wavs in "
          f"{args.output_dir}. Took {report['seconds']} s.")
    return 0
