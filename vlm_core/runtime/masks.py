"""Masks on the original image: where a decoded 64x64 mask goes, exactly as big_vision's evaluator places it.

The reference is big_vision/evaluators/proj/paligemma/transfers/segmentation.py, the code that scores PaliGemma's
segmentation: box = loc / 1023; pixels `int(y_min * H), int(x_min * W), int(y_max * H), int(x_max * W)`; the raw
float 64x64 decoder output is resized to the box with Pillow mode 'F' BILINEAR (size is width, height); the mask is
the pixels > 0, and nothing outside the box. A box whose integer height or width is 0 (or less) has no mask.

Google's demo Space differs (loc / 1024, `round`, a soft mask blended for display); we follow the evaluator, since it
is what the model's published scores were measured with, and a binary mask is what a PNG export needs.

Numpy and Pillow only: the desktop app's widgets may import this module (they never import torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .answers import Detection


def mask_in_box(logits64: np.ndarray, width: int, height: int) -> np.ndarray:
    """float[64, 64] -> bool[height, width]: the decoder's logits resized to a box, thresholded at 0."""
    resized = Image.fromarray(np.asarray(logits64, dtype=np.float32)).resize(  # 2-D float32 is mode 'F'
        (width, height), resample=Image.Resampling.BILINEAR)
    return np.asarray(resized) > 0.0


def place_mask(logits64: np.ndarray, det: Detection) -> np.ndarray | None:
    """bool[H, W] over the whole original image, or None when the object's box is empty in pixels."""
    w, h = det.image_size
    x0, y0, x1, y1 = det.pixel_box
    if x1 <= x0 or y1 <= y0:
        return None
    full = np.zeros((h, w), dtype=bool)
    full[y0:y1, x0:x1] = mask_in_box(logits64, x1 - x0, y1 - y0)
    return full


def decode_object_masks(decoder, objects: Sequence[Detection]) -> list[np.ndarray | None]:
    """One full-image bool mask per object (None for a detection, or a box with no area), in one decoder batch.
    `decoder` is a vlm_core.model.vqvae.MaskDecoder (anything with `.decode(int[B, 16]) -> float[B, 64, 64]`)."""
    with_codes = [i for i, d in enumerate(objects) if d.has_mask_codes]
    out: list[np.ndarray | None] = [None] * len(objects)
    if with_codes:
        logits = decoder.decode([objects[i].seg_codes for i in with_codes])
        for i, l64 in zip(with_codes, logits):
            out[i] = place_mask(l64, objects[i])
    return out


def mask_png(mask: np.ndarray) -> Image.Image:
    """Mode L, the image's size: 255 inside the mask, 0 elsewhere."""
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))  # 2-D uint8 is mode 'L'


def safe_stem(label: str, index: int) -> str:
    """A file name for object `index`: `03-left_wheel`, never a path separator or an odd character."""
    cleaned = "".join(c if c.isalnum() else "_" for c in label.strip())[:40].strip("_")
    return f"{index:02d}-{cleaned}" if cleaned else f"{index:02d}"


def write_masks(folder: str | Path, objects: Sequence[Detection], masks: Sequence[np.ndarray | None],
                ) -> list[Path | None]:
    """One PNG per mask (`mask-00-cat.png`); None where an object has no mask. Returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path | None] = []
    for i, (det, mask) in enumerate(zip(objects, masks)):
        if mask is None:
            paths.append(None)
            continue
        path = folder / f"mask-{safe_stem(det.label, i)}.png"
        mask_png(mask).save(path)
        paths.append(path)
    return paths
