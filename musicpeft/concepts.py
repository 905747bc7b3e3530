"""`musicpeft.concepts`: the concept methods' user-facing helpers, under the name user code imports them by.

The code lives with its method in `musicpeft.tuners.concept_identifier` (placeholders, tokenizer binding,
pipeline entry points); this module only re-exports it, because tests, examples and user code write
`from musicpeft import concepts; concepts.bind_processor(model, processor)`.
"""

from .adapters.base import bound_tokenizers
from .tuners.concept_identifier.binding import bind_processor, concept_tuners, is_concept_adapter, pipeline_peft_model
from .tuners.concept_identifier.loading import (
    add_pipeline_adapter,
    load_concept_adapter,
    load_pipeline_adapter,
    save_pipeline_adapter,
)
from .tuners.concept_identifier.placeholders import (
    IDENTIFIER_TOKEN,
    PLACEHOLDER,
    SAVED_PLACEHOLDERS,
    UnknownConceptError,
    add_identifier_tokens,
    check_identifier_tokens,
    expand_placeholders,
    install_placeholders,
    load_processor,
    placeholder_definitions,
    remove_placeholders,
    restore_placeholders,
    saved_placeholders,
)

__all__ = [
    "IDENTIFIER_TOKEN",
    "PLACEHOLDER",
    "SAVED_PLACEHOLDERS",
    "UnknownConceptError",
    "add_identifier_tokens",
    "add_pipeline_adapter",
    "bind_processor",
    "bound_tokenizers",
    "check_identifier_tokens",
    "concept_tuners",
    "expand_placeholders",
    "install_placeholders",
    "is_concept_adapter",
    "load_concept_adapter",
    "load_pipeline_adapter",
    "load_processor",
    "pipeline_peft_model",
    "placeholder_definitions",
    "remove_placeholders",
    "restore_placeholders",
    "save_pipeline_adapter",
    "saved_placeholders",
]
