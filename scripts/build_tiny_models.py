"""Rebuild the tiny trained models shipped in ``musicpeft/tiny/weights`` from scratch (CPU, resumable).

Stages (``--stages``, comma separated, in this order by default):

  data        render the micro-world (musicpeft.tiny.world) into arrays under --work
  classifier  instrument classifier (log-mel/MFCC statistics + logistic regression)     ~8 min
  codec       tiny EnCodec (--codec-minutes + --codec-phase2-minutes, resumable)        18 + 10 min
              (+ --codec-decoder-minutes: decoder alone, codes unchanged; off in v1)
  gate        codec gate: classifier accuracy on held-out originals vs round trips, chroma correlation
  musicgen    tiny MusicGen on the codec's codes of base-instrument captions              --musicgen-minutes
  clap        tiny CLAP, contrastive, all instruments incl. codec round trips             --clap-minutes
  cards       write README.md model cards from the measured metrics.json files

Every training stage stops at its time budget and checkpoints every two minutes to --work; run the
same command again to resume. Metrics go to ``<out>/<model>/metrics.json`` and the model cards.
Run from the repository root:  python scripts/build_tiny_models.py --stages data,classifier,codec,gate
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from musicpeft.io import atomic_write_text  # noqa: E402
from musicpeft.tiny.recipes import data as world_data  # noqa: E402
from musicpeft.tiny.world import ALL_INSTRUMENTS, BASE_INSTRUMENTS, CONCEPT_INSTRUMENTS  # noqa: E402

STAGES = ("data", "classifier", "codec", "gate", "musicgen", "clap", "cards")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_metrics(out: Path, model: str, metrics: dict) -> None:
    path = out / model / "metrics.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    old.update(metrics)
    atomic_write_text(path, json.dumps(old, indent=2, sort_keys=True))


def stage_data(args) -> None:
    t = time.time()
    world_data.build_world_arrays(args.work / "data", log=log)
    log(f"data ready in {time.time() - t:.0f}s")


def _subsample(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n)[: min(n, k)])


def stage_classifier(args) -> None:
    from musicpeft.tiny.classifier import clip_features, fit_classifier

    t = time.time()
    rng = np.random.default_rng(0)
    feats, labels = [], []
    for name in ALL_INSTRUMENTS:
        audio, _, _ = world_data.load_world(args.work / "data", [name], "train")
        for i in _subsample(len(audio), args.classifier_clips, seed=1):
            feats.append(clip_features(audio[i], world_data.SAMPLING_RATE))
            length = int(rng.uniform(1.0, 3.0) * world_data.SAMPLING_RATE)  # length robustness
            start = rng.integers(0, audio.shape[1] - length + 1)
            feats.append(clip_features(audio[i, start: start + length], world_data.SAMPLING_RATE))
            labels += [name, name]
    clf = fit_classifier(np.stack(feats), labels, list(ALL_INSTRUMENTS))
    clf.save(args.out / "instrument_classifier")
    held = {}
    for name in ALL_INSTRUMENTS:
        audio, _, _ = world_data.load_world(args.work / "data", [name], "heldout")
        idx = _subsample(len(audio), args.eval_clips, seed=2)
        pred = clf.predict([audio[i] for i in idx], world_data.SAMPLING_RATE)
        held[name] = float(np.mean([p == name for p in pred]))
    metrics = {"classifier_train_rows": len(labels), "classifier_heldout_accuracy": held,
               "classifier_heldout_accuracy_mean": float(np.mean(list(held.values()))),
               "classifier_wall_s": round(time.time() - t, 1)}
    write_metrics(args.out, "instrument_classifier", metrics)
    log(f"classifier: held-out accuracy {metrics['classifier_heldout_accuracy_mean']:.3f} {held}")


def stage_codec(args) -> None:
    from musicpeft.tiny.recipes.codec import train_codec

    audio, _, _ = world_data.load_world(args.work / "data", list(BASE_INSTRUMENTS), "train")
    log(f"codec: {len(audio)} base-instrument train clips")
    model, info = train_codec(args.work, audio, args.codec_minutes, log=log)
    metrics = {"codec_steps": info["step"], "codec_wall_s": round(info["elapsed_s"], 1),
               "codec_final_losses": info.get("losses"), "codec_parameters": sum(p.numel() for p in model.parameters())}
    log(f"codec phase 1: {info['step']} steps, {info['elapsed_s']:.0f}s")
    later = ((2, "codec_phase2", args.codec_phase2_minutes, args.codec_phase2_lr, ""),
             (3, "codec_decoder", args.codec_decoder_minutes, args.codec_decoder_lr, " (decoder only)"))
    for phase, key, minutes, lr, what in later:
        if minutes > 0:
            model, info = train_codec(args.work, audio, minutes, lr=lr, log=log, phase=phase)
            metrics.update({f"{key}_steps": info["step"], f"{key}_wall_s": round(info["elapsed_s"], 1),
                            f"{key}_final_losses": info.get("losses"), f"{key}_lr": lr})
            log(f"codec phase {phase}{what}: {info['step']} steps, {info['elapsed_s']:.0f}s")
    model.save_pretrained(args.out / "codec")
    write_metrics(args.out, "codec", metrics)


def chroma_correlation(a: np.ndarray, b: np.ndarray, sr: int) -> float:
    """Pearson correlation of the two clips' chromagrams (12 x frames, flattened)."""
    import librosa

    ca = librosa.feature.chroma_stft(y=a, sr=sr, n_fft=2048, hop_length=512)
    cb = librosa.feature.chroma_stft(y=b, sr=sr, n_fft=2048, hop_length=512)
    n = min(ca.shape[1], cb.shape[1])
    return float(np.corrcoef(ca[:, :n].ravel(), cb[:, :n].ravel())[0, 1])


