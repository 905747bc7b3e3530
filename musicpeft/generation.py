"""Generation for evaluation: one base, adapters switched on it, prompts in batches with per-prompt seeds.

Why separate from the report: the same steps serve any comparison of a base with its adapters
(``musicpeft evaluate``, a notebook, a listening test), for both families.

Seeds: prompt ``i`` is drawn with its own generator seeded ``seeds[i]``, so its clip is the same whether
it is generated alone or in a batch, and whatever the other prompts of the batch are:

* MusicGen: :class:`PromptSeededSampler` draws every prompt's next codes (one per codebook, per step)
  from that prompt's ``torch.Generator``, after classifier-free guidance and the generation config's
  temperature / top-k / top-p, exactly where ``generate`` would sample.
* AudioLDM2: each prompt's initial latents come from its own ``torch.Generator``; DDIM with ``eta=0``
  adds no other noise.

Batched clips equal unbatched ones up to float rounding (padding changes the shapes of the text
encoder's matmuls, ~1e-7), which can flip a sampled code only when a draw lands within that distance
of a boundary.

Adapters: :func:`switch_adapters` loads each adapter once onto the one base, under its own adapter
name, and activates them in turn (``set_adapter``); adapters of one kind share one PeftModel, and
between kinds the adapters are unloaded and the base is checked to be exactly as it was. No copy of
the base is made (a deep copy per adapter cost a model's worth of memory each).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

TINY_MUSICGEN = "tiny-musicgen"
# The shipped tiny MusicGen trained on the micro-world (musicpeft.tiny.trained); the demo's base.
TINY_MUSICGEN_TRAINED = "tiny-musicgen-trained"
TINY_AUDIOLDM2 = "tiny-audioldm2"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedBase:
    """The base model as loaded once: ``model`` is a MusicGen model or an AudioLDM2 pipeline."""

    family: str
    model: Any
    processor: Any
    sampling_rate: int
    source: str


def _tiny_musicgen() -> tuple[Any, Any]:
    """The embedded tiny MusicGen, ``tiny_musicgen(seed=0)``, its zero EnCodec codebooks seeded from rendered audio.

    A config-built EnCodec maps every code to the same (zero) vector, so every prompt and every
    adapter would decode to the same clip; seeding the codebooks (as the demo does) makes codes audible.
    """
    from .tiny import tiny_musicgen_processor, tiny_musicgen_with_music

    return tiny_musicgen_with_music(seed=0), tiny_musicgen_processor()


def _is_pipeline_source(source: str) -> bool:
    """An AudioLDM2 pipeline has a ``model_index.json``; a MusicGen model does not."""
    if os.path.isdir(source):
        return os.path.isfile(os.path.join(source, "model_index.json"))
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        hf_hub_download(source, "model_index.json")
        return True
    except EntryNotFoundError:
        return False
    except Exception:  # offline and not cached: let the loader give its own error
        return "audioldm" in source.lower()


def base_family(source: str) -> str:
    """``"audioldm2"`` or ``"musicgen"``: which kind of base ``source`` names, without loading it."""
    tiny_musicgens = (TINY_MUSICGEN, TINY_MUSICGEN_TRAINED)
    if source == TINY_AUDIOLDM2 or (source not in tiny_musicgens and _is_pipeline_source(source)):
        return "audioldm2"
    return "musicgen"


def load_base(source: str, device: str, dtype: str = "float32") -> LoadedBase:
    """Load the base model or pipeline once, in eval mode, on ``device``."""
    torch_dtype = DTYPES[dtype]
    if base_family(source) == "audioldm2":
        if source == TINY_AUDIOLDM2:
            from .tiny import tiny_audioldm2_pipeline

            pipe = tiny_audioldm2_pipeline(seed=0)
            if torch_dtype != torch.float32:
                pipe.to(dtype=torch_dtype)
        else:
            from .pipelines import load_audioldm2_pipeline

            pipe = load_audioldm2_pipeline(source, torch_dtype=torch_dtype)
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return LoadedBase("audioldm2", pipe, None, int(pipe.vocoder.config.sampling_rate), source)
    if source == TINY_MUSICGEN:
        model, processor = _tiny_musicgen()
    else:
        from transformers import AutoProcessor, MusicgenForConditionalGeneration

        if source == TINY_MUSICGEN_TRAINED:
            from .tiny import trained_musicgen_path

            source = trained_musicgen_path()
        model = MusicgenForConditionalGeneration.from_pretrained(source, dtype=torch_dtype)
        try:
            processor = AutoProcessor.from_pretrained(source)
        except (OSError, ValueError) as err:
            raise OSError(f"base: {source} has a MusicGen model but no loadable processor ({err})") from None
    model = model.to(device=device, dtype=torch_dtype).eval()
    return LoadedBase("musicgen", model, processor, int(model.config.audio_encoder.sampling_rate), source)


def _adapter_kind(folder: str) -> tuple:
    """What a PeftModel must share to hold several adapters: (component, peft_type) of every adapted part."""
    import json

    from .api import MANIFEST_NAME

    components = {".": "."}
    manifest = os.path.join(folder, MANIFEST_NAME)
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as handle:
            components = json.load(handle).get("components") or components
    kind = []
    for component, subfolder in sorted(components.items()):
        with open(os.path.join(folder, subfolder, "adapter_config.json"), encoding="utf-8") as handle:
            kind.append((component, json.load(handle).get("peft_type")))
    return tuple(kind)


def _fingerprint(base: LoadedBase) -> dict[str, tuple]:
    """Name, shape, dtype and sums of every base weight and buffer: what unloading adapters must give back."""
    modules = (
        {"": base.model} if base.family == "musicgen"
        else {name: m for name, m in vars(base.model).items() if isinstance(m, torch.nn.Module)}
    )
    prints = {}
    with torch.no_grad():
        for prefix, module in modules.items():
            for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
                values = tensor.detach().double()
                prints[f"{prefix}.{name}"] = (tuple(tensor.shape), tensor.dtype, float(values.sum()),
                                              float(values.abs().sum()))
    return prints


def _activate(base: LoadedBase, name: str) -> Any:
    """Make adapter ``name`` the active one; returns what generates with it (PeftModel or the pipeline)."""
    from .api import _peft_model
    from .families.pipeline_adapters import _components

    if base.family == "musicgen":
        peft_model = _peft_model(base.model)
        peft_model.set_adapter(name)
        return peft_model
    for peft_model in _components(base.model).values():
        peft_model.set_adapter(name)
    return base.model


def _unload(base: LoadedBase) -> None:
    """Remove every adapter from the base (nothing was merged, so the base weights are as loaded)."""
    from .api import _peft_model
    from .families.pipeline_adapters import _components

    if base.family == "musicgen":
        peft_model = _peft_model(base.model)
        if peft_model is not None:
            peft_model.unload()
            object.__delattr__(base.model, "_musicpeft_peft_model")
        return
    components = _components(base.model)
    for peft_model in components.values():
        peft_model.unload()
    components.clear()
    base.model.__dict__.pop("encode_prompt", None)  # the prompted wrapper of pipeline_adapters


def switch_adapters(base: LoadedBase, folders: dict[str, str]) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, model)`` for every adapter, each loaded once onto ``base.model`` and active alone.

    Adapters of one kind (same components and peft type) are loaded together, under their names, into
    one PeftModel per component and switched with ``set_adapter``; peft cannot hold adapters of
    different types in one PeftModel, so between kinds every adapter is unloaded, and the base is
    checked to be exactly as it was (no adapter leaks into the next kind). The base itself is
    generated with ``base.model`` before this is called, or after it is exhausted.
    """
    from .api import load_adapter

    groups: dict[tuple, list[str]] = {}
    for name, folder in folders.items():
        groups.setdefault(_adapter_kind(folder), []).append(name)
    before = _fingerprint(base)
    for names in groups.values():
        try:
            for name in names:
                load_adapter(base.model, folders[name], adapter_name=name)
            for name in names:
                yield name, _activate(base, name)
        finally:
            _unload(base)
        if _fingerprint(base) != before:
            raise RuntimeError(f"Unloading adapters {names} left the base model changed; evaluation stopped so "
                               "that no adapter's effect is attributed to another.")


