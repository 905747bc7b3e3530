"""`musicpeft` command line: `musicpeft demo`, `musicpeft train`, `musicpeft evaluate`, `musicpeft push`.

Arguments are dataclasses shared with the Python API.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence


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
        default=False, metadata={"help": "Create the repo private.", "type": lambda v: v.lower() in ("1", "true")}
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


def _push(namespace: argparse.Namespace) -> int:
    from .hub import push_adapter_folder

    args = PushArguments(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(PushArguments)})
    card = {k: getattr(args, k) for k in ("description", "base_model", "training_data") if getattr(args, k)}
    url = push_adapter_folder(args.folder, args.repo_id, private=args.private, model_card=card or None)
    print(f"Uploaded {args.folder} to {args.repo_id}: {url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .demo import DemoArguments
    from .evaluation import EvaluateArguments
    from .train_cli import TrainArguments

    parser = argparse.ArgumentParser(prog="musicpeft", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="Offline demo: teach the trained tiny MusicGen koto with a soft prompt.")
    _add_dataclass_arguments(demo, DemoArguments)
    demo.set_defaults(run=_demo)
    train = commands.add_parser(
        "train", help="Train a soft prompt, LoRA preset or full fine-tune on MusicGen or AudioLDM2; save the adapter."
    )
    _add_dataclass_arguments(train, TrainArguments)
    train.set_defaults(run=_train)
    evaluate = commands.add_parser(
        "evaluate",
        help="Base model vs adapters on a prompt set: clap_kld, token cross-entropy, report with plots.",
    )
    _add_dataclass_arguments(evaluate, EvaluateArguments)
    evaluate.set_defaults(run=_evaluate)
    push = commands.add_parser("push", help="Upload a saved adapter folder to the Hub with a model card.")
    _add_dataclass_arguments(push, PushArguments)
    push.set_defaults(run=_push)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    namespace = parser.parse_args(argv)
    return namespace.run(namespace)


if __name__ == "__main__":
    sys.exit(main())
