"""Generation for evaluation: load a base once, copy it per adapter, generate every prompt with its own seed.

Why separate from the report: the same steps serve any comparison of a base with its adapters
(``musicpeft evaluate``, a notebook, a listening test), for both families:

* MusicGen samples with torch's global generator, so each prompt is generated alone right after
  ``torch.manual_seed(seed_i)``: a prompt's clip does not depend on the other prompts or on a batch size.
* AudioLDM2 draws each prompt's initial latents from its own ``torch.Generator(seed_i)``; DDIM with
  ``eta=0`` adds no other noise, so prompts are batched.

Every adapter is loaded onto a deep copy of the base (:func:`with_adapter`), so no adapter can leak
into the base's clips or another adapter's; this costs one extra copy of the model in memory.
"""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

TINY_MUSICGEN = "tiny-musicgen"
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
    if source == TINY_AUDIOLDM2 or (source != TINY_MUSICGEN and _is_pipeline_source(source)):
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

        model = MusicgenForConditionalGeneration.from_pretrained(source, dtype=torch_dtype)
        try:
            processor = AutoProcessor.from_pretrained(source)
        except (OSError, ValueError) as err:
            raise OSError(f"base: {source} has a MusicGen model but no loadable processor ({err})") from None
    model = model.to(device=device, dtype=torch_dtype).eval()
    return LoadedBase("musicgen", model, processor, int(model.config.audio_encoder.sampling_rate), source)


def with_adapter(base: LoadedBase, folder: str) -> Any:
    """A fresh copy of the base with the adapter at ``folder`` loaded (the base itself is untouched)."""
    from .api import load_adapter

    return load_adapter(copy.deepcopy(base.model), folder)


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

    ``model`` is ``base.model`` or a copy of it with an adapter; clips are ``seconds`` long (MusicGen
    generates whole frames, then the clip is cut). ``num_inference_steps`` and ``batch_size`` are AudioLDM2's.
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
    for prompt, seed in zip(prompts, seeds, strict=True):
        inputs = base.processor(text=[prompt], padding=True, return_tensors="pt").to(device)
        torch.manual_seed(seed)
        with torch.no_grad():
            out = model.generate(**inputs, do_sample=True, guidance_scale=guidance_scale, max_new_tokens=max_new_tokens)
        audio = out[0].float().cpu().numpy()
        clips.append((audio[0] if audio.shape[0] == 1 else audio)[..., :length])
    return clips


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
