"""`python -m vlm_core objects`: the objects in a detect/segment answer, with their masks decoded and placed.

    python -m vlm_core objects --answer TEXT --image PATH [--vae NPZ] [--out-dir DIR] [--json]

With --out-dir: one PNG per mask (mode L, the image's size, 255 inside and 0 elsewhere) and `annotated.png`, the
image with the masks, boxes and labels drawn. With --json: one object, {"objects": [{"label": str|null,
"box": [x_min, y_min, x_max, y_max], "mask": path|null}, ...]}, boxes in the image's pixels as big_vision's
evaluator computes them. The mask decoder comes from --vae, or the model store (downloaded the first time it is
needed, with progress on stderr; offline afterwards).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..runtime.answers import objects_json


def add_parser(sub) -> None:
    o = sub.add_parser("objects", help="list the objects in a detect/segment answer; decode and save their masks")
    o.add_argument("--answer", required=True, help="the model's answer, e.g. '<loc0060>...<seg039>... cat'")
    o.add_argument("--image", required=True, help="the image the answer is about (boxes are scaled to it)")
    o.add_argument("--vae", default=None, help="mask decoder file (default: vae-oid.npz from the model store)")
    o.add_argument("--out-dir", default=None, help="write one PNG per mask and annotated.png here")
    o.add_argument("--json", action="store_true", help="print one JSON object")
    o.add_argument("--cache-dir", default=None, help="models folder (default: the platform cache directory)")


def run(args, parser: argparse.ArgumentParser) -> int:
    from ..runtime.image import load_image
    from ..runtime.answers import parse_objects

    image = load_image(args.image)
    objects = parse_objects(args.answer, *image.size)
    mask_paths: list[Path | None] = [None] * len(objects)
    if args.out_dir is not None:
        masks = _decode(objects, args) if any(d.has_mask_codes for d in objects) else [None] * len(objects)
        mask_paths = _write(Path(args.out_dir), image, objects, masks)
    if args.json:
        print(json.dumps({"objects": objects_json(objects, mask_paths)}, ensure_ascii=False))
        return 0
    if not objects:
        print("no objects in the answer (it has no complete <loc> boxes)")
    for i, (d, path) in enumerate(zip(objects, mask_paths)):
        x0, y0, x1, y1 = d.pixel_box
        if path is not None:
            mask = f"mask {path}"
        elif not d.has_mask_codes:
            mask = "no mask (a detection)"
        elif args.out_dir is None:
            mask = "mask codes (add --out-dir to decode and write the mask)"
        else:
            mask = "no mask (the box has no area in pixels)"
        print(f"{i}. {d.label or '(no label)'}: x {x0}-{x1}, y {y0}-{y1}; {mask}")
    if args.out_dir is not None:
        print(f"annotated image: {Path(args.out_dir) / 'annotated.png'}")
    return 0


def _decode(objects, args):
    from ..runtime.masks import decode_object_masks
    from ..weights.vae import load_store_decoder

    progress = _progress_printer()
    decoder = load_store_decoder(args.vae, Path(args.cache_dir) if args.cache_dir else None,
                                 download_if_missing=True, progress=progress)
    if progress.shown:
        sys.stderr.write("\n")
    return decode_object_masks(decoder, objects)


def _write(out_dir: Path, image, objects, masks) -> list[Path | None]:
    from ..runtime.annotate import annotate
    from ..runtime.masks import write_masks

    paths = write_masks(out_dir, objects, masks)
    annotate(image, objects, masks).save(out_dir / "annotated.png")
    return paths


def _progress_printer():
    def show(p) -> None:
        frac = p.done / p.total if p.total else 1.0
        sys.stderr.write(f"\rdownloading the mask decoder {p.filename}: {frac:6.1%} of {p.total / 1e6:.1f} MB")
        sys.stderr.flush()
        show.shown = True

    show.shown = False
    return show