def stage_gate(args) -> None:
    from transformers import EncodecModel

    from musicpeft.tiny.classifier import InstrumentClassifier
    from musicpeft.tiny.recipes.codec import round_trip

    t = time.time()
    clf = InstrumentClassifier.load(args.out / "instrument_classifier")
    codec = EncodecModel.from_pretrained(args.out / "codec").eval()
    sr = world_data.SAMPLING_RATE
    result: dict = {}
    for group, names in (("base", BASE_INSTRUMENTS), ("concept", CONCEPT_INSTRUMENTS)):
        orig_ok, rt_ok, chroma, chroma_shuffled = [], [], [], []
        per: dict = {}
        for name in names:
            audio, _, _ = world_data.load_world(args.work / "data", [name], "heldout")
            clips = [audio[i] for i in _subsample(len(audio), args.gate_clips, seed=3)]
            trips = round_trip(codec, clips)
            po, pr = clf.predict(clips, sr), clf.predict(trips, sr)
            o = [p == name for p in po]
            r = [p == name for p in pr]
            orig_ok += o
            rt_ok += r
            c = [chroma_correlation(a, b, sr) for a, b in zip(clips, trips, strict=True)]
            chroma += c
            # reference: chroma correlation of a clip with another clip's round trip (what "no pitch kept" gives)
            chroma_shuffled += [chroma_correlation(a, b, sr) for a, b in zip(clips, trips[1:] + trips[:1], strict=True)]
            per[name] = {"original": float(np.mean(o)), "round_trip": float(np.mean(r)), "chroma": float(np.mean(c))}
        result[group] = {"classifier_accuracy_original": float(np.mean(orig_ok)),
                         "classifier_accuracy_round_trip": float(np.mean(rt_ok)),
                         "chroma_correlation": float(np.mean(chroma)),
                         "chroma_correlation_mismatched_pairs": float(np.mean(chroma_shuffled)),
                         "clips": len(orig_ok), "per_instrument": per}
        log(f"gate {group}: accuracy original {np.mean(orig_ok):.3f} round trip {np.mean(rt_ok):.3f} "
            f"chroma {np.mean(chroma):.3f} (mismatched {np.mean(chroma_shuffled):.3f})")
    write_metrics(args.out, "codec", {"gate": result, "gate_wall_s": round(time.time() - t, 1)})


def _load_codec(args):
    from transformers import EncodecModel

    return EncodecModel.from_pretrained(args.out / "codec").eval()


def _codes(args, codec, audio: np.ndarray, tag: str) -> np.ndarray:
    """Codes of ``audio`` under the exported codec, cached in --work by the codec file's hash."""
    import hashlib

    from musicpeft.tiny.recipes.musicgen import encode_clips

    digest = hashlib.sha1((args.out / "codec" / "model.safetensors").read_bytes()).hexdigest()[:12]
    path = args.work / f"codes_{tag}_{digest}_{len(audio)}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    t = time.time()
    codes = encode_clips(codec, audio)
    np.save(path, codes, allow_pickle=False)
    log(f"codes {tag}: {codes.shape} in {time.time() - t:.0f}s")
    return codes


