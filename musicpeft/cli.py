"""`musicpeft` command line: `musicpeft demo`, `musicpeft train`, `musicpeft evaluate`, `musicpeft push`,
`musicpeft app`.

Arguments are dataclasses shared with the Python API.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import NoReturn


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``musicpeft train: error: argument --batch-size: invalid int value: 'x'``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--flag`` per field. A field without a default is a required flag; a field's metadata may
    give the argparse ``type`` (needed when the default is None) and ``nargs`` (lists)."""
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


def _demo(namespace: argparse.Namespace) -> int:
    from .demo import DemoArguments, format_summary, run_demo

    args = DemoArguments(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(DemoArguments)})
    report = run_demo(args)
    print("\n" + format_summary(report))
    return 0


def _train(namespace: argparse.Namespace) -> int:
    from .train_cli import TrainArguments, format_summary, run_training

    args = TrainArguments(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(TrainArguments)})
    summary = run_training(args)
    if summary.get("is_main_process", True):
        print("\n" + format_summary(summary))
    return 0


def _evaluate(namespace: argparse.Namespace) -> int:
    from .evaluation import EvaluateArguments, run_evaluation

    args = EvaluateArguments(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(EvaluateArguments)})
    report = run_evaluation(args)
    print(f"\nReport: {report['files']['markdown']} and {report['results_json']}; plots and wavs in "
          f"{args.output_dir}. Took {report['seconds']} s.")
    return 0


@dataclasses.dataclass
class PushArguments:
    folder: str = dataclasses.field(metadata={"help": "Adapter folder written by musicpeft.save_adapter."})
    repo_id: str = dataclasses.field(metadata={"help": "Hub repo, 'user/name' (or 'name' in your namespace)."})
    private: bool = dataclasses.field(
        default=False, metadata={"help": "Create the repo private (a flag: --private, no value).", "flag": True}
    )
    description: str | None = dataclasses.field(
        default=None, metadata={"help": "A paragraph for the model card.", "type": str}
    )
    base_model: str | None = dataclasses.field(
        default=None, metadata={"help": "Hub id of the base model, for the card's metadata.", "type": str}
    )
    training_data: str | None = dataclasses.field(
        default=None, metadata={"help": "What the adapter was trained on, for the card.", "type": str}
    )
    results: str | None = dataclasses.field(
        default=None,
        metadata={"help": "results.json of `musicpeft evaluate`: the card's metrics table (base vs this adapter) "
                  "and, without --samples, its first clips as audio samples.", "type": str},
    )
    results_model: str | None = dataclasses.field(
        default=None,
        metadata={"help": "This adapter's name in --results when the run compared several.", "type": str},
    )
    samples: list[str] | None = dataclasses.field(
        default=None,
        metadata={"help": "Audio files to upload under samples/ and link in the card, with their spectrograms.",
                  "type": str, "nargs": "+"},
    )


def _add_push_arguments(parser: argparse.ArgumentParser) -> None:
    """PushArguments as flags; a boolean is a plain switch (`--private`), so `--private yes` is refused."""
    for f in dataclasses.fields(PushArguments):
        if f.metadata.get("flag"):
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, action="store_true",
                                help=f.metadata["help"])
    plain = dataclasses.make_dataclass(
        "PushValues", [(f.name, f.type, f) for f in dataclasses.fields(PushArguments) if not f.metadata.get("flag")]
    )
    _add_dataclass_arguments(parser, plain)


def _push(namespace: argparse.Namespace) -> int:
    from .hub import push_adapter_folder

    args = PushArguments(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(PushArguments)})
    card = {k: getattr(args, k) for k in ("description", "base_model", "training_data") if getattr(args, k)}
    url = push_adapter_folder(args.folder, args.repo_id, private=args.private, model_card=card or None,
                              results=args.results, results_model=args.results_model, samples=args.samples)
    print(f"Uploaded {args.folder} to {args.repo_id}: {url}")
    return 0


def _app(namespace: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise SystemExit("musicpeft app: the browser demo needs gradio, which is not installed; "
                         "install it with: pip install 'musicpeft[app]'")
    from .app import AppArguments, launch_app

    args = AppArguments(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(AppArguments)})
    launch_app(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .app import AppArguments
    from .demo import DemoArguments
    from .evaluation import EvaluateArguments
    from .train_cli import TrainArguments

    parser = _Parser(prog="musicpeft", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="Offline demo: teach the trained tiny MusicGen koto with a soft prompt.")
    _add_dataclass_arguments(demo, DemoArguments)
    demo.set_defaults(run=_demo, subparser=demo)
    train = commands.add_parser(
        "train", help="Train a soft prompt, LoRA preset or full fine-tune on MusicGen or AudioLDM2; save the adapter."
    )
    _add_dataclass_arguments(train, TrainArguments)
    train.set_defaults(run=_train, subparser=train)
    evaluate = commands.add_parser(
        "evaluate",
        help="Base model vs adapters on a prompt set: clap_kld, token cross-entropy, report with plots.",
    )
    _add_dataclass_arguments(evaluate, EvaluateArguments)
    evaluate.set_defaults(run=_evaluate, subparser=evaluate)
    push = commands.add_parser("push", help="Upload a saved adapter folder to the Hub with a model card.")
    _add_push_arguments(push)
    push.set_defaults(run=_push, subparser=push)
    app = commands.add_parser("app", help="Browser demo (Gradio): a base and its adapters on one prompt, audio and "
                                          "spectrograms; needs the 'app' extra.")
    _add_dataclass_arguments(app, AppArguments)
    app.set_defaults(run=_app, subparser=app)
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
    if raise_errors:
        return namespace.run(namespace)
    from .errors import input_error_types

    try:
        return namespace.run(namespace)
    except input_error_types() as error:
        print(f"musicpeft {namespace.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
