"""One folder per method: config.py (dataclass config), layer.py (the tuner layer), model.py (the tuner)."""

from .soft_prompt import SoftMusicPromptConfig, SoftMusicPromptModel

__all__ = ["SoftMusicPromptConfig", "SoftMusicPromptModel"]