def _pick(args, names, split: str, per: int, seed: int):
    """(audio, metas, names) with at most ``per`` clips per instrument."""
    audios, metas, labels = [], [], []
    for name in names:
        audio, meta, _ = world_data.load_world(args.work / "data", [name], split)
        idx = _subsample(len(audio), per, seed)
        audios.append(audio[idx])
        metas += [meta[i] for i in idx]
        labels += [name] * len(idx)
    return np.concatenate(audios), metas, labels


def stage_musicgen(args) -> None:
    from musicpeft.tiny.recipes.musicgen import musicgen_processor, new_musicgen, token_ce, train_musicgen
    from musicpeft.tiny.world import caption_for

    codec = _load_codec(args)
    audio, metas, _ = _pick(args, BASE_INSTRUMENTS, "train", args.musicgen_clips, seed=4)
    codes = _codes(args, codec, audio, "train")
    model, info = train_musicgen(args.work, codec, codes, [m["text"] for m in metas], args.musicgen_minutes, log=log)
    processor = musicgen_processor()
    model.save_pretrained(args.out / "musicgen")
    processor.save_pretrained(args.out / "musicgen")
    tok = processor.tokenizer
    t = time.time()
    random_model = new_musicgen(codec, seed=1).eval()
    metrics: dict = {"musicgen_steps": info["step"], "musicgen_wall_s": round(info["elapsed_s"], 1),
                     "musicgen_train_loss": info.get("train_loss"), "musicgen_train_clips": len(codes),
                     "musicgen_parameters": sum(p.numel() for p in model.parameters())}
    for group, names in (("base", BASE_INSTRUMENTS), ("concept", CONCEPT_INSTRUMENTS)):
        held, hmeta, hnames = _pick(args, names, "heldout", args.ce_clips, seed=5)
        hcodes = _codes(args, codec, held, f"heldout_{group}")
        texts = [m["text"] for m in hmeta]
        metrics[f"heldout_ce_{group}"] = token_ce(model, tok, hcodes, texts)
        # the same captions naming another base instrument: how much the instrument word tells the model
        base = list(BASE_INSTRUMENTS)
        wrong = [caption_for(base[(base.index(n) + 3) % len(base)] if n in base else base[i % len(base)],
                             **{k: m[k] for k in ("tempo", "era", "mode")})
                 for i, (n, m) in enumerate(zip(hnames, hmeta, strict=True))]
        metrics[f"heldout_ce_{group}_wrong_instrument"] = token_ce(model, tok, hcodes, wrong)
        metrics[f"heldout_ce_{group}_random_init"] = token_ce(random_model, tok, hcodes, texts)
        metrics[f"heldout_ce_{group}_empty_text"] = token_ce(model, tok, hcodes, [""] * len(texts))
        metrics[f"heldout_ce_{group}_clips"] = len(hcodes)
    metrics["musicgen_eval_wall_s"] = round(time.time() - t, 1)
    write_metrics(args.out, "musicgen", metrics)
    log("musicgen: " + json.dumps({k: v for k, v in metrics.items() if "ce" in k}))


