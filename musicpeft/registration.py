"""Making peft know our methods.

`peft.utils.register_peft_method` only accepts names that are already members of `peft.PeftType`, a
closed `str` Enum. This module adds our members to that Enum (the one small, deliberate patch of peft
internals) and then registers config and tuner classes through peft's public function, so that
`get_peft_model`, `PeftConfig.from_pretrained` and `PeftModel.from_pretrained` map our `peft_type`
back to our classes.
"""

from __future__ import annotations

from peft.utils import PeftType, register_peft_method


def add_peft_type(name: str) -> PeftType:
    """Add `name` (upper case) to `peft.PeftType` if it is not there yet; returns the member."""
    if name in PeftType.__members__:
        return PeftType[name]
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = PeftType
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    type.__setattr__(PeftType, name, member)
    return member


def register_method(name: str, config_cls: type, model_cls: type, prefix: str) -> None:
    """Register one musicpeft method with peft; safe to call twice (e.g. on module reload)."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    peft_type = add_peft_type(name.upper())
    if PEFT_TYPE_TO_CONFIG_MAPPING.get(peft_type) is config_cls:
        return
    register_peft_method(name=name, config_cls=config_cls, model_cls=model_cls, prefix=prefix)
