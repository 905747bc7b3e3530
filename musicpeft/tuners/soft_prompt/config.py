"""Configuration of the soft music prompt (prompt tuning on the text encoder of a text-to-music model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from peft.config import PeftConfig

from ...registration import add_peft_type

SOFT_MUSIC_PROMPT = add_peft_type("SOFT_MUSIC_PROMPT")

INIT_CHOICES = ("random", "text", "vocab")
POSITION_CHOICES = ("encoder_input", "encoder_output")


@dataclass
class SoftMusicPromptConfig(PeftConfig):
    """N learnable prompt embeddings that condition a text-to-music model; every base weight stays frozen.

    Args:
        num_virtual_tokens: Number of learnable prompt vectors (paper: 30).
        init: `random` (normal noise at the scale of the encoder's token embeddings, as in the paper),
            `text` (embeddings of `init_text`, repeated or cut to N tokens) or `vocab` (N embedding rows
            sampled from the vocabulary).
        init_text: Text whose token embeddings initialise the prompt when `init="text"`.
        tokenizer_name_or_path: Tokenizer used to tokenize `init_text` (local folder or Hub id).
        init_seed: Seed for `random` and `vocab` initialisation.
        position: `encoder_input` (prepended to the text encoder's input, the paper's method) or
            `encoder_output` (appended after the encoder's output: no backward pass through the encoder).
        text_encoder: Which text encoder of the family takes the prompt (e.g. `t5`); `None` = the family's
            default.
        target_modules: Set automatically from the model family; only set it to adapt a custom model.
        base_family: Family of the base model the prompt was made for (filled in when attached).
        token_dim: Width of the text encoder the prompt feeds (filled in when attached).
    """

    num_virtual_tokens: int = field(default=30, metadata={"help": "Number of learnable prompt vectors (paper: 30)."})
    init: Literal["random", "text", "vocab"] = field(
        default="random",
        metadata={"help": "Prompt initialisation: 'random' (paper), 'text' (from init_text) or 'vocab' (samples)."},
    )
    init_text: str | None = field(
        default=None, metadata={"help": "Text whose token embeddings initialise the prompt when init='text'."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer (local folder or Hub id) used to tokenize init_text."}
    )
    init_seed: int = field(default=0, metadata={"help": "Seed of the 'random' and 'vocab' initialisations."})
    position: Literal["encoder_input", "encoder_output"] = field(
        default="encoder_input",
        metadata={
            "help": "'encoder_input': prepend to the text-encoder input (paper); 'encoder_output': append "
            "after the encoder output."
        },
    )
    text_encoder: str | None = field(
        default=None, metadata={"help": "Name of the family's text encoder that takes the prompt; None = default."}
    )
    target_modules: str | list[str] | None = field(
        default=None, metadata={"help": "Module(s) wrapped by the prompt; set automatically from the model family."}
    )
    exclude_modules: str | list[str] | None = field(
        default=None, metadata={"help": "Modules never wrapped (peft's usual option; rarely needed here)."}
    )
    target_parameters: list[str] | None = field(
        default=None, metadata={"help": "Unused by soft prompts; present because peft's target matching reads it."}
    )
    base_family: str | None = field(
        default=None, metadata={"help": "Model family the prompt was trained for; filled in when attached."}
    )
    token_dim: int | None = field(
        default=None, metadata={"help": "Width of the text encoder the prompt feeds; filled in when attached."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = SOFT_MUSIC_PROMPT
        if not isinstance(self.num_virtual_tokens, int) or self.num_virtual_tokens <= 0:
            raise ValueError(f"num_virtual_tokens must be a positive integer, got {self.num_virtual_tokens!r}.")
        if self.init not in INIT_CHOICES:
            raise ValueError(f"init must be one of {INIT_CHOICES}, got {self.init!r}.")
        if self.position not in POSITION_CHOICES:
            raise ValueError(f"position must be one of {POSITION_CHOICES}, got {self.position!r}.")
        if self.init == "text" and not (self.init_text and self.tokenizer_name_or_path):
            raise ValueError("init='text' needs both init_text and tokenizer_name_or_path.")
        if self.token_dim is not None and self.token_dim <= 0:
            raise ValueError(f"token_dim must be positive, got {self.token_dim!r}.")