def default_guidance(base: LoadedBase, guidance_scale: float | None = None) -> float:
    """``guidance_scale`` if given, else the family's usual one (MusicGen: generation config or 3.0; AudioLDM2: 3.5)."""
    if guidance_scale is not None:
        return float(guidance_scale)
    if base.family == "musicgen":
        return float(getattr(base.model.generation_config, "guidance_scale", None) or 3.0)
    return 3.5


def generate_clips(base: LoadedBase, model: Any, prompts: list[str], seeds: list[int], *, seconds: float,
                   guidance_scale: float, num_inference_steps: int = 200, batch_size: int = 8) -> list[np.ndarray]:
    """One clip per prompt, prompt ``i`` drawn with ``seeds[i]``: mono 1-D or ``(channels, samples)`` float32.

    ``model`` is ``base.model`` or the base with an adapter active; clips are ``seconds`` long (MusicGen
    generates whole frames, then the clip is cut). Prompts go ``batch_size`` at a time; a prompt's clip does
    not depend on the batch (see the module docstring). ``num_inference_steps`` is AudioLDM2's.
    """
    length = int(round(seconds * base.sampling_rate))
    clips: list[np.ndarray] = []
    if base.family == "audioldm2":
        for start in range(0, len(prompts), batch_size):
            stop = min(start + batch_size, len(prompts))
            generators = [torch.Generator().manual_seed(s) for s in seeds[start:stop]]
            out = model(prompts[start:stop], audio_length_in_s=seconds, guidance_scale=guidance_scale,
                        num_inference_steps=num_inference_steps, generator=generators, num_waveforms_per_prompt=1)
            clips += [np.asarray(a, dtype=np.float32)[..., :length] for a in out.audios]
        return clips
    from .training.collator import base_musicgen

    inner = base_musicgen(model)
    delay = inner.decoder.num_codebooks // inner.config.audio_encoder.audio_channels - 1
    max_new_tokens = math.ceil(seconds * inner.config.audio_encoder.frame_rate) + delay
    device = next(inner.parameters()).device
    for start in range(0, len(prompts), batch_size):
        stop = min(start + batch_size, len(prompts))
        inputs = base.processor(text=list(prompts[start:stop]), padding=True, return_tensors="pt").to(device)
        generators = [torch.Generator(device=device).manual_seed(s) for s in seeds[start:stop]]
        sampler = PromptSeededSampler(generators, inner.decoder.num_codebooks, guidance_scale,
                                      inner.generation_config)
        with torch.no_grad():
            out = model.generate(**inputs, do_sample=True, guidance_scale=guidance_scale,
                                 max_new_tokens=max_new_tokens, logits_processor=LogitsProcessorList([sampler]))
        for audio in out.float().cpu().numpy():
            clips.append((audio[0] if audio.shape[0] == 1 else audio)[..., :length])
    return clips


