"""Former home of the concept tuners' helpers, split by concern; kept so that existing imports keep working.

`layout.py` (where tokens and pivotal parameters live), `weights.py` (offloaded base weights),
`fingerprint.py` (the base digest); `PipelineModules` and `is_pipeline` belong to the adapters layer.
"""

from ...adapters.base import PipelineModules, is_pipeline, pipeline_modules
from .fingerprint import base_fingerprint
from .layout import Layout, layout_of
from .weights import base_weight, execution_device, readable_weight

__all__ = [
    "Layout",
    "PipelineModules",
    "base_fingerprint",
    "base_weight",
    "execution_device",
    "is_pipeline",
    "layout_of",
    "pipeline_modules",
    "readable_weight",
]
