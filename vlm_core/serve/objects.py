"""`objects` in responses: the boxes of a detect/segment answer, in the request image's pixels, and their masks as
COCO run-length encoding ({"size": [h, w], "counts": str}, pycocotools' compressed string), or null when the mask
decoder is not installed or the object has no mask codes.
"""

from __future__ import annotations

import numpy as np

from ..runtime.answers import has_objects, parse_objects
from ..runtime.image import original_size
from ..runtime.masks import decode_object_masks


def objects_for(text: str, image, mask_decoder) -> list[dict] | None:
    """None when the answer holds no <loc> tokens (the field is then left out)."""
    if image is None or not has_objects(text):
        return None
    found = parse_objects(text, *original_size(image.image))
    masks = decode_object_masks(mask_decoder, found) if mask_decoder is not None else [None] * len(found)
    return [{"label": d.label or None, "box": list(d.pixel_box), "mask": None if m is None else rle(m)}
            for d, m in zip(found, masks)]


def rle(mask: np.ndarray) -> dict:
    """bool[h, w] -> COCO compressed RLE: run lengths in column-major order, starting with a run of zeros."""
    h, w = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [h, w], "counts": _encode(counts)}


def _encode(counts: list[int]) -> str:
    """pycocotools' rleToString: each count (after the first two, as a difference from the one two before) in
    5-bit groups, low first, 0x20 = more follows, offset by 48 into printable ASCII."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as C's on a long
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def rle_decode(rle_obj: dict) -> np.ndarray:
    """The inverse of `rle` (pycocotools' rleFrString + decode), for clients and tests."""
    s, counts, p = rle_obj["counts"], [], 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    h, w = rle_obj["size"]
    flat = np.zeros(h * w, dtype=bool)
    at, value = 0, False
    for n in counts:
        flat[at:at + n] = value
        at, value = at + n, not value
    return flat.reshape((w, h)).T
