from ...registration import register_method
from .config import PivotalMaskConfig
from .layer import PivotalLinear
from .model import PivotalMaskModel
from .selection import count, load_selection, random_percent, save_selection, selected_count, top_percent, union

register_method(name="pivotal_mask", config_cls=PivotalMaskConfig, model_cls=PivotalMaskModel, prefix="pivotal_")

__all__ = [
    "PivotalLinear",
    "PivotalMaskConfig",
    "PivotalMaskModel",
    "count",
    "load_selection",
    "random_percent",
    "save_selection",
    "selected_count",
    "top_percent",
    "union",
]
