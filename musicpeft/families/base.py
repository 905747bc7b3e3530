"""What musicpeft knows about a base-model family, as one typed object: its facts and its behaviour.

Each supported family (MusicGen, AudioLDM2, MusicGen-Melody, stereo MusicGen) is one file of this package
holding one `ModelFamily` (a subclass when it behaves differently). Everything else in musicpeft asks the
family object instead of comparing family names: where the text encoders are and which mask keyword they
take, which modules a LoRA preset or a pivotal adapter targets, how to tell a checkpoint of the family
from its files, how to load it, generate clips with it, what guidance and training defaults it uses, and
how a model card loads it. Adding a base model means writing one such file and listing it in
`families/__init__.py`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

# What training minimises: token cross-entropy over codec codes (MusicGen's Trainer), or the denoising
# loss of a latent diffusion model (AudioLDM2's accelerate loop).
LossKind = Literal["codec_tokens", "latent_diffusion"]
LOSS_CODEC_TOKENS: LossKind = "codec_tokens"
LOSS_LATENT_DIFFUSION: LossKind = "latent_diffusion"


@dataclass(frozen=True)
class TextEncoderSlot:
    """A text encoder that can take a soft prompt or identifier tokens.

    `module` is the attribute path of the encoder inside the adapted object (the model for MusicGen, the
    pipeline for AudioLDM2). The encoder must accept `input_ids`, its token mask (`mask_kwarg`) and
    `inputs_embeds`, and expose `get_input_embeddings()`.
    """

    name: str
    module: str
    tokenizer: str | None = None
    takes_soft_prompt_by_default: bool = True
    # Where soft-prompt vectors enter the token sequence: 0 prepends; 1 keeps a pooled first token first.
    prompt_insert_at: int = 0
    # When `module` is a pipeline component itself (T5EncoderModel): the submodule inside it that a
    # soft-prompt layer wraps, since peft cannot wrap a model's root module.
    component_inner_module: str | None = None
    # The keyword the encoder's forward takes its token mask by.
    mask_kwarg: str = "attention_mask"

    @property
    def component(self) -> str:
        """The pipeline attribute holding this encoder (`text_encoder` for `text_encoder.text_model`)."""
        return self.module.split(".", 1)[0]

    @property
    def path_in_component(self) -> str | None:
        """Where the encoder sits inside its component (`text_model`), else `component_inner_module`."""
        return self.module.split(".", 1)[1] if "." in self.module else self.component_inner_module


@dataclass(frozen=True)
class CrossAttentionStream:
    """One conditioning stream of a denoiser: the keyword it is passed by, where it comes from, its mask."""

    kwarg: str
    source: str
    mask_kwarg: str | None
    # Full-match regex of the attention modules that read this stream (relative to the adapted component).
    regex: str


@dataclass(frozen=True)
class TrainingDefaults:
    """The papers' training recipe for a family, used wherever a caller leaves a value unset."""

    loss: LossKind
    clip_seconds: float
    learning_rate: float
    batch_size: int
    epochs: int
    # Whether a run can continue from a checkpoint's optimizer state (`musicpeft train --resume`).
    resumable: bool


@dataclass(frozen=True)
class CardSnippet:
    """How a model card's code builds the base: the import, the variable name, the loader (`{base}`: its id)."""

    import_line: str
    variable: str
    loader: str

    def load_line(self, base: str) -> str:
        return f"{self.variable} = {self.loader.format(base=base)}"


@dataclass(frozen=True)
class SourceIndex:
    """What a base's files say about it, read without loading weights (see `families.read_source_index`).

    `model_index` is a diffusers pipeline's `model_index.json`, `config` a transformers `config.json`;
    either is None when the source does not have it. `reachable` is False when neither could be read
    (offline and not cached): then only the source's name is known, and `reason` says why.
    """

    name: str
    model_index: Mapping[str, Any] | None = None
    config: Mapping[str, Any] | None = None
    reachable: bool = True
    reason: str | None = None


