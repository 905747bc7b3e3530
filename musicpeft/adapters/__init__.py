"""Attaching, saving and loading adapters on any host: a transformers model or a diffusers pipeline.

* `hosts.py`: one host per kind of adapted object (`ModelHost`, `PipelineHost`, `host_of`);
  `base.py`: what they share (`is_pipeline`, `unwrap_peft`, `peft_model_of`, `PipelineModules`,
  which tokenizer feeds which text encoder);
* `lifecycle.py`: the one attach path, the one save path and the one load path (`musicpeft.add_adapter`,
  `save_adapter`, `load_adapter` are these);
* `manifest.py` (`musicpeft_adapter.json`), `folder.py` (the one writer of whole adapter folders, all or
  nothing), `files.py` (reading adapter folders: safetensors only, named errors), `strict.py` (a file holds
  exactly the weights its config creates), `rollback.py` (a refused load leaves everything as it was),
  `peft_guards.py` (the same checks on peft's own loaders).

This `__init__` exports only the modules that do not import the tuners: the tuners themselves import
`files`, `strict` and `base`, so importing `lifecycle` (which uses the concept tuner's tokenizer binding)
from here would make a cycle. `musicpeft.api` is the facade that re-exports the lifecycle.
"""

from .base import (
    WHOLE,
    PipelineModules,
    bound_tokenizers,
    is_pipeline,
    peft_model_of,
    pipeline_modules,
    pipeline_peft_models,
    unwrap_peft,
)
from .files import AdapterFileError, allow_pickle_adapters
from .hosts import ModelHost, PipelineHost, host_of
from .manifest import MANIFEST_NAME

__all__ = [
    "MANIFEST_NAME",
    "WHOLE",
    "AdapterFileError",
    "ModelHost",
    "PipelineHost",
    "PipelineModules",
    "allow_pickle_adapters",
    "bound_tokenizers",
    "host_of",
    "is_pipeline",
    "peft_model_of",
    "pipeline_modules",
    "pipeline_peft_models",
    "unwrap_peft",
]
