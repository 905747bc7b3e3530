"""File writing shared by every part of the package: one atomic single-file writer.

Whole adapter folders are written by :mod:`musicpeft.adapters.folder`; everything that writes one file
(a wav, a PNG, a JSON summary, a cache entry) goes through :func:`atomic_write` so that a reader never
sees half a file and a failed write leaves no temporary file behind.
"""

from .atomic import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]
