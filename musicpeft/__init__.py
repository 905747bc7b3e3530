"""musicpeft: parameter-efficient fine-tuning methods for text-to-music models, as a peft plugin.

Importing this package registers its methods with peft, so that `get_peft_model`, `save_pretrained`
and `PeftModel.from_pretrained` work with them.
"""

from . import adapters
from .adapters import peft_guards
from .adapters.files import AdapterFileError, allow_pickle_adapters
from .api import add_adapter, load_adapter, save_adapter
from .families import FAMILIES, UnsupportedModelError, family_of
from .metrics import register_clap_kld
from .tuners import (
    ConceptIdentifierConfig,
    ConceptIdentifierModel,
    PivotalMaskConfig,
    PivotalMaskModel,
    SoftMusicPromptConfig,
    SoftMusicPromptModel,
)
from .tuners.concept_identifier import UnknownConceptError, bind_processor


def __getattr__(name: str):
    # Hub helpers import huggingface_hub's card machinery; load them only when asked for.
    if name in ("push_adapter_to_hub", "render_model_card"):
        from . import hub  # lazy: hub imports huggingface_hub's card machinery, needed only for these two

        return getattr(hub, name)
    raise AttributeError(f"module 'musicpeft' has no attribute {name!r}")


__version__ = "0.1.0"

# peft's own loaders get musicpeft's file checks and undo a refused load (see adapters/peft_guards.py): done
# here, once, because importing musicpeft is what makes our methods loadable by peft at all.
peft_guards.install()
register_clap_kld()  # a bare evaluate.load("clap_kld") works offline after `import musicpeft`

__all__ = [
    "ConceptIdentifierConfig",
    "ConceptIdentifierModel",
    "PivotalMaskConfig",
    "PivotalMaskModel",
    "UnknownConceptError",
    "bind_processor",
    "adapters",
    "AdapterFileError",
    "allow_pickle_adapters",
    "FAMILIES",
    "SoftMusicPromptConfig",
    "SoftMusicPromptModel",
    "UnsupportedModelError",
    "add_adapter",
    "family_of",
    "load_adapter",
    "push_adapter_to_hub",
    "render_model_card",
    "save_adapter",
]
