"""An annotated copy of the image: masks as translucent fills with an outline, boxes and label chips, one colour per
label (runtime/palette.py). The CLI's `objects --out-dir` and the app's "Save" write this; the app's canvas uses the
same palette, so the saved picture looks like the window. Pillow and numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .answers import Detection
from .palette import FILL_ALPHA, label_color_names


def mask_outline(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """bool[H, W]: the pixels of `mask` within `thickness` pixels of its edge (4-neighbour erosion)."""
    inner = mask.copy()
    for _ in range(max(1, thickness)):
        shrunk = inner.copy()
        shrunk[1:, :] &= inner[:-1, :]
        shrunk[:-1, :] &= inner[1:, :]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        shrunk[[0, -1], :] = False  # the image border counts as outside, so a mask touching it is outlined there
        shrunk[:, [0, -1]] = False
        inner = shrunk
    return mask & ~inner


def _rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float32)


def annotate(image: Image.Image, objects: Sequence[Detection], masks: Sequence[np.ndarray | None],
             boxes: bool = True) -> Image.Image:
    """An RGB copy of `image` with every mask filled and outlined, and (with `boxes`) every box and label drawn."""
    out = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    w, h = image.size
    colors = label_color_names([d.label for d in objects])
    line = max(2, round(max(w, h) / 400))
    for det, mask in zip(objects, masks):
        if mask is None:
            continue
        rgb = _rgb(colors[det.label])
        out[mask] = out[mask] * (1 - FILL_ALPHA) + rgb * FILL_ALPHA
        out[mask_outline(mask, line)] = rgb
    result = Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
    if boxes:
        draw = ImageDraw.Draw(result)
        font = ImageFont.load_default(size=max(12, round(max(w, h) / 60)))
        for det in objects:
            color = colors[det.label]
            x0, y0, x1, y1 = det.box
            draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=color, width=line)
            text = det.label or "(no label)"
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            chip_h = bottom - top + 4
            cy = y0 - chip_h if y0 >= chip_h else y0
            draw.rectangle((x0, cy, x0 + right - left + 6, cy + chip_h), fill=color)
            draw.text((x0 + 3 - left, cy + 2 - top), text, fill="white", font=font)
    return result
