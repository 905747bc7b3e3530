"""Train an adapter, save it, push it to a Hub repo, and load it back with stock peft.

The path every user of a shared adapter takes: ``musicpeft.save_adapter`` writes ``adapter_config.json`` +
``adapter_model.safetensors``; ``musicpeft.push_adapter_to_hub`` uploads them with a model card (metrics
included); anyone then loads the adapter onto the base with ``PeftModel.from_pretrained(base, repo_id)``
after ``import musicpeft``, which registers the method with peft.

The adapter is a koto soft prompt on the shipped tiny trained MusicGen (a few training steps by default).
The example checks that the loaded adapter gives exactly the logits of the trained one, and that they
differ from the base's (so the pushed weights are the trained ones, not a fresh initialisation).

    huggingface-cli login        # or set HF_TOKEN; any Hub-compatible server works via HF_ENDPOINT
    python examples/push_and_load.py --repo_id <user>/tiny-koto-prompt

Without a Hub account, from a checkout: the test suite's local Hub server runs it with HF_ENDPOINT set:

    python tests/hub/serve.py -- python examples/push_and_load.py --repo_id user/tiny-koto-prompt

The soft-prompt paper's training settings are flags (``--num_virtual_tokens 30 --batch_size 32
--learning_rate 1e-5 --steps ...``); see ``examples/korean_prompt_tuning.py`` for the full recipe.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
from _common import example_parser, world_codes
from peft import PeftModel

import musicpeft
from musicpeft.evaluation.micro_world import load_micro_world, train_soft_prompt
from musicpeft.training.collator import base_musicgen
from musicpeft.training.musicgen_trainer import token_cross_entropy


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = example_parser(__doc__, None, "Where the adapter is saved first (default: a temp dir).")
    parser.add_argument("--repo_id", required=True, help="Hub repo to push to, e.g. user/tiny-koto-prompt.")
    parser.add_argument("--private", action="store_true", help="Create the repo private.")
    parser.add_argument("--instrument", default="koto")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--num_virtual_tokens", type=int, default=30, help="Paper: 30.")
    parser.add_argument("--batch_size", type=int, default=8, help="Paper: 32.")
    parser.add_argument("--learning_rate", type=float, default=3e-2, help="Paper: 1e-5 (for 100 epochs).")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--clip_seconds", type=float, default=2.0)
    return parser.parse_args(argv)


@torch.no_grad()
def logits(model, processor, text: str) -> torch.Tensor:
    """The decoder's logits for a fixed prompt and fixed audio codes: what an adapter changes."""
    inner = base_musicgen(model)
    inputs = processor(text=[text], return_tensors="pt")
    books, vocab = inner.decoder.num_codebooks, inner.config.decoder.vocab_size
    codes = torch.arange(books * 8).reshape(books, 8) % vocab
    return model(**inputs, decoder_input_ids=codes).logits


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    world = load_micro_world()
    train = world_codes(world, args.instrument, "train", args.clips, args.clip_seconds, args.seed)
    heldout = world_codes(world, args.instrument, "heldout", max(2, args.clips // 2), args.clip_seconds, args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        trained, _ = train_soft_prompt(world.fresh_model(), world.processor, train,
                                       steps=args.steps, learning_rate=args.learning_rate, batch_size=args.batch_size,
                                       num_virtual_tokens=args.num_virtual_tokens, seed=args.seed, output_dir=scratch,
                                       progress=False)
    folder = args.output_dir or tempfile.mkdtemp(prefix="push-and-load-")
    musicpeft.save_adapter(trained, folder)
    ce_base = token_cross_entropy(world.model, world.processor, heldout)["cross_entropy"]
    ce_trained = token_cross_entropy(trained, world.processor, heldout)["cross_entropy"]
    card = {
        "description": f"A {args.instrument} soft prompt for the musicpeft tiny trained MusicGen ({args.steps} steps).",
        "training_data": f"{len(train)} rendered {args.instrument} clips of the micro-world's training pieces "
                         "(music21 corpus, General MIDI soundfont).",
        "metrics": {"held-out token cross-entropy, base": round(ce_base, 4),
                    "held-out token cross-entropy, with the prompt": round(ce_trained, 4)},
        "tags": ["musicpeft-tiny", args.instrument],
    }
    url = musicpeft.push_adapter_to_hub(trained, args.repo_id, private=args.private, model_card=card)
    loaded = PeftModel.from_pretrained(world.fresh_model(), args.repo_id).eval()
    text = f"a slow piece on {args.instrument}"
    reference, again, base = (logits(m, world.processor, text) for m in (trained, loaded, world.model))
    report = {
        "saved_to": folder,
        "files": sorted(os.listdir(folder)),
        "commit_url": url,
        "loaded_matches_trained": bool(torch.equal(reference, again)),
        "differs_from_base": bool(not torch.allclose(reference, base)),
        "heldout_cross_entropy": {"base": ce_base, "with_prompt": ce_trained},
    }
    print(f"Pushed {folder} to {args.repo_id}: {url}")
    print(f"Loaded with PeftModel.from_pretrained: identical logits to the trained prompt: "
          f"{report['loaded_matches_trained']}; different from the base: {report['differs_from_base']}")
    if not (report["loaded_matches_trained"] and report["differs_from_base"]):
        raise SystemExit("the adapter loaded from the Hub does not reproduce the trained one")
    return report


if __name__ == "__main__":
    main()
