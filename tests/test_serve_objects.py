"""`objects` in API responses: boxes in the request image's pixels, masks as COCO compressed RLE that decodes back
to exactly the mask the window draws, and null masks without the decoder."""

from __future__ import annotations

import numpy as np
from PIL import Image

from vlm_core.runtime.answers import parse_objects
from vlm_core.runtime.engine import PreparedImage
from vlm_core.runtime.masks import decode_object_masks
from vlm_core.runtime.coco_rle import decode as rle_decode
from vlm_core.runtime.coco_rle import encode as rle
from vlm_core.serve.objects import objects_for
from vlm_core.weights.vae import load_decoder

from .vae_fixture import write_random_vae

SEGMENT = "<loc0100><loc0200><loc0800><loc0900> " + "".join(f"<seg{i * 7 % 128:03d}>" for i in range(16)) + " cat"


def test_rle_matches_pycocotools_strings_and_round_trips():
    # Hand-checked against pycocotools' rleToString: column-major runs, first run of zeros, 5-bit groups.
    assert rle(np.array([[0, 1], [1, 1]], dtype=bool)) == {"size": [2, 2], "counts": "13"}
    assert rle(np.ones((2, 3), dtype=bool))["counts"] == "06"  # a leading empty run of zeros
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (7, 5), (64, 48), (300, 200)):
        mask = rng.random(shape) > 0.7
        mask[: shape[0] // 2] |= True  # long runs too (multi-group counts, negative differences)
        assert np.array_equal(rle_decode(rle(mask)), mask)


def test_objects_carry_boxes_and_the_windows_masks(tmp_path):
    image = PreparedImage(Image.new("RGB", (640, 480)), None, "k")
    decoder = load_decoder(write_random_vae(tmp_path / "vae.npz"))
    objects = objects_for(SEGMENT + " ; <loc0000><loc0000><loc0512><loc0512> dog", image, decoder)
    found = parse_objects(SEGMENT, 640, 480)
    assert [o["label"] for o in objects] == ["cat", "dog"]
    assert objects[0]["box"] == list(found[0].pixel_box)
    want = decode_object_masks(decoder, found)[0]
    assert objects[0]["mask"]["size"] == [480, 640]
    assert np.array_equal(rle_decode(objects[0]["mask"]), want)
    assert objects[1]["mask"] is None  # a detection has no mask codes
    without = objects_for(SEGMENT, image, None)
    assert without[0]["mask"] is None and without[0]["box"] == objects[0]["box"]
    assert objects_for("a cat on a mat", image, decoder) is None  # no <loc>: no field