def stage_clap(args) -> None:
    from musicpeft.tiny.recipes.clap import clap_processor, mel_features, retrieval, train_clap
    from musicpeft.tiny.recipes.codec import round_trip

    codec = _load_codec(args)
    processor = clap_processor()
    t = time.time()
    audio, metas, names = _pick(args, ALL_INSTRUMENTS, "train", args.clap_clips, seed=6)
    feats = [mel_features(processor, audio)]
    rt_audio, rt_metas, rt_names = _pick(args, ALL_INSTRUMENTS, "train", args.clap_round_trips, seed=7)
    feats.append(mel_features(processor, np.stack(round_trip(codec, list(rt_audio)))))
    feats = np.concatenate(feats)
    log(f"clap: {len(feats)} feature rows ({len(rt_audio)} codec round trips) in {time.time() - t:.0f}s")
    model, info = train_clap(args.work, feats, metas + rt_metas, names + rt_names, args.clap_minutes, log=log)
    model.save_pretrained(args.out / "clap")
    processor.save_pretrained(args.out / "clap")
    held, _, held_names = _pick(args, ALL_INSTRUMENTS, "heldout", args.ce_clips, seed=8)
    instruments = list(ALL_INSTRUMENTS)
    metrics = {"clap_steps": info["step"], "clap_wall_s": round(info["elapsed_s"], 1),
               "clap_train_loss": info.get("train_loss"), "clap_train_rows": len(feats),
               "clap_parameters": sum(p.numel() for p in model.parameters()),
               "heldout_originals": retrieval(model, processor, mel_features(processor, held), held_names, instruments),
               "heldout_round_trips": retrieval(model, processor,
                                                mel_features(processor, np.stack(round_trip(codec, list(held)))),
                                                held_names, instruments)}
    write_metrics(args.out, "clap", metrics)
    for key in ("heldout_originals", "heldout_round_trips"):
        r = metrics[key]
        log(f"clap {key}: audio->text {r['audio_to_text_accuracy_mean']:.3f} "
            f"text->audio P@{r['k']} {r['text_to_audio_p_at_k_mean']:.3f}")


SOUNDFONT_NOTE = """Audio was rendered from music21 corpus scores (public-domain music; music21 is BSD-3) with
`TimGM6mb.sf2`, the General MIDI soundfont that ships inside pretty_midi (repaired for symusic's synthesizer,
see `musicpeft/data/soundfont.py`). pretty_midi's LICENSE.txt (MIT) covers its code and says nothing about the
soundfont, whose INFO chunk carries no copyright field. Debian's `timgm6mb-soundfont` package (1.3-5) states:
"Copyright: 2004 Tim Brechbill, 2010 David Bolton; License: GPL-2", with the author's note that he made some
samples himself and that "all others are either public domain or fall under the terms of the GNU General
Public License". No audio is shipped here, only weights trained on it; whether such weights are a derivative
work of the soundfont is not settled, so treat them as GPL-2-encumbered if that matters to you."""

CARD_INTRO = {
    "codec": "Tiny EnCodec (transformers `EncodecModel`): 16 kHz mono, hop 320 (50 frames/s), 4 codebooks of 512, "
             "trained in two phases (1: multi-resolution STFT log-magnitude + spectral convergence + log-mel + "
             "waveform L1 losses; 2: log-magnitude and log-mel losses only), a commitment loss and EMA (k-means) "
             "codebooks with straight-through quantisation; no adversarial loss. "
             "Load: `musicpeft.tiny.load_trained_codec()`.",
    "musicgen": "Tiny MusicGen (transformers `MusicgenForConditionalGeneration`): 2-layer T5 text encoder over a "
                "word-level vocabulary (concept words such as *koto* included, never trained on), 4-layer decoder "
                "over the tiny codec's 4 codebooks (delay pattern), trained with teacher forcing on base-instrument "
                "captions only, captions dropped 10 % of the time (classifier-free guidance). "
                "Load: `musicpeft.tiny.load_trained_musicgen()`.",
    "clap": "Tiny CLAP (transformers `ClapModel`): 2-layer RoBERTa text tower, 3-stage Swin audio tower on 64-bin "
            "log-mels of 4 s at 16 kHz, trained contrastively on all world instruments (concepts included, train "
            "pieces only) plus codec round trips as augmentation. Load: `musicpeft.tiny.load_trained_clap()`.",
    "instrument_classifier": "Instrument classifier: standardised log-mel/MFCC statistics (212 numbers per clip) "
                             "+ multinomial logistic regression, trained on original (not codec) train clips of "
                             "every world instrument. Load: `musicpeft.tiny.load_instrument_classifier()`.",
}


def _gate_sentence(metrics: dict) -> str:
    """The codec gate's verdict in words: passed when round trips keep >= 80 % of the originals' accuracy."""
    gate = metrics.get("gate")
    if not gate:
        return ""
    parts = []
    for group, g in gate.items():
        o, r = g["classifier_accuracy_original"], g["classifier_accuracy_round_trip"]
        verdict = "passed" if r >= 0.8 * o else "NOT passed"
        parts.append(f"{group} instruments ({g['clips']} clips): classifier accuracy {o:.3f} on held-out "
                     f"originals vs {r:.3f} on their "
                     f"round trips ({verdict}), chroma correlation {g['chroma_correlation']:.3f} "
                     f"(mismatched pairs {g['chroma_correlation_mismatched_pairs']:.3f})")
    return "\n\n**Gate** (held-out pieces): " + "; ".join(parts) + "."


