"""Original LAION-CLAP checkpoints (``630k-audioset-best.pt``, ``music_audioset_epoch_15_esc_90.14.pt``...)
converted to transformers' ``ClapModel`` layout, loaded without unpickling arbitrary objects.

Why: the music-specific CLAP checkpoints the papers' evaluations use are published as LAION-CLAP
training checkpoints, a pickle of ``{"state_dict": {...}, "epoch": ...}``. ``laion_clap`` itself
opens them with ``torch.load(weights_only=False)``, which runs whatever the pickle says. Here the
file is read with safetensors or ``torch.load(weights_only=True)`` (tensors and plain containers
only), renamed to transformers' names, and checked: every weight of the transformers model must
be filled, or the conversion fails naming the missing ones.

The renaming follows transformers' own conversion script
(``models/clap/convert_clap_original_pytorch_to_hf.py``): ``text_branch`` is a RoBERTa under
``text_model``; ``audio_branch`` is HTSAT under ``audio_model.audio_encoder`` with Swin blocks
renamed (``norm1`` -> ``layernorm_before``, ``attn.qkv`` split into query/key/value, ``attn.proj``
-> ``attention.output.dense``, ``mlp.fc1/fc2`` -> ``intermediate.dense``/``output.dense``,
``bn0`` -> ``batch_norm``); the projection MLPs' ``Sequential`` indices 0 and 2 become
``linear1`` and ``linear2``. LAION-only modules (``audio_transform``, ``text_transform``, the
spectrogram front end, the AudioSet head) are left out: transformers' CLAP has no use for them.
"""

from __future__ import annotations

import os
import pickle
import re

import torch

_SWIN_RENAMES = (
    (".attn.proj.", ".attention.output.dense."),
    (".attn.relative_position_bias_table", ".attention.self.relative_position_bias_table"),
    (".attn.relative_position_index", ".attention.self.relative_position_index"),
    (".norm1.", ".layernorm_before."),
    (".norm2.", ".layernorm_after."),
    (".mlp.fc1.", ".intermediate.dense."),
    (".mlp.fc2.", ".output.dense."),
)
# Weights transformers computes itself or never reads: missing them is fine.
_OPTIONAL_TARGETS = re.compile(
    r"(position_ids|token_type_ids|relative_position_index|num_batches_tracked)$"
)
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")


class CheckpointError(ValueError):
    """A CLAP checkpoint that cannot be read safely or does not fit the model."""


def load_state_dict_safely(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, never unpickling arbitrary objects.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``. A ``{"state_dict": ...}`` wrapper and DDP's ``module.``
    prefix are removed; non-tensor entries are dropped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CLAP checkpoint {path!r} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        obj = load_file(path, device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as err:
            raise CheckpointError(
                f"{path}: refusing to load: it is not a plain tensor checkpoint, and loading it would "
                f"mean unpickling arbitrary objects (torch.load(weights_only=True) said: {err}). "
                "Re-save its state_dict with safetensors or torch.save(model.state_dict())."
            ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path}: expected a dict of tensors (or {{'state_dict': ...}}), got {type(obj).__name__}"
        )
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: the checkpoint holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def is_laion_state_dict(state_dict: dict) -> bool:
    """True for LAION-CLAP's layout (``audio_branch.*`` / ``text_branch.*``), False for transformers'."""
    return any(k.startswith("audio_branch.") for k in state_dict)


def laion_to_transformers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename LAION-CLAP weights to transformers' ``ClapModel`` names (keys it has no use for pass through)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("text_branch."):
            key = "text_model." + key[len("text_branch."):]
        elif key.startswith("audio_branch."):
            key = "audio_model.audio_encoder." + key[len("audio_branch."):]
            key = key.replace("audio_encoder.bn0.", "audio_encoder.batch_norm.")
            for old, new in _SWIN_RENAMES:
                key = key.replace(old, new)
            if ".attn.qkv." in key:
                for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                    out[key.replace(".attn.qkv.", f".attention.self.{name}.")] = part.clone()
                continue
        key = re.sub(r"^(text|audio)_projection\.0\.", r"\1_projection.linear1.", key)
        key = re.sub(r"^(text|audio)_projection\.2\.", r"\1_projection.linear2.", key)
        out[key] = value
    return out


def _count(prefix_re: str, keys) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(prefix_re, k))}
    return max(found) + 1 if found else 0


