"""`musicpeft app`: a browser demo to hear a base model next to its adapters.

Pick a base (the embedded tiny models, a local folder or a Hub id) and any number of adapters, type a
prompt, and the app generates one clip with the base and one with each adapter, from the same seed, so the
adapters' effect is heard side by side; a log-mel spectrogram of every clip is drawn under the players.

Prompts may use concept placeholders (``"a jig on <koto>"``, ``docs/concepts.md``). Each adapter is
loaded onto its own copy of the base *and of its processor* (``musicpeft.load_adapter(...,
processor=...)``), because binding a concept adapter adds identifier tokens to the tokenizer. A clip
whose model does not know a placeholder that another loaded adapter defines hears the concept's plain
name instead (``<koto>`` -> ``koto``), so the base is compared on the same words; a placeholder nobody
defines is refused with the known ones named.

The model logic (:class:`AppModels`) is separate from the interface (:func:`build_app`), so it can be used
and tested without a browser. Gradio is an optional extra (``pip install 'musicpeft[app]'``) and is
imported only by :func:`build_app`.
"""

from __future__ import annotations

import copy
import dataclasses
import html
import importlib.util
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import soundfile as sf

from .api import load_adapter
from .evaluation.generation import (
    TINY_AUDIOLDM2,
    TINY_MUSICGEN,
    TINY_MUSICGEN_TRAINED,
    LoadedBase,
    default_guidance,
    generate_clips,
    load_base,
)
from .families import tiny_sources
from .io import atomic_write
from .tuners.concept_identifier import placeholders

MAX_CLIPS = 4  # base + 3 adapters: player slots laid out in the page


def trained_tiny_available() -> bool:
    """Whether this install ships the trained tiny MusicGen (``musicpeft.tiny.trained``)."""
    try:
        return importlib.util.find_spec("musicpeft.tiny.trained") is not None
    except ModuleNotFoundError:
        return False


def default_bases() -> list[str]:
    """The bases offered in the dropdown: the offline tiny models, the trained one first when shipped."""
    bases = [TINY_MUSICGEN, TINY_AUDIOLDM2]
    return [TINY_MUSICGEN_TRAINED, *bases] if trained_tiny_available() else bases


@dataclasses.dataclass
class AppArguments:
    """Flags of ``musicpeft app``."""

    base: str = dataclasses.field(
        default="", metadata={"help": "Base preselected in the page: tiny-musicgen, tiny-audioldm2, "
                                      "tiny-musicgen-trained (when shipped), a local folder or a Hub id "
                                      "(empty: the first tiny model)."}
    )
    adapters: Sequence[str] = dataclasses.field(
        default=(),
        metadata={"help": "Adapter folders or Hub ids offered (and preselected) in the page.", "nargs": "*",
                  "type": str},
    )
    host: str = dataclasses.field(default="127.0.0.1", metadata={"help": "Address to serve on."})
    port: int = dataclasses.field(default=7860, metadata={"help": "Port to serve on."})
    device: str = dataclasses.field(default="cpu", metadata={"help": "Torch device for generation."})
    seconds: float = dataclasses.field(default=2.0, metadata={"help": "Default clip length in seconds."})
    share: bool = dataclasses.field(
        default=False, metadata={"help": "Ask Gradio for a public share link (needs network).",
                                 "type": lambda v: v.lower() in ("1", "true", "yes")}
    )


@dataclasses.dataclass
class Clip:
    """One generated clip: which model made it, from which prompt, and where its wav is."""

    label: str
    prompt: str
    sampling_rate: int
    audio: np.ndarray
    path: str


def adapter_label(source: str) -> str:
    """A short name for an adapter: the folder's name, or the Hub id."""
    source = os.fspath(source)
    return os.path.basename(os.path.normpath(source)) if os.path.isdir(source) else source


def declared_placeholders(source: str) -> list[str]:
    """Placeholders a local concept adapter declares in its ``adapter_config.json``, without loading it.

    Shown in the page as soon as an adapter is picked; Hub adapters are only known once loaded.
    """
    path = os.path.join(os.fspath(source), "adapter_config.json")
    if not os.path.isfile(path):
        return []
    try:
        with open(path) as handle:
            names = json.load(handle).get("concepts") or []
    except (OSError, ValueError):
        return []
    return [f"<{name}>" for name in names if isinstance(name, str)]