class PromptSeededSampler(LogitsProcessor):
    """Draws each prompt's next MusicGen codes with that prompt's own ``torch.Generator``.

    ``generate`` samples the whole batch from torch's global generator, so a prompt's clip would depend
    on its batch. This processor, passed as ``logits_processor``, runs where MusicGen's own
    classifier-free guidance would (it receives the conditional and unconditional logits stacked), applies
    the guidance and the generation config's temperature / top-k / top-p itself, draws one code per
    codebook row of each prompt from the prompt's generator, and returns logits that put all mass on the
    drawn code (equal in both halves, so the guidance and warpers that ``generate`` applies afterwards
    leave them as they are, and its own draw takes that code).
    """

    def __init__(self, generators: list[torch.Generator], rows_per_prompt: int, guidance_scale: float | None,
                 generation_config: Any) -> None:
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        self.generators = generators
        self.rows = rows_per_prompt
        self.guidance_scale = guidance_scale if guidance_scale is not None and guidance_scale > 1 else None
        unsupported = [k for k in ("min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_h")
                       if getattr(generation_config, k, None) not in (None, 1.0, 0.0)]
        if unsupported:
            raise NotImplementedError(f"generation config sets {unsupported}; per-prompt seeded sampling "
                                      "supports temperature, top_k and top_p")
        self.warpers = []
        temperature, top_k, top_p = (getattr(generation_config, k, None) for k in ("temperature", "top_k", "top_p"))
        if temperature is not None and temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if top_k:
            self.warpers.append(TopKLogitsWarper(top_k=top_k))
        if top_p is not None and top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=top_p))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = len(self.generators) * self.rows
        guided = self.guidance_scale is not None
        if scores.shape[0] != (2 if guided else 1) * rows:
            raise RuntimeError(f"PromptSeededSampler expected {(2 if guided else 1) * rows} rows of logits "
                               f"({len(self.generators)} prompts x {self.rows} codebooks), got {scores.shape[0]}")
        logits = scores
        if guided:  # transformers' ClassifierFreeGuidanceLogitsProcessor, which generate would apply next
            conditional, unconditional = scores.split(rows, dim=0)
            logits = unconditional + (conditional - unconditional) * self.guidance_scale
        for warper in self.warpers:
            logits = warper(input_ids[:rows], logits)
        probs = torch.softmax(logits.float(), dim=-1)
        codes = torch.cat([
            torch.multinomial(probs[i * self.rows:(i + 1) * self.rows], 1, generator=generator)
            for i, generator in enumerate(self.generators)
        ])
        # Finite, so that guidance (u + (c - u) * s) stays exact; everything but the drawn code gets no mass.
        chosen = torch.full_like(logits, torch.finfo(scores.dtype).min).scatter_(1, codes, 0.0)
        return torch.cat([chosen, chosen]) if guided else chosen


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "prompt"


def save_clips(clips: list[np.ndarray], folder: str, categories: list[str], sampling_rate: int) -> list[str]:
    """Write ``NNN-<category>.wav`` atomically; returns the paths.

    32-bit float wavs hold exactly the samples that were scored; 16-bit PCM would round quiet clips to silence.
    """
    import soundfile as sf

    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, (clip, category) in enumerate(zip(clips, categories, strict=True)):
        path = os.path.join(folder, f"{i:03d}-{_slug(category)}.wav")
        tmp = path + ".tmp"
        sf.write(tmp, clip.T if clip.ndim == 2 else clip, sampling_rate, format="WAV", subtype="FLOAT")
        os.replace(tmp, path)
        paths.append(path)
    return paths
