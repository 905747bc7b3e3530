"""musicpeft's checks on peft's own loaders: `PeftModel.from_pretrained` and `PeftModel.load_adapter`.

Someone who loads a musicpeft adapter with plain peft gets the same guarantees as `musicpeft.load_adapter`:
pickles refused unless allowed, damaged safetensors named, NaN/Inf refused (`files.checked_load_peft_weights`
in front of peft's `load_peft_weights`), and a refused load undone (`rollback.restore_on_error` around the
two loaders). peft has no hook between attaching an adapter and reading its weights, so these are wrappers
around peft functions: the one deliberate patch of peft besides adding our `PeftType` members
(`musicpeft.registration`). `install()` is called once by `import musicpeft`, the moment our methods become
loadable by peft; importing this module patches nothing.
"""

from __future__ import annotations

import functools

import peft.peft_model
import peft.utils.save_and_load
from peft import PeftModel

from .files import checked_load_peft_weights
from .rollback import restore_on_error


def install() -> None:
    """Put the checks in front of peft's `load_peft_weights`, and make peft's loaders undo a refused load.

    Idempotent (each wrapper carries `__wrapped__`).
    """
    for module in (peft.peft_model, peft.utils.save_and_load):
        current = module.load_peft_weights
        if not hasattr(current, "__wrapped__"):
            module.load_peft_weights = checked_load_peft_weights(current)

    from_pretrained = PeftModel.__dict__["from_pretrained"].__func__
    if not hasattr(from_pretrained, "__wrapped__"):

        @functools.wraps(from_pretrained)
        def guarded_from_pretrained(cls, model, *args, **kwargs):
            with restore_on_error(model):
                return from_pretrained(cls, model, *args, **kwargs)

        PeftModel.from_pretrained = classmethod(guarded_from_pretrained)
    load = PeftModel.load_adapter
    if not hasattr(load, "__wrapped__"):

        @functools.wraps(load)
        def guarded_load_adapter(self, *args, **kwargs):
            with restore_on_error(self):
                return load(self, *args, **kwargs)

        PeftModel.load_adapter = guarded_load_adapter
