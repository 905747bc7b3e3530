"""Configuration of the soft music prompt (prompt tuning on the text encoder of a text-to-music model)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from huggingface_hub import try_to_load_from_cache
from peft.config import PeftConfig

from ...adapters.files import LOAD_HINT, SAFETENSORS_NAME, read_safetensors_header
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

    # On a pipeline the prompt adapts one text encoder, named by `text_encoder` (`musicpeft.adapters`).
    musicpeft_pipeline_target: ClassVar[str] = "text_encoder"

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
    requires: str = field(
        default=f"musicpeft ({LOAD_HINT} before loading with peft)",
        metadata={"help": "Not read by any code: tells whoever opens adapter_config.json what loads this adapter."},
    )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, subfolder: str | None = None, **kwargs: Any):
        """peft's loader, plus the weights file's header: the tuner checks the config against it before allocating.

        A config that claims `num_virtual_tokens=10**9` would otherwise allocate that prompt before peft
        reads the (small) weights file and finds that it does not fit.
        """
        config = super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
        folder = os.path.join(pretrained_model_name_or_path, subfolder) if subfolder else pretrained_model_name_or_path
        path = os.path.join(folder, SAFETENSORS_NAME)
        if not os.path.isfile(path):
            path = _cached_weights(pretrained_model_name_or_path, subfolder, kwargs)
        if path is not None:
            config.bind_weights_header(path, read_safetensors_header(path))
        return config

    def bind_weights_header(self, path: str, header: dict[str, tuple[str, tuple[int, ...]]]) -> None:
        """Remember the weights file this config came with (consumed by the tuner when it attaches)."""
        self._weights_header = (path, header)

    def take_weights_header(self) -> tuple[str, dict] | None:
        """The bound weights header, once: a config reused for a new adapter is not checked against an old file."""
        bound = self.__dict__.pop("_weights_header", None)
        return bound

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


def _cached_weights(repo_id: str, subfolder: str | None, kwargs: dict[str, Any]) -> str | None:
    """The weights file of a Hub adapter if it is already in the local cache (nothing is downloaded here)."""
    filename = f"{subfolder}/{SAFETENSORS_NAME}" if subfolder else SAFETENSORS_NAME
    try:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=kwargs.get("cache_dir"),
                                       revision=kwargs.get("revision"))
    except Exception:
        return None
    return found if isinstance(found, str) else None
