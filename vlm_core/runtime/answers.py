"""Structured answers: `detect` and `segment` outputs.

PaliGemma writes each object as four location tokens (y_min, x_min, y_max, x_max, each a bin over 1024), then for
`segment` sixteen `<segNNN>` codebook tokens, then the label; objects are separated by " ; ".
The segmentation codes are collected per object; decoding them into a mask needs the VQ-VAE decoder (later work).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_OBJECT = re.compile(
    r"((?:<loc\d{4}>){4})"  # the box
    r"((?:<seg\d{3}>){16})?"  # optional mask codes
    r"\s*([^<;]*)"  # the label, up to the next object or separator
)
_LOC = re.compile(r"<loc(\d{4})>")
_SEG = re.compile(r"<seg(\d{3})>")


@dataclass(frozen=True)
class Detection:
    label: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the original image's pixels
    seg_codes: tuple[int, ...] = field(default_factory=tuple)  # 16 codes when the answer was a segmentation


def parse_detections(text: str, width: int, height: int) -> list[Detection]:
    """All objects in `text`, boxes scaled to a width x height image; [] if the answer has none."""
    out = []
    for m in _OBJECT.finditer(text):
        y0, x0, y1, x1 = (int(v) for v in _LOC.findall(m.group(1)))
        if not (y0 <= y1 and x0 <= x1 and max(y0, x0, y1, x1) <= 1023):
            continue  # a malformed box is not an object; the raw text is still shown
        codes = tuple(int(v) for v in _SEG.findall(m.group(2) or ""))
        box = (x0 / 1024 * width, y0 / 1024 * height, x1 / 1024 * width, y1 / 1024 * height)
        out.append(Detection(m.group(3).strip(), box, codes))
    return out
