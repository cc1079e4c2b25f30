"""Placing decoded masks on the original image, against a straightforward transcription of big_vision's evaluator
(evaluators/proj/paligemma/transfers/segmentation.py), at the image edges, odd sizes and degenerate boxes."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
from PIL import Image

from vlm_core.runtime.annotate import annotate, mask_outline
from vlm_core.runtime.answers import parse_objects
from vlm_core.runtime.masks import decode_object_masks, mask_png, place_mask, safe_stem, write_masks


def evaluator_mask(m64: np.ndarray, tokens: list[int], h: int, w: int) -> np.ndarray | None:
    """The evaluator's lines, with the predicted mask pasted into a full-size canvas."""
    bbox = np.array(tokens[:4]) / 1023
    y1, x1, y2, x2 = bbox
    y1, x1, y2, x2 = map(int, (y1 * h, x1 * w, y2 * h, x2 * w))
    if x2 <= x1 or y2 <= y1:
        return None
    mi = np.asarray(PIL.Image.fromarray(m64).resize([x2 - x1, y2 - y1], resample=PIL.Image.BILINEAR))
    mi = mi > 0.0
    full = np.zeros((h, w), bool)
    full[y1:y2, x1:x2] = mi
    return full


def answer(locs, codes=range(16), label="thing") -> str:
    return "".join(f"<loc{v:04d}>" for v in locs) + "".join(f"<seg{c:03d}>" for c in codes) + f" {label}"


def smooth_logits(seed: int) -> np.ndarray:
    """A 64x64 float field with both signs and soft edges, like the decoder's output."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    field = sum(rng.normal() * np.sin(rng.uniform(1, 8) * xx + rng.uniform(0, 6)) *
                np.cos(rng.uniform(1, 8) * yy + rng.uniform(0, 6)) for _ in range(5))
    return (field / np.abs(field).max()).astype(np.float32)


CASES = [
    ((0, 0, 1023, 1023), 640, 480),  # the whole image
    ((0, 0, 1023, 1023), 1, 1),  # a one-pixel image
    ((0, 0, 100, 1023), 333, 217),  # odd sizes, touching three edges
    ((900, 900, 1023, 1023), 97, 61),  # bottom-right corner
    ((511, 511, 512, 512), 1023, 1023),  # one pixel box
    ((511, 511, 512, 512), 100, 100),  # int() collapses it: no mask
    ((300, 300, 300, 800), 500, 500),  # flat: no mask
    ((1, 2, 3, 1022), 4097, 3),  # very wide image, tiny heights
    ((17, 400, 1000, 401), 999, 1001),  # a sliver
]


@pytest.mark.parametrize("locs, w, h", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_placement_matches_the_evaluator(locs, w, h, seed):
    (obj,) = parse_objects(answer(locs), w, h)
    m64 = smooth_logits(seed)
    ours, ref = place_mask(m64, obj), evaluator_mask(m64, list(locs), h, w)
    if ref is None:
        assert ours is None
        return
    assert ours.shape == (h, w) and ours.dtype == bool
    np.testing.assert_array_equal(ours, ref)
    x0, y0, x1, y1 = obj.pixel_box
    outside = ours.copy()
    outside[y0:y1, x0:x1] = False
    assert not outside.any()  # nothing leaks out of the box


def test_mask_is_in_the_right_place():
    """A logit field positive only in its left half lands in the left half of the box, not mirrored or transposed."""
    m64 = np.full((64, 64), -1.0, np.float32)
    m64[:, :32] = 1.0
    m64[:8, :] = -1.0  # and not in the top rows
    (obj,) = parse_objects(answer((0, 0, 1023, 1023)), 200, 100)
    mask = place_mask(m64, obj)
    assert mask[50, 10] and not mask[50, 190] and not mask[2, 10]


class _FixedDecoder:
    """Stands in for the VQ-VAE only where the real one is tested elsewhere: returns a known field per object."""

    def __init__(self):
        self.calls = []

    def decode(self, codes):
        codes = np.asarray(codes)
        self.calls.append(codes.shape)
        return np.stack([smooth_logits(int(c[0])) for c in codes])


def test_decode_object_masks_batches_and_skips_detections():
    text = (answer((0, 0, 500, 500), [3] * 16, "a") + " ; <loc0000><loc0000><loc0100><loc0100> box only ; "
            + answer((100, 100, 100, 900), [4] * 16, "flat") + " ; " + answer((500, 500, 1023, 1023), [5] * 16, "b"))
    objs = parse_objects(text, 300, 200)
    dec = _FixedDecoder()
    masks = decode_object_masks(dec, objs)
    assert dec.calls == [(3, 16)]  # one batch, only the objects with codes
    assert masks[1] is None and masks[2] is None
    np.testing.assert_array_equal(masks[0], evaluator_mask(smooth_logits(3), [0, 0, 500, 500], 200, 300))
    assert decode_object_masks(dec, []) == [] and len(dec.calls) == 1


def test_png_files(tmp_path):
    objs = parse_objects(answer((0, 0, 1023, 511), label="left/../wheel") + " ; " + answer((0, 0, 1, 1)), 31, 17)
    masks = [place_mask(smooth_logits(0), objs[0]), None]
    paths = write_masks(tmp_path / "out", objs, masks)
    assert paths[1] is None and paths[0].name == "mask-00-left____wheel.png"
    png = Image.open(paths[0])
    assert png.mode == "L" and png.size == (31, 17)
    values = np.asarray(png)
    assert set(np.unique(values)) <= {0, 255}
    np.testing.assert_array_equal(values == 255, masks[0])
    assert safe_stem("", 3) == "03" and mask_png(np.zeros((2, 3), bool)).size == (3, 2)


def test_annotated_copy_tints_only_the_mask():
    image = Image.new("RGB", (120, 80), (128, 128, 128))
    (obj,) = parse_objects(answer((0, 0, 1023, 1023)), 120, 80)
    mask = np.zeros((80, 120), bool)
    mask[20:60, 30:90] = True
    out = np.asarray(annotate(image, [obj], [mask], boxes=False))
    assert out.shape == (80, 120, 3)
    assert (out[5, 5] == 128).all()  # outside: untouched
    assert not (out[40, 60] == 128).all()  # inside: tinted
    edge = mask_outline(mask, 2)
    assert edge[20, 60] and edge[59, 60] and not edge[40, 60] and not edge[10, 10]
