"""Giving freed memory back to the operating system while a model loads (glibc only; elsewhere a no-op).

Repacking int4 weights replaces each layer's buffer with a new one of the same size, through temporaries of a few
times that. glibc serves allocations below its mmap threshold from the heap, and the threshold rises to the size of
the largest mapping freed so far, so after the first large buffer is replaced the new buffers and the temporaries
share the heap, and the holes the temporaries leave are not returned: the 10B in int4 peaked 1.3 GB above its
weights (8.5 GB for 7.3 GB of tensors). malloc_trim(0) returns every free page, holes included; called after each
layer, the peak stays one layer's temporaries above the weights.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim  # absent from musl: AttributeError
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
