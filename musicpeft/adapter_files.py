"""Former home of adapter-folder reading; the code is `musicpeft.adapters.files`. Kept for existing imports."""

from .adapters.files import (
    CONFIG_NAME,
    LOAD_HINT,
    PICKLE_NAME,
    SAFETENSORS_NAME,
    AdapterFileError,
    allow_pickle_adapters,
    check_local_adapter_folder,
    check_safetensors_file,
    check_tensor_values,
    read_adapter_config,
    read_safetensors_header,
)

__all__ = [
    "CONFIG_NAME",
    "LOAD_HINT",
    "PICKLE_NAME",
    "SAFETENSORS_NAME",
    "AdapterFileError",
    "allow_pickle_adapters",
    "check_local_adapter_folder",
    "check_safetensors_file",
    "check_tensor_values",
    "read_adapter_config",
    "read_safetensors_header",
]