def _tokenizers(loaded: LoadedBase) -> list[Any]:
    """The tokenizers that read the prompt: MusicGen's processor's, or a pipeline's own (the family knows which)."""
    return loaded.model_family.tokenizers(loaded)


def known_placeholders(loaded: LoadedBase) -> dict[str, str]:
    """Placeholders the tokenizers of ``loaded`` expand (``"<koto>"`` -> identifier tokens)."""
    found: dict[str, str] = {}
    for tokenizer in _tokenizers(loaded):
        found.update(placeholders.placeholder_definitions(tokenizer))
    return found


def prompt_for(prompt: str, own: set[str], known: set[str]) -> str:
    """The prompt as one model reads it: its own placeholders stay (its tokenizer expands them), the
    other loaded concepts' placeholders become their plain names."""

    def replace(match: Any) -> str:
        found = match.group(0)
        return found if found in own or found not in known else match.group(1)

    return placeholders.PLACEHOLDER.sub(replace, prompt)


def write_wav(path: str, audio: np.ndarray, sampling_rate: int) -> str:
    """16-bit PCM wav, clipped, *not* normalised: what the player plays is what the model made (a
    browser plays 16-bit PCM everywhere; Gradio itself would peak-normalise float audio). Atomic."""
    data = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    data = data.T if data.ndim == 2 else data
    atomic_write(path, lambda tmp: sf.write(tmp, data, sampling_rate, format="WAV", subtype="PCM_16"))
    return path


