"""Train a soft music prompt on MusicGen with the transformers Trainer and early stopping, then save it.

Real use (30 s clips of your music listed in metadata.jsonl, as in the MusicGen fine-tuning papers):

    python examples/train_soft_prompt_musicgen.py --base facebook/musicgen-small \\
        --data my_music/ --output_dir korean-prompt --epochs 100 --batch_size 32 --learning_rate 1e-5

Offline smoke run on the embedded tiny MusicGen and rendered music21 audio (seconds on a CPU):

    python examples/train_soft_prompt_musicgen.py --base tiny --data rendered:107 --output_dir /tmp/prompt \\
        --epochs 2 --clip_seconds 1 --learning_rate 0.05
"""

from __future__ import annotations

import argparse

from transformers import AutoProcessor, MusicgenForConditionalGeneration

import musicpeft
from musicpeft.data.dataset import load_audio_folder, make_rendered_dataset
from musicpeft.tiny import tiny_musicgen, tiny_musicgen_processor
from musicpeft.training.collator import init_codebooks_from_audio, precompute_codes
from musicpeft.training.encoding_cache import default_cache_dir
from musicpeft.training.musicgen_trainer import make_musicgen_trainer, token_cross_entropy


def load_base(base: str):
    if base == "tiny":
        return tiny_musicgen(seed=0), tiny_musicgen_processor()
    return MusicgenForConditionalGeneration.from_pretrained(base), AutoProcessor.from_pretrained(base)


def load_data(spec: str, sample_rate: int, seconds: float, n: int):
    """`rendered:<GM program>` renders music21 scores; anything else is an audio folder with metadata.jsonl."""
    if spec.startswith("rendered:"):
        return make_rendered_dataset(n, seconds, sample_rate, program=int(spec.split(":", 1)[1]), seed=0)
    return load_audio_folder(spec, sample_rate=sample_rate, chunk_seconds=seconds)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="tiny", help="MusicGen checkpoint (path or Hub id), or 'tiny'.")
    parser.add_argument("--data", default="rendered:107", help="Audio folder with metadata.jsonl, or rendered:N.")
    parser.add_argument("--output_dir", default="soft-prompt")
    parser.add_argument("--num_virtual_tokens", type=int, default=30)
    parser.add_argument("--epochs", type=float, default=100)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=1e-5)
    parser.add_argument("--clip_seconds", type=float, default=30.0)
    parser.add_argument("--rendered_clips", type=int, default=16)
    parser.add_argument("--patience", type=int, default=3, help="Early-stopping patience (evaluations).")
    parser.add_argument("--encode_cache", default=default_cache_dir(), help="EnCodec codes cache folder, or 'none'.")
    args = parser.parse_args(argv)

    model, processor = load_base(args.base)
    data = load_data(args.data, model.config.audio_encoder.sampling_rate, args.clip_seconds, args.rendered_clips)
    split = data.train_test_split(test_size=0.25, seed=0)
    if args.base == "tiny":  # a config-built EnCodec maps every frame to code 0 until its codebooks are seeded
        init_codebooks_from_audio(model, split["train"]["audio"])
    # EnCodec once per clip, cached on disk by clip and codec: no epoch encodes again
    cache = None if args.encode_cache == "none" else args.encode_cache
    split = {name: precompute_codes(part, model, cache_dir=cache) for name, part in split.items()}
    before = token_cross_entropy(model, processor, split["test"])
    peft_model = musicpeft.add_adapter(
        model, musicpeft.SoftMusicPromptConfig(num_virtual_tokens=args.num_virtual_tokens)
    )
    peft_model.print_trainable_parameters()
    trainer = make_musicgen_trainer(
        peft_model,
        processor,
        split["train"],
        eval_dataset=split["test"],
        early_stopping_patience=args.patience,
        output_dir=args.output_dir + "-checkpoints",
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        report_to=[],
    )
    trainer.train()
    after = token_cross_entropy(peft_model, processor, split["test"])
    musicpeft.save_adapter(peft_model, args.output_dir)
    print(
        f"held-out cross-entropy {before['cross_entropy']:.4f} -> {after['cross_entropy']:.4f}; "
        f"adapter saved to {args.output_dir}"
    )
    return {"before": before, "after": after, "output_dir": args.output_dir}


if __name__ == "__main__":
    main()
