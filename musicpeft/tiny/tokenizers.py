"""Tokenizers built in memory from a word list: no Hub, no downloads."""

from __future__ import annotations

# A small word-level vocabulary that covers the prompts used in tests, examples and the demo.
WORDS = (
    "a an the and on of with in for by to from is are this that "
    "jig reel waltz march folk song dance tune melody rhythm beat slow fast cheerful sad calm bright dark "
    "piano violin guitar flute koto shamisen haegeum gayageum drum drums bass strings harp organ voice "
    "korean japanese irish chorale baroque classical jazz rock pop ambient sanjo music piece solo duet trio "
    "lively gentle soft loud happy melancholic upbeat mellow warm played recorded style new old "
    "bach mozart beethoven haydn schumann handel chopin corpus score quartet trumpet cello clarinet"
).split()


def make_t5_tokenizer():
    """A sentencepiece-style T5 tokenizer made from a word list (unigram scores are arbitrary but fixed)."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + w, -float(i + 1)) for i, w in enumerate(WORDS)]
    pieces += [(c, -100.0 - i) for i, c in enumerate("abcdefghijklmnopqrstuvwxyz0123456789.,'-<>_")]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


# Words of the micro-world's captions (musicpeft.tiny.world) missing from WORDS, concept instruments included:
# the trained models' tokenizers know "koto" as one token even though MusicGen never heard one.
WORLD_WORDS = tuple(WORDS) + tuple(
    "choir clarinet sitar kalimba bagpipe banjo shakuhachi medieval renaissance romantic modern moderate "
    "major minor instruments".split()
)


def make_world_t5_tokenizer():
    """The trained tiny MusicGen's T5 tokenizer: :func:`make_t5_tokenizer` over :data:`WORLD_WORDS`."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + w, -float(i + 1)) for i, w in enumerate(dict.fromkeys(WORLD_WORDS))]
    pieces += [(c, -100.0 - i) for i, c in enumerate("abcdefghijklmnopqrstuvwxyz0123456789.,'-<>_")]
    return T5Tokenizer(vocab=pieces, extra_ids=0)
