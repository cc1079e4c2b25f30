"""Parsing objects out of detect / segment answers, on the shapes real PaliGemma outputs have."""

from __future__ import annotations

import pytest

from vlm_core.runtime.answers import parse_detections, parse_objects

SEG_A = [39, 120, 5, 77, 0, 127, 64, 64, 3, 9, 18, 101, 45, 88, 2, 12]
SEG_B = list(range(16))


def seg(codes) -> str:
    return "".join(f"<seg{c:03d}>" for c in codes)


def test_segmentation_without_space_or_label():
    text = "<loc0060><loc0000><loc0920><loc0879>" + seg(SEG_A)
    (obj,) = parse_objects(text, 640, 480)
    assert obj.label == "" and obj.seg_codes == tuple(SEG_A) and obj.has_mask_codes
    assert obj.locs == (60, 0, 920, 879)
    assert obj.box == pytest.approx((0.0, 60 / 1023 * 480, 879 / 1023 * 640, 920 / 1023 * 480))
    assert obj.pixel_box == (0, 28, 549, 431)  # int(), as big_vision's evaluator


def test_two_labelled_segmentations_with_spaces():
    text = (f"<loc0100><loc0200><loc0300><loc0400> {seg(SEG_A)} left wheel ; "
            f"<loc0500><loc0600><loc0700><loc0800> {seg(SEG_B)} right wheel")
    objs = parse_objects(text, 1023, 1023)
    assert [o.label for o in objs] == ["left wheel", "right wheel"]
    assert [o.seg_codes for o in objs] == [tuple(SEG_A), tuple(SEG_B)]
    assert objs[1].pixel_box == (600, 500, 800, 700)  # x0, y0, x1, y1


def test_detections_and_fewer_objects_than_asked():
    text = "<loc0256><loc0512><loc0768><loc1023> cat ; <loc0000><loc0000><loc0512><loc0512> red car"
    objs = parse_detections(text, width=2048, height=1024)
    assert [o.label for o in objs] == ["cat", "red car"]
    assert all(o.seg_codes == () and not o.has_mask_codes for o in objs)
    assert objs[0].box == pytest.approx((512 / 1023 * 2048, 256 / 1023 * 1024, 2048.0, 768 / 1023 * 1024))
    assert objs[0].pixel_box == (1025, 256, 2048, 768)


def test_mixed_segment_and_detect_objects():
    text = f"<loc0010><loc0010><loc0020><loc0020>{seg(SEG_B)} dog ; <loc0030><loc0030><loc0040><loc0040> cat"
    objs = parse_objects(text, 100, 100)
    assert [(o.label, o.has_mask_codes) for o in objs] == [("dog", True), ("cat", False)]


@pytest.mark.parametrize("text", [
    "a cat sitting on a mat",
    "",
    "<loc0100><loc0200> cut short",  # two locs
    "<loc0100><loc0200><loc0300><loc0400><loc0500> five locs",
    "<loc0500><loc0500><loc0100><loc0100> upside down",
    "<loc0100><loc0100><loc0200><loc0050> x upside down",
    "<loc1024><loc0000><loc0200><loc0200> out of range",
    "<loc0100><loc0100><loc0200><loc0200>" + seg(SEG_A[:9]),  # the token limit cut the mask
    "<loc0100><loc0100><loc0200><loc0200>" + seg(SEG_A + [1]),  # seventeen codes
    "<loc0100><loc0100><loc0200><loc0200>" + seg([128] + SEG_A[1:]),  # not in the codebook
    "<seg001><seg002> no box",
    "<loc0100><loc01",  # cut inside a token
])
def test_malformed_objects_are_skipped(text):
    assert parse_objects(text, 100, 100) == []


def test_a_bad_object_does_not_hide_the_good_ones():
    text = (f"<loc0100><loc0100><loc0200><loc0200>{seg(SEG_A[:5])} cut ; "
            f"<loc0100><loc0100><loc0200><loc0200>{seg(SEG_A)} whole ; <loc0001><loc0002> junk")
    objs = parse_objects(text, 100, 100)
    assert [o.label for o in objs] == ["whole"]


def test_flat_box_is_an_object_without_area():
    (obj,) = parse_objects("<loc0100><loc0100><loc0100><loc0300>" + seg(SEG_A) + " line", 50, 50)
    x0, y0, x1, y1 = obj.pixel_box
    assert y1 == y0 and x1 > x0
