"""Former home of adapters on pipelines; the code is now `musicpeft.adapters` (hosts, lifecycle, pipeline
hooks). Kept so that existing imports keep working."""

from ..adapters.base import pipeline_peft_models as _components
from ..adapters.hosts import PipelineHost
from ..adapters.manifest import MANIFEST_NAME
from ..adapters.pipeline_hooks import freeze_unadapted, protect_save_pretrained

__all__ = ["MANIFEST_NAME", "PipelineHost", "_components", "freeze_unadapted", "protect_save_pretrained"]
