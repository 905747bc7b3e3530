"""``musicpeft push``: upload a saved adapter folder to the Hub with a model card."""

from __future__ import annotations

import argparse
import dataclasses

from ..hub import push_adapter_folder
from .arguments import add_dataclass_arguments, from_namespace


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


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    """PushArguments as flags; a boolean is a plain switch (`--private`), so `--private yes` is refused."""
    for f in dataclasses.fields(PushArguments):
        if f.metadata.get("flag"):
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, action="store_true",
                                help=f.metadata["help"])
    plain = dataclasses.make_dataclass(
        "PushValues", [(f.name, f.type, f) for f in dataclasses.fields(PushArguments) if not f.metadata.get("flag")]
    )
    add_dataclass_arguments(parser, plain)


def run(namespace: argparse.Namespace) -> int:
    args = from_namespace(PushArguments, namespace)
    card = {k: getattr(args, k) for k in ("description", "base_model", "training_data") if getattr(args, k)}
    url = push_adapter_folder(args.folder, args.repo_id, private=args.private, model_card=card or None,
                              results=args.results, results_model=args.results_model, samples=args.samples)
    print(f"Uploaded {args.folder} to {args.repo_id}: {url}")
    return 0


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("push", help="Upload a saved adapter folder to the Hub with a model card.")
    add_push_arguments(parser)
    parser.set_defaults(run=run, subparser=parser)
