"""`objects` in responses: the boxes of a detect/segment answer, in the request image's pixels, and their masks as
COCO run-length encoding ({"size": [h, w], "counts": str}, pycocotools' compressed string), or null when the mask
decoder is not installed or the object has no mask codes.
"""

from __future__ import annotations

from ..runtime.answers import has_objects, parse_objects
from ..runtime.coco_rle import encode as rle
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
