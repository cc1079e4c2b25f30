"""Structured answers: the objects in `detect` and `segment` outputs.

PaliGemma writes an object as four `<locNNNN>` tokens (y_min, x_min, y_max, x_max, each a bin 0..1023 over the
image), then for `segment` optional whitespace and sixteen `<segNNN>` codebook indices (0..127), then an optional
` label`. Objects are joined by ` ; `. Real outputs look like

    <loc0060><loc0000><loc0920><loc0879><seg039>...<seg012>                 (no space, no label)
    <loc...>x4 <seg...>x16 left wheel ; <loc...>x4 <seg...>x16 right wheel
    <loc0256><loc0512><loc0768><loc1023> cat ; <loc0000><loc0000><loc0512><loc0512> red car

and the model may return fewer objects than were asked for. Anything else in the text is not an object: a run of
locs that is not exactly four, a seg block that is not exactly sixteen (an answer cut by the token limit), an
index out of range or an upside-down box is skipped, never raised; the raw answer is still shown.

Boxes are scaled as big_vision's segmentation evaluator does (loc / 1023, the inverse of how training targets are
binned: round(coordinate * 1023)); `pixel_box` is its integer box, which is exactly where a mask is placed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_OBJECT = re.compile(
    r"((?:<loc\d+>\s*)+)"  # a run of location tokens; exactly four make a box
    r"((?:<seg\d+>\s*)*)"  # the mask codes, when the answer is a segmentation
    r"([^<;]*)"  # the label, up to the next object or separator
)
_LOC = re.compile(r"<loc(\d+)>")
_SEG = re.compile(r"<seg(\d+)>")
NUM_SEG_CODES = 16


@dataclass(frozen=True)
class Detection:
    label: str  # "" when the answer gave none
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the original image's pixels
    seg_codes: tuple[int, ...] = field(default_factory=tuple)  # 16 codes for a segmentation, else ()
    locs: tuple[int, int, int, int] = (0, 0, 0, 0)  # the raw bins: y_min, x_min, y_max, x_max
    image_size: tuple[int, int] = (0, 0)  # width, height the box was scaled to

    @property
    def pixel_box(self) -> tuple[int, int, int, int]:
        """x0, y0, x1, y1 as integers, the evaluator's `int(loc / 1023 * size)`; the mask fills exactly this."""
        y0, x0, y1, x1 = self.locs
        w, h = self.image_size
        return int(x0 / 1023 * w), int(y0 / 1023 * h), int(x1 / 1023 * w), int(y1 / 1023 * h)

    @property
    def has_mask_codes(self) -> bool:
        return len(self.seg_codes) == NUM_SEG_CODES


def parse_objects(text: str, width: int, height: int) -> list[Detection]:
    """Every well-formed object in `text`, boxes scaled to a width x height image; [] if the answer has none."""
    out = []
    for m in _OBJECT.finditer(text):
        locs = tuple(int(v) for v in _LOC.findall(m.group(1)))
        codes = tuple(int(v) for v in _SEG.findall(m.group(2)))
        if len(locs) != 4 or max(locs) > 1023:
            continue
        y0, x0, y1, x1 = locs
        if y1 < y0 or x1 < x0:
            continue  # upside down: not a box (a flat one is kept; it just has no mask)
        if codes and (len(codes) != NUM_SEG_CODES or max(codes) > 127):
            continue  # a partial mask (the answer was cut) or a code outside the codebook
        box = (x0 / 1023 * width, y0 / 1023 * height, x1 / 1023 * width, y1 / 1023 * height)
        out.append(Detection(m.group(3).strip(), box, codes, (y0, x0, y1, x1), (width, height)))
    return out


def parse_detections(text: str, width: int, height: int) -> list[Detection]:
    """The same as parse_objects (detections are objects without mask codes); kept for existing callers."""
    return parse_objects(text, width, height)


def has_objects(text: str) -> bool:
    return "<loc" in text


def objects_json(objects: list[Detection], mask_paths: list[Path | None] | None = None) -> list[dict]:
    """The `objects` list of the JSON output (also what `generate --json` adds)."""
    paths = mask_paths or [None] * len(objects)
    return [{"label": d.label or None, "box": list(d.pixel_box), "mask": str(p) if p is not None else None}
            for d, p in zip(objects, paths)]
