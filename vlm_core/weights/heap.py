"""Giving freed memory back to the operating system while a model loads, and keeping it while the model runs
(glibc only; elsewhere both are no-ops).

Repacking int4 weights replaces each layer's buffer with a new one of the same size, through temporaries of a few
times that. glibc serves allocations below its mmap threshold from the heap, and the threshold rises to the size of
the largest mapping freed so far, so after the first large buffer is replaced the new buffers and the temporaries
share the heap, and the holes the temporaries leave are not returned: the 10B in int4 peaked 1.3 GB above its
weights (8.5 GB for 7.3 GB of tensors). malloc_trim(0) returns every free page, holes included; called after each
layer, the peak stays one layer's temporaries above the weights.

While the model runs, the opposite hurts: a prefill allocates and frees temporaries of several MB per layer (the
int8/int4 tiles, activations), and each one above the threshold is a fresh mapping whose pages the kernel must
fault in and zero. Measured on a 2-core Xeon (a VM), 3B int8 prefill: 370,000-500,000 minor faults (1.5-2 GB of
zeroed pages) and TTFT 3.5 s; with large blocks kept on the heap, 357 faults and 2.9 s. `keep_freed_memory()`
does that once the model is loaded (what jemalloc or tcmalloc would do for an inference server).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _glibc(function: str):
    """glibc's `function`, or None off Linux or where the C library lacks it (musl has no malloc_trim)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), function)
    except (OSError, AttributeError):
        return None


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers in glibc's malloc.h
KEEP_BELOW = 64 << 20  # blocks below this come from the heap and are reused: the tiles and activations of a prefill
KEEP_FREE = 256 << 20  # the free memory the heap keeps at its top instead of returning it at every free


@functools.cache
def keep_freed_memory() -> bool:
    """Serve blocks under KEEP_BELOW from the heap and keep up to KEEP_FREE of freed memory (glibc); once per
    process. Returns whether it took."""
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, KEEP_BELOW)) and bool(mallopt(_M_TRIM_THRESHOLD, KEEP_FREE))


def release_free_memory() -> None:
    trim = _glibc("malloc_trim")
    if trim is not None:
        trim(0)
