from ...registration import register_method
from .config import SoftMusicPromptConfig
from .layer import SoftPromptLayer
from .model import SoftMusicPromptModel

register_method(
    name="soft_music_prompt", config_cls=SoftMusicPromptConfig, model_cls=SoftMusicPromptModel, prefix="soft_prompt_"
)

__all__ = ["SoftMusicPromptConfig", "SoftMusicPromptModel", "SoftPromptLayer"]