def spectrogram_image(clips: Sequence[Clip], dpi: int = 100) -> np.ndarray:
    """Log-mel spectrograms of ``clips``, one row each on a shared colour scale, as an RGB array."""
    import librosa
    import librosa.display
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 1.9 * len(clips) + 0.3), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(clips), 1, squeeze=False)[:, 0]
    for ax, clip in zip(axes, clips, strict=True):
        mono = clip.audio if clip.audio.ndim == 1 else clip.audio.mean(axis=0)
        n_fft = min(2048, 2 ** int(np.log2(max(len(mono), 64))))
        mel = librosa.feature.melspectrogram(y=mono.astype(np.float32), sr=clip.sampling_rate, n_fft=n_fft,
                                             hop_length=n_fft // 4, n_mels=64)
        db = librosa.power_to_db(mel, ref=1.0, top_db=None)
        image = librosa.display.specshow(db, sr=clip.sampling_rate, hop_length=n_fft // 4, x_axis="time",
                                         y_axis="mel", ax=ax, vmin=-100, vmax=20, cmap="magma")
        ax.set_title(f"{clip.label}: {clip.prompt}", fontsize=9, loc="left")
        fig.colorbar(image, ax=ax, format="%+.0f dB")
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


class AppModels:
    """Loads a base and its adapters on demand and keeps them between requests.

    One base is kept at a time (choosing another frees the previous one and its adapters); each adapter
    lives on its own deep copy of the base and processor (:mod:`musicpeft.evaluation.generation` explains why
    copies). A lock serialises requests: models are not re-entrant under generation.
    """

    def __init__(self, device: str = "cpu", output_dir: str | None = None) -> None:
        self.device = device
        self.output_dir = output_dir or tempfile.mkdtemp(prefix="musicpeft-app-")
        self._base: LoadedBase | None = None
        self._variants: dict[str, LoadedBase] = {}
        self._lock = threading.Lock()

    def base(self, source: str) -> LoadedBase:
        """The base named ``source``, loading it (and dropping the previous base) when it changes."""
        source = (source or "").strip()
        if not source:
            raise ValueError("Base: choose a base model (tiny-musicgen, a local folder or a Hub id).")
        if self._base is None or self._base.source != source:
            loaded = self._load_base(source)  # a base that fails to load leaves the current one in place
            self._base, self._variants = loaded, {}
        return self._base

    def _load_base(self, source: str) -> LoadedBase:
        if source == TINY_MUSICGEN_TRAINED and not trained_tiny_available():
            raise ValueError(f"Base: {source} is not shipped with this install; use {TINY_MUSICGEN}.")
        if source not in tiny_sources() and not os.path.isdir(source) and source.count("/") != 1:
            raise ValueError(f"Base: {source!r} is neither a tiny model name, an existing folder nor a Hub id "
                             "('user/name').")
        return load_base(source, self.device)

    def variant(self, source: str, adapter: str) -> LoadedBase:
        """The base with ``adapter`` loaded, on copies of the base model and processor (kept for reuse)."""
        base = self.base(source)
        if adapter not in self._variants:
            copied = dataclasses.replace(base, model=copy.deepcopy(base.model), processor=copy.deepcopy(base.processor))
            kwargs = base.model_family.adapter_load_kwargs(copied)
            adapted = load_adapter(copied.model, adapter, **kwargs)  # what `musicpeft evaluate` generates with too
            self._variants[adapter] = dataclasses.replace(copied, model=adapted)
        return self._variants[adapter]

    def generate(self, source: str, adapters: Sequence[str], prompt: str, *, seconds: float, seed: int,
                 guidance_scale: float | None = None, include_base: bool = True,
                 num_inference_steps: int = 50, on_clip: Callable[[int, int, str], Any] | None = None) -> list[Clip]:
        """One clip for the base (if ``include_base``) and one per adapter, all from ``seed``.

        ``on_clip(i, n, label)`` is called before clip ``i`` of ``n`` is generated (the page's progress bar).
        """
        prompt = (prompt or "").strip()
        adapters = [a.strip() for a in adapters if a and a.strip()]
        if not prompt:
            raise ValueError("Prompt: type a description of the music, e.g. 'a cheerful jig on <koto>'.")
        if not include_base and not adapters:
            raise ValueError("Nothing to generate: pick an adapter or tick 'include the base'.")
        if len(adapters) + include_base > MAX_CLIPS:
            raise ValueError(f"Adapters: at most {MAX_CLIPS - include_base} at once (got {len(adapters)}).")
        if not 0 < seconds <= 60:
            raise ValueError(f"Seconds: expected a length in (0, 60], got {seconds}.")
        if guidance_scale is not None and not guidance_scale >= 1:
            raise ValueError(f"Guidance scale: expected 1 or more (1 turns guidance off), got {guidance_scale}.")
        with self._lock:
            base = self.base(source)
            models = [("base", base)] if include_base else []
            models += [(adapter_label(a), self.variant(source, a)) for a in adapters]
            known = {p for _, m in models for p in known_placeholders(m)}
            self._check_placeholders(prompt, known, base)
            guidance = default_guidance(base, guidance_scale)
            clips = []
            for i, (label, loaded) in enumerate(models):
                if on_clip is not None:
                    on_clip(i, len(models), label)
                text = prompt_for(prompt, set(known_placeholders(loaded)), known)
                audio = generate_clips(loaded, loaded.model, [text], [int(seed)], seconds=seconds,
                                       guidance_scale=guidance, num_inference_steps=num_inference_steps)[0]
                path = os.path.join(self.output_dir, f"{uuid.uuid4().hex[:12]}-{label.replace('/', '_')}.wav")
                write_wav(path, audio, loaded.sampling_rate)
                clips.append(Clip(label, text, loaded.sampling_rate, audio, path))
        return clips

    @staticmethod
    def _check_placeholders(prompt: str, known: set[str], base: LoadedBase) -> None:
        """Refuse a ``<name>`` that no loaded adapter defines and that is not a token of the base tokenizer."""
        tokenizers = _tokenizers(base)
        placeholders.expand_placeholders(prompt, {p: p[1:-1] for p in known}, tokenizers[0] if tokenizers else None)


def _describe(clips: Sequence[Clip], seconds_taken: float) -> str:
    lines = [f"Generated {len(clips)} clip(s) in {seconds_taken:.1f} s."]
    for clip in clips:
        centred = clip.audio - clip.audio.mean()
        rms = float(np.sqrt(np.mean(centred**2))) if centred.size else 0.0
        level = f"{20 * np.log10(rms):.1f} dBFS" if rms > 0 else "silent"
        lines.append(f"- **{clip.label}** heard `{clip.prompt}` (RMS {level})")
    return "\n".join(lines)


def build_app(base: str = "", adapters: Sequence[str] = (), *, bases: Sequence[str] | None = None,
              device: str = "cpu", seconds: float = 2.0, models: AppModels | None = None) -> Any:
    """The demo page as a ``gradio.Blocks`` (not launched): base and adapter pickers, prompt, players and
    the spectrograms. ``bases`` are the dropdown's choices (default :func:`default_bases`); any folder or
    Hub id can also be typed in."""
    import gradio as gr

    choices = list(bases) if bases is not None else default_bases()
    base = base or choices[0]
    if base not in choices:
        choices.append(base)
    models = models or AppModels(device=device)
    adapters = [os.fspath(a) for a in adapters]

    def placeholders_text(selected: Sequence[str] | None) -> str:
        found = sorted({p for a in selected or () for p in declared_placeholders(a)})
        if not found:
            return "No concept placeholders in the selected adapters (Hub adapters show theirs after loading)."
        return "Placeholders you can use: " + ", ".join(f"`{p}`" for p in found)

    # gradio finds the progress tracker by this default value (its documented idiom)
    def run(base_source, selected, prompt, secs, seed, guidance, include_base, steps,
            progress=gr.Progress()):  # noqa: B008
        progress(0, desc="Loading the base and adapters")
        start = time.perf_counter()
        try:
            clips = models.generate(base_source, list(selected or ()), prompt, seconds=float(secs), seed=int(seed),
                                    guidance_scale=float(guidance) if guidance else None,
                                    include_base=bool(include_base), num_inference_steps=int(steps),
                                    on_clip=lambda i, n, label: progress((i, n), desc=f"Generating: {label}"))
        except (ValueError, OSError) as err:  # bad input: a message naming the field, no traceback
            # the toast renders HTML: escaped, or "<koto>" in the message would vanish as an unknown tag
            raise gr.Error(html.escape(str(err)), duration=30) from None
        players = [gr.update(value=c.path, label=c.label, visible=True) for c in clips]
        players += [gr.update(value=None, visible=False)] * (MAX_CLIPS - len(clips))
        return (*players, spectrogram_image(clips), _describe(clips, time.perf_counter() - start))

    with gr.Blocks(title="musicpeft demo", analytics_enabled=False) as demo:  # offline: no telemetry calls
        gr.Markdown("# musicpeft: base vs adapters\nEvery clip uses the same prompt and seed; concept adapters "
                    "understand `<placeholders>`, other models hear the plain word.")
        with gr.Row():
            base_box = gr.Dropdown(choices=choices, value=base, allow_custom_value=True,
                                   label="Base (tiny model, local folder or Hub id)", elem_id="base")
            adapter_box = gr.Dropdown(choices=adapters, value=adapters[:MAX_CLIPS - 1], multiselect=True,
                                      allow_custom_value=True, label="Adapters (folders or Hub ids)",
                                      elem_id="adapters")
        placeholder_md = gr.Markdown(placeholders_text(adapters[:MAX_CLIPS - 1]), elem_id="placeholders")
        prompt_box = gr.Textbox(label="Prompt", placeholder="a cheerful jig on <koto>", lines=2, elem_id="prompt")
        with gr.Row():
            seconds_box = gr.Slider(0.5, 30, value=seconds, step=0.5, label="Seconds", elem_id="seconds")
            seed_box = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
            guidance_box = gr.Number(value=0, label="Guidance scale (0: the model's default; 1: off)",
                                     elem_id="guidance")
            steps_box = gr.Slider(5, 200, value=50, step=5, label="Denoising steps (AudioLDM2)")
            base_check = gr.Checkbox(value=True, label="Include the base", elem_id="include-base")
        button = gr.Button("Generate", variant="primary", elem_id="generate")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            # the browser's own player (an <audio> element with the wav as its src): the spectrograms
            # below already draw the signal, and it plays without any script
            players = [gr.Audio(type="filepath", interactive=False, visible=False, label=f"clip {i + 1}",
                                elem_id=f"clip-{i}", waveform_options=gr.WaveformOptions(show_recording_waveform=False))
                       for i in range(MAX_CLIPS)]
        spectrogram = gr.Image(type="numpy", label="Log-mel spectrograms", interactive=False, elem_id="spectrogram")
        adapter_box.change(placeholders_text, adapter_box, placeholder_md)
        inputs = [base_box, adapter_box, prompt_box, seconds_box, seed_box, guidance_box, base_check, steps_box]
        outputs = [*players, spectrogram, status]
        button.click(run, inputs, outputs)
        prompt_box.submit(run, inputs, outputs)
    return demo


def launch_app(args: AppArguments, *, block: bool = True) -> Any:
    """Build the page for ``args`` and serve it; returns the ``gradio.Blocks`` (serving in the background
    when ``block`` is False; call ``.close()`` to stop)."""
    demo = build_app(args.base, args.adapters, device=args.device, seconds=args.seconds)
    demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share,
                        prevent_thread_lock=not block, inbrowser=False)
    return demo