def infer_clap_config(state_dict: dict[str, torch.Tensor], text_num_attention_heads: int | None = None,
                      spec_size: int = 256):
    """A ``ClapConfig`` matching a LAION-CLAP state dict's shapes (HTSAT-tiny/base, fused or not).

    Everything is read from tensor shapes except what weights cannot show: the text model's
    attention heads (RoBERTa's ``hidden_size // 64`` unless given) and HTSAT's ``spec_size``
    (256 in every published checkpoint).
    """
    from transformers import ClapConfig

    sd = state_dict
    a, t = "audio_branch.", "text_branch."
    try:
        proj = sd[a + "patch_embed.proj.weight"]
        n_stages = _count(r"audio_branch\.layers\.(\d+)\.", sd)
        depths = [_count(rf"audio_branch\.layers\.{i}\.blocks\.(\d+)\.", sd) for i in range(n_stages)]
        heads = [int(sd[f"{a}layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1]) for i in range(n_stages)]
        table = sd[f"{a}layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
        window = (int(round(table**0.5)) + 1) // 2
        embed = int(proj.shape[0])
        audio = dict(
            num_mel_bins=int(sd[a + "bn0.weight"].shape[0]), spec_size=spec_size, window_size=window,
            patch_size=int(proj.shape[-1]), patch_stride=[int(proj.shape[-2]), int(proj.shape[-1])],
            patch_embeds_hidden_size=embed, depths=depths, num_attention_heads=heads,
            hidden_size=int(sd[a + "norm.weight"].shape[0]),
            mlp_ratio=float(sd[f"{a}layers.0.blocks.0.mlp.fc1.weight"].shape[0] / embed),
            enable_fusion=any(k.startswith(a + "patch_embed.mel_conv2d.") for k in sd),
        )
        words = sd[t + "embeddings.word_embeddings.weight"]
        hidden = int(words.shape[1])
        text = dict(
            vocab_size=int(words.shape[0]), hidden_size=hidden,
            num_hidden_layers=_count(r"text_branch\.encoder\.layer\.(\d+)\.", sd),
            num_attention_heads=text_num_attention_heads or max(1, hidden // 64),
            intermediate_size=int(sd[t + "encoder.layer.0.intermediate.dense.weight"].shape[0]),
            max_position_embeddings=int(sd[t + "embeddings.position_embeddings.weight"].shape[0]),
            type_vocab_size=int(sd[t + "embeddings.token_type_embeddings.weight"].shape[0]),
        )
        projection_dim = int(sd["audio_projection.0.weight"].shape[0])
    except KeyError as err:
        raise CheckpointError(
            f"not a LAION-CLAP HTSAT + RoBERTa checkpoint: weight {err.args[0]!r} is missing"
        ) from None
    if audio["enable_fusion"]:
        audio["fusion_type"] = "aff_2d"
    return ClapConfig(text_config=text, audio_config=audio, projection_dim=projection_dim)


def convert_laion_checkpoint(checkpoint, config=None, text_num_attention_heads: int | None = None):
    """A transformers ``ClapModel`` (eval mode) holding a LAION-CLAP checkpoint's weights.

    Args:
        checkpoint: path to the LAION-CLAP file, or its already loaded state dict.
        config: a ``ClapConfig`` (or a path / Hub id of one) to build the model with; inferred from
            the weights' shapes when None (see :func:`infer_clap_config`).
        text_num_attention_heads: used only when inferring the config.

    Raises:
        CheckpointError: the file cannot be read safely, or weights the model needs are missing
            or have the wrong shape.
    """
    from transformers import ClapConfig, ClapModel

    state = checkpoint if isinstance(checkpoint, dict) else load_state_dict_safely(checkpoint)
    if not is_laion_state_dict(state):
        raise CheckpointError("checkpoint has no 'audio_branch.*' weights: it is not in LAION-CLAP's layout")
    if config is None:
        config = infer_clap_config(state, text_num_attention_heads=text_num_attention_heads)
    elif not isinstance(config, ClapConfig):
        config = ClapConfig.from_pretrained(config)
    model = ClapModel(config)
    target = model.state_dict()
    renamed = laion_to_transformers(state)
    wrong_shape = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in renamed.items() if k in target and tuple(v.shape) != tuple(target[k].shape)
    ]
    if wrong_shape:
        raise CheckpointError("LAION-CLAP weights do not fit the config: " + "; ".join(wrong_shape[:5]))
    missing = [k for k in target if k not in renamed and not _OPTIONAL_TARGETS.search(k)]
    if missing:
        raise CheckpointError(
            f"LAION-CLAP checkpoint lacks {len(missing)} weights the model needs, e.g. {missing[:5]}"
        )
    model.load_state_dict({k: v for k, v in renamed.items() if k in target}, strict=False)
    return model.eval()


def laion_feature_extractor(config):
    """The audio front end LAION-CLAP was trained with: 48 kHz, 1024-point window, hop 480, 50-14000 Hz, 10 s.

    Fused models crop with ``fusion``; unfused ones with ``rand_trunc`` (the metric seeds the crop).
    """
    from transformers import ClapFeatureExtractor

    audio = config.audio_config
    return ClapFeatureExtractor(
        feature_size=audio.num_mel_bins, sampling_rate=48000, hop_length=480, max_length_s=10,
        fft_window_size=1024, frequency_min=50, frequency_max=14000,
        truncation="fusion" if audio.enable_fusion else "rand_trunc", padding="repeatpad",
    )
