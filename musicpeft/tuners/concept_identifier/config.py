"""Configuration of concept identifier tokens: learned embeddings that stand for `<name>` in a prompt."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from peft.config import PeftConfig

from ...adapters.files import LOAD_HINT
from ...registration import add_peft_type

CONCEPT_IDENTIFIER = add_peft_type("CONCEPT_IDENTIFIER")

# A concept name is what goes between the angle brackets of its placeholder: `<koto>`.
CONCEPT_NAME = re.compile(r"[\w\-]+")


def placeholder(name: str) -> str:
    """The text a user writes in a prompt for concept `name`: `<name>`."""
    return f"<{name}>"


def token_strings(name: str, count: int) -> list[str]:
    """The identifier tokens `<name>` expands to, added to the tokenizer as added tokens: `<name:0>`, ..."""
    return [f"<{name}:{i}>" for i in range(count)]


@dataclass
class ConceptIdentifierConfig(PeftConfig):
    """Learned identifier tokens V* for one or more concepts (textual inversion with several vectors each).

    Each concept gets `tokens_per_concept` embeddings. A placeholder `<name>` in a prompt expands to that
    concept's tokens before tokenization, and the text encoder looks their ids up in the learned table
    instead of its own embedding matrix (which is never resized). Several tokens per concept keep two
    concepts' text-encoder outputs apart (JEN-1 DreamStyler, Section 4.3: one token each ends >99% cosine-similar).

    Args:
        concepts: Concept names, e.g. `["koto", "shamisen"]`; each is written `<koto>` in prompts.
        tokens_per_concept: Identifier tokens per concept (paper: 3).
        init_words: Optional word(s) per concept whose token embeddings (averaged) initialise its tokens,
            e.g. `{"koto": "koto"}`; needs the tokenizer (bind the processor first, or use a pipeline).
            Concepts without one start from noise at the scale of the embedding matrix.
        init_seed: Seed of the noise initialisation (combined with the concept name, so a concept starts
            from the same vectors whatever other concepts share its adapter).
        text_encoders: Names of the family's text encoders that learn the tokens (MusicGen: `t5`;
            AudioLDM2: `t5`, `clap`); `None` = all of them. In the others the placeholder becomes the
            concept's init word, or its name.
        target_modules: Set automatically from the model family; only set it to adapt a custom model.
        base_family: Family of the base model (filled in when attached).
        token_dims: Width of each adapted text encoder (filled in when attached).
        base_fingerprint: Digest of the base weights the adapter was trained on (filled in when attached).
    """

    # On a pipeline the tokens and the attention deltas adapt several components at once (`musicpeft.adapters`).
    musicpeft_pipeline_target: ClassVar[str] = "components"

    concepts: list[str] = field(
        default_factory=list, metadata={"help": "Concept names; concept 'koto' is written '<koto>' in prompts."}
    )
    tokens_per_concept: int = field(default=3, metadata={"help": "Identifier tokens per concept (paper: 3)."})
    init_words: dict[str, str] | None = field(
        default=None, metadata={"help": "Optional word(s) per concept whose embeddings initialise its tokens."}
    )
    init_seed: int = field(default=0, metadata={"help": "Seed of the noise initialisation of concepts without words."})
    text_encoders: list[str] | None = field(
        default=None, metadata={"help": "Family text encoders that learn the tokens; None = all of them."}
    )
    target_modules: str | list[str] | None = field(
        default=None, metadata={"help": "Modules wrapped by the adapter; set automatically from the model family."}
    )
    exclude_modules: str | list[str] | None = field(
        default=None, metadata={"help": "Modules never wrapped (peft's usual option; rarely needed here)."}
    )
    target_parameters: list[str] | None = field(
        default=None, metadata={"help": "Unused; present because peft's target matching reads it."}
    )
    base_family: str | None = field(
        default=None, metadata={"help": "Model family the adapter was trained for; filled in when attached."}
    )
    token_dims: dict[str, int] | None = field(
        default=None, metadata={"help": "Width of each adapted text encoder; filled in when attached."}
    )
    base_fingerprint: str | None = field(
        default=None, metadata={"help": "Digest of the base weights the adapter was made on; filled in when attached."}
    )
    requires: str = field(
        default=f"musicpeft ({LOAD_HINT} before loading with peft)",
        metadata={"help": "Not read by any code: tells whoever opens adapter_config.json what loads this adapter."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = CONCEPT_IDENTIFIER
        self._validate_concepts()

    def _validate_concepts(self) -> None:
        if isinstance(self.concepts, str):
            raise ValueError(f"concepts must be a list of names, got the string {self.concepts!r}.")
        self.concepts = list(self.concepts)
        if not self.concepts:
            raise ValueError("concepts is empty; name at least one concept, e.g. concepts=['koto'].")
        for name in self.concepts:
            if not isinstance(name, str) or not CONCEPT_NAME.fullmatch(name):
                raise ValueError(
                    f"Concept name {name!r} is not usable as a placeholder; use letters, digits, '_' or '-'."
                )
        duplicates = sorted({n for n in self.concepts if self.concepts.count(n) > 1})
        if duplicates:
            raise ValueError(f"Duplicate concept names {duplicates} in concepts={self.concepts}.")
        if not isinstance(self.tokens_per_concept, int) or self.tokens_per_concept <= 0:
            raise ValueError(f"tokens_per_concept must be a positive integer, got {self.tokens_per_concept!r}.")
        unknown = sorted(set(self.init_words or {}) - set(self.concepts))
        if unknown:
            raise ValueError(f"init_words names concepts {unknown} that are not in concepts={self.concepts}.")
        for name, words in (self.init_words or {}).items():
            if not isinstance(words, str) or not words.strip():
                raise ValueError(f"init_words[{name!r}] must be a non-empty string, got {words!r}.")
        if self.text_encoders is not None and not self.text_encoders:
            raise ValueError("text_encoders is an empty list; leave it None to adapt all text encoders.")

    def placeholders(self) -> dict[str, list[str]]:
        """Placeholder -> identifier tokens, e.g. `{'<koto>': ['<koto:0>', '<koto:1>', '<koto:2>']}`."""
        return {placeholder(n): token_strings(n, self.tokens_per_concept) for n in self.concepts}
