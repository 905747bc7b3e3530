"""musicpeft: parameter-efficient fine-tuning methods for text-to-music models, as a peft plugin.

Importing this package registers its methods with peft, so that `get_peft_model`, `save_pretrained`
and `PeftModel.from_pretrained` work with them.
"""

from . import adapter_files, concepts, diagnostics
from .adapter_files import AdapterFileError, allow_pickle_adapters
from .api import add_adapter, load_adapter, save_adapter
from .concepts import UnknownConceptError, bind_processor
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


def __getattr__(name: str):
    # Hub helpers import huggingface_hub's card machinery; load them only when asked for.
    if name in ("push_adapter_to_hub", "render_model_card"):
        from . import hub

        return getattr(hub, name)
    raise AttributeError(f"module 'musicpeft' has no attribute {name!r}")


__version__ = "0.1.0"

adapter_files.install()
register_clap_kld()  # a bare evaluate.load("clap_kld") works offline after `import musicpeft`

__all__ = [
    "ConceptIdentifierConfig",
    "ConceptIdentifierModel",
    "PivotalMaskConfig",
    "PivotalMaskModel",
    "UnknownConceptError",
    "bind_processor",
    "concepts",
    "diagnostics",
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
