"""COCO run-length encoding of a binary mask, the `{"size": [h, w], "counts": "..."}` object of the COCO format
(what pycocotools' `mask.encode` writes and `mask.decode` reads). Plain numpy: the API server's `objects` and
the window's JSON export both use it, and neither needs pycocotools.

The mask is read column by column (Fortran order); the counts alternate runs of 0 and 1, starting with 0 (a first
run of length 0 when the top-left pixel is set); the compressed string stores each count, minus the count two
before it from the third on, in 5-bit groups with a continuation bit, offset by 48 into printable ASCII.
"""

from __future__ import annotations

import numpy as np


def run_lengths(mask: np.ndarray) -> list[int]:
    """bool[H, W] -> the alternating 0/1 run lengths in column-major order, starting with a run of 0s."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] else runs


def encode_counts(counts: list[int]) -> str:
    out = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic: a negative difference keeps its sign bits
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def encode(mask: np.ndarray) -> dict:
    """bool[H, W] -> {"size": [H, W], "counts": str}."""
    h, w = mask.shape
    return {"size": [int(h), int(w)], "counts": encode_counts(run_lengths(mask))}


def decode(rle: dict) -> np.ndarray:
    """The inverse of `encode` (pycocotools' rleFrString + decode): {"size": [H, W], "counts": str} -> bool[H, W]."""
    s, counts, p = rle["counts"], [], 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)  # sign-extend a negative difference
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    h, w = rle["size"]
    flat = np.zeros(h * w, dtype=bool)
    at, value = 0, False
    for n in counts:
        flat[at:at + n] = value
        at, value = at + n, not value
    return flat.reshape((w, h)).T