def stage_cards(args) -> None:
    from musicpeft.tiny.world import split_pieces

    split = split_pieces()
    data = (f"Data: the micro-world of `musicpeft.tiny.world`: {len(split['train'])} train and "
            f"{len(split['heldout'])} held-out music21 corpus pieces (split by piece, stratified by era), "
            f"4 s windows at 16 kHz. Base instruments (codec and MusicGen train on these only): "
            f"{', '.join(f'{k} ({v})' for k, v in BASE_INSTRUMENTS.items())}. Concept instruments (never heard by "
            f"the codec or MusicGen): {', '.join(f'{k} ({v})' for k, v in CONCEPT_INSTRUMENTS.items())}. "
            "Captions: \"a <tempo> <era> piece in <mode> on <instrument>\" from metadata.")
    for model, intro in CARD_INTRO.items():
        path = args.out / model / "metrics.json"
        if not path.is_file():
            continue
        metrics = json.loads(path.read_text())
        intro = intro + _gate_sentence(metrics)
        text = (f"# musicpeft tiny {model} ({args.version})\n\n{intro}\n\n"
                f"Version: **{args.version}**. {args.version_note}\n\n## Data\n\n{data}\n\n"
                f"## Soundfont licence\n\n{SOUNDFONT_NOTE}\n\n"
                f"## Measured (by `scripts/build_tiny_models.py`, CPU, {args.threads} torch thread(s))\n\n"
                f"```json\n{json.dumps(metrics, indent=2, sort_keys=True)}\n```\n\n"
                "Rebuild: see `docs/tiny_models.md`. These are toy models for testing PEFT methods offline, "
                "not music generators of any quality.\n")
        atomic_write_text(args.out / model / "README.md", text)
        log(f"cards: {model}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "tiny_models", help="checkpoints and data")
    parser.add_argument("--out", type=Path, default=ROOT / "musicpeft" / "tiny" / "weights")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is fastest on a shared 2-core machine: OpenMP spin-waits)")
    parser.add_argument("--codec-minutes", type=float, default=18.0)
    parser.add_argument("--codec-phase2-minutes", type=float, default=10.0,
                        help="then fine-tune with log-spectral losses only (see musicpeft/tiny/recipes/codec.py)")
    parser.add_argument("--codec-phase2-lr", type=float, default=1e-3)
    parser.add_argument("--codec-decoder-minutes", type=float, default=0.0,
                        help="phase 3: train the decoder alone (codes, and MusicGen trained on them, stay valid); "
                             "not part of the shipped v1 recipe")
    parser.add_argument("--codec-decoder-lr", type=float, default=1e-3)
    parser.add_argument("--musicgen-minutes", type=float, default=14.0)
    parser.add_argument("--clap-minutes", type=float, default=10.0)
    parser.add_argument("--classifier-clips", type=int, default=200, help="train clips per instrument")
    parser.add_argument("--eval-clips", type=int, default=40, help="held-out clips per instrument")
    parser.add_argument("--gate-clips", type=int, default=16, help="held-out clips per instrument for the gate")
    parser.add_argument("--musicgen-clips", type=int, default=180, help="train clips per base instrument")
    parser.add_argument("--ce-clips", type=int, default=20, help="held-out clips per instrument for CE/retrieval")
    parser.add_argument("--clap-clips", type=int, default=250, help="train clips per instrument")
    parser.add_argument("--clap-round-trips", type=int, default=40, help="codec round trips per instrument")
    parser.add_argument("--version", default="v1", help="written into the model cards")
    parser.add_argument("--version-note", default="", help="one line for the model cards (e.g. how long it trained)")
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from {STAGES}")
    torch.set_num_threads(args.threads)
    torch.backends.mkldnn.enabled = False  # measured: the oneDNN LSTM/conv paths are slower on this CPU
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log(f"build_tiny_models {args.version}: stages {stages}, torch {torch.__version__}, {platform.processor()}")
    for stage in STAGES:
        if stage in stages:
            t = time.time()
            globals()[f"stage_{stage}"](args)
            log(f"stage {stage} done in {time.time() - t:.0f}s")


if __name__ == "__main__":
    main()