@dataclass
class LoadedBase:
    """A base model or pipeline loaded once, with the family that describes it.

    `family` is the family's name (what manifests, summaries and results record); `model_family` the
    family object, which generates with it, fingerprints it and says how adapters load onto it.
    """

    model_family: ModelFamily
    model: Any
    processor: Any
    sampling_rate: int
    source: str

    @property
    def family(self) -> str:
        return self.model_family.name


def unwrap_peft(obj: Any) -> Any:
    """The base model inside peft wrappers (PeftModel, BaseTuner), or `obj` itself."""
    while hasattr(obj, "get_base_model") and obj is not obj.get_base_model():
        obj = obj.get_base_model()
    return obj


@dataclass(frozen=True)
class ModelFamily:
    """One base-model family: where it keeps things (fields) and how it is driven (methods).

    Subclasses override the behaviour (`load`, `generate_clips`, ...); the fields are plain facts. The
    regexes full-match module names relative to the adapted module: the model itself, or the pipeline's
    `adapted_component` (AudioLDM2's U-Net).
    """

    name: str
    # Class names of the objects the family adapts (model or pipeline classes).
    class_names: tuple[str, ...]
    # `config.model_type` values of the adapted model, when it is a transformers model.
    model_types: tuple[str, ...] = ()
    text_encoders: tuple[TextEncoderSlot, ...] = ()
    # Regexes of the attention projections the concept tuners adapt.
    self_attention_value: str = ""
    # What maps the text into the generator's attention: cross-attention K/V (MusicGen, AudioLDM2), or the
    # projection of the prepended text states (MusicGen-Melody's `enc_to_dec_proj`).
    cross_attention_key_value: str = ""
    # Named LoRA target sets: preset name -> regex of module names, and what each one adapts.
    lora_presets: Mapping[str, str] = field(default_factory=dict)
    lora_preset_descriptions: Mapping[str, str] = field(default_factory=dict)
    # The module trained by full fine-tuning (decoder / U-Net), relative to the adapted object.
    full_finetune_module: str = ""
    # For a pipeline: the component the non-prompt methods adapt, and its class names.
    adapted_component: str | None = None
    adapted_component_classes: tuple[str, ...] = ()
    # The keyword of the adapted model's forward that carries the text mask downstream.
    mask_kwarg: str = "attention_mask"
    # The text-encoder slot whose *tokenizer's* mask the pipeline passes on (it must grow with a soft prompt).
    masked_text_encoder: str | None = None
    # Methods of the adapted model that get the text mask in `model_kwargs` during `generate` and apply it to
    # the text encoder's output themselves (MusicGen-Melody): a soft prompt must grow the mask there too.
    generation_mask_methods: tuple[str, ...] = ()
    # The denoiser's conditioning streams by name (AudioLDM2: "generated", "t5").
    cross_attention_streams: Mapping[str, CrossAttentionStream] = field(default_factory=dict)
    # A narrower family of the same classes (stereo MusicGen of MusicGen): preferred when both match.
    variant_of: str | None = None
    # Names that load the embedded tiny models of this family (`load_base("tiny-musicgen", ...)`).
    tiny_sources: tuple[str, ...] = ()
    # Substrings of a Hub id that name this family, used only when its files cannot be read (offline).
    name_hints: tuple[str, ...] = ()
    guidance_scale: float = 3.0
    training: TrainingDefaults | None = None
    card: CardSnippet | None = None

    # ---------------------------------------------------------------------------------------- matching
    @property
    def is_pipeline(self) -> bool:
        """Whether the family adapts a diffusers pipeline (components adapted one by one) or one model."""
        return self.adapted_component is not None

    def matches(self, obj: Any) -> bool:
        """Whether `obj` (an unwrapped model or pipeline) belongs to this family."""
        names = {cls.__name__ for cls in type(obj).__mro__}
        if names & set(self.class_names):
            return True
        model_type = getattr(getattr(obj, "config", None), "model_type", None)
        return model_type is not None and model_type in self.model_types

    def matches_component(self, obj: Any) -> bool:
        """Whether `obj` is this family's adapted pipeline component (AudioLDM2's U-Net) given on its own."""
        names = {cls.__name__ for cls in type(obj).__mro__}
        return bool(names & set(self.adapted_component_classes))

    def matches_source(self, index: SourceIndex) -> bool:
        """Whether a base's files (or, offline, its name) are this family's; see `SourceIndex`."""
        if index.name in self.tiny_sources:
            return True
        if index.model_index is not None:
            return index.model_index.get("_class_name") in self.class_names
        if index.config is not None:
            return index.config.get("model_type") in self.model_types or any(
                a in self.class_names for a in index.config.get("architectures") or ()
            )
        return not index.reachable and any(hint in index.name.lower() for hint in self.name_hints)

    # -------------------------------------------------------------------------------------- structure
    def text_encoder(self, name: str | None = None) -> TextEncoderSlot:
        if name is None:
            return self.text_encoders[0]
        for slot in self.text_encoders:
            if slot.name == name:
                return slot
        known = ", ".join(s.name for s in self.text_encoders)
        raise ValueError(f"{self.name} has no text encoder named {name!r}; it has: {known}.")

    def module_names(self, root: nn.Module, pattern: str) -> list[str]:
        """Names of `root`'s submodules whose full name matches `pattern`."""
        regex = re.compile(pattern)
        return [name for name, _ in root.named_modules() if name and regex.fullmatch(name)]

    def check_layout(self, module: nn.Module) -> None:
        """Raise if `module`'s layout differs from what the family's regexes assume (default: nothing to check)."""

    def prepare(self, obj: Any) -> None:
        """Make a loaded base ready for adapters (default: nothing; AudioLDM2 fixes its GPT2 for transformers 5)."""

    def fingerprint_modules(self, obj: Any) -> dict[str, nn.Module]:
        """The modules whose weights make up the base: the model, or a pipeline's torch components."""
        if isinstance(obj, nn.Module):
            return {"": obj}
        return {name: m for name, m in vars(obj).items() if isinstance(m, nn.Module)}

    def tokenizers(self, base: LoadedBase) -> list[Any]:
        """The tokenizers that read a prompt (they expand concept placeholders)."""
        if self.is_pipeline:
            return [t for t in (getattr(base.model, s.tokenizer, None) for s in self.text_encoders if s.tokenizer)
                    if t is not None]
        return [getattr(base.processor, "tokenizer", base.processor)]

    def adapter_load_kwargs(self, base: LoadedBase) -> dict[str, Any]:
        """Keyword arguments `musicpeft.load_adapter` needs for this base (MusicGen: the processor to bind)."""
        return {} if self.is_pipeline else {"processor": base.processor}

    # --------------------------------------------------------------------------------------- behaviour
    def load(self, source: str, device: str, dtype: torch.dtype) -> LoadedBase:
        """Load the base named `source` once, in eval mode, on `device`."""
        raise NotImplementedError(f"The {self.name} family does not say how to load a base.")

    def default_guidance(self, model: Any) -> float:
        """The family's usual classifier-free guidance scale for `model`."""
        return float(self.guidance_scale)

    def generate_clips(self, base: LoadedBase, model: Any, prompts: list[str], seeds: list[int], *,
                       seconds: float, guidance_scale: float, num_inference_steps: int = 200,
                       batch_size: int = 8) -> list[np.ndarray]:
        """One clip per prompt, prompt `i` drawn with `seeds[i]` (see `evaluation.generation.generate_clips`)."""
        raise NotImplementedError(f"The {self.name} family does not say how to generate clips.")


def get_submodule(obj: Any, path: str) -> Any:
    """`a.b.c` attribute lookup that also works on pipelines (which are not nn.Modules)."""
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj
