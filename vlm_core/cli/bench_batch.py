"""`python -m vlm_core bench-batch`: images/s at batch 1 and at batch N on the same images, in one run.

Both runs go through the same BatchRunner on the same decoded images (decoding is left out of the timing: it is
the same work at any batch size), after one warm-up, and must give identical rows: the figure is only reported
for outputs that are the same.
"""

from __future__ import annotations

import argparse

import json
import sys
import time


def add_parser(sub) -> None:
    p = sub.add_parser("bench-batch", help="images/s at batch 1 vs batch N on the same images")
    p.add_argument("--model", required=True)
    p.add_argument("--images", default=None, help="a folder, glob or .txt list (default: generated test images)")
    p.add_argument("--num-images", type=int, default=None, help="images to run (default: the batch size)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--prompt", default="caption en")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--json", action="store_true", help="print one JSON object")


def sample_images(n: int, seed: int = 0):
    """n distinct, deterministic RGB pictures (gradients, shapes and noise), so runs are comparable anywhere."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = 240 + 16 * (i % 5), 320 - 8 * (i % 7)
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * (i + 1)) % 256, (yy * 3 + 40 * i) % 256, ((xx + yy) * 2) % 256], -1)
        arr = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            x0, y0 = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
            draw.ellipse((x0, y0, x0 + 50, y0 + 50), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        out.append((f"generated-{i}", img))
    return out


def run(args, parser: argparse.ArgumentParser) -> int:
    from ..weights.hub import resolve_model
    from ..runtime.batch import BatchRunner
    from ..runtime.batch_io import InputError, list_inputs
    from ..runtime.engine import Engine
    from ..runtime.generate import SamplingParams

    if args.batch_size < 2:
        raise InputError("--batch-size must be at least 2 to compare against batch 1")
    n = args.num_images or args.batch_size
    engine = Engine.load(resolve_model(args.model), device=args.device, dtype=args.dtype)
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    sources = ([(p, p) for p in list_inputs(args.images)][:n] if args.images else sample_images(n))
    one = BatchRunner(engine, args.prompt, params, batch_size=1)
    many = BatchRunner(engine, args.prompt, params, batch_size=args.batch_size)
    loaded = [one.prepare(name, src) for name, src in sources]
    if bad := [item.error for item in loaded if item.image is None]:
        raise InputError(f"{len(bad)} of the images cannot be read, e.g. {bad[0]}")
    one.run_loaded(loaded[:1], lambda: False)  # warm-up: first-call allocations and kernel selection
    if engine.device.type == "cuda":
        many.run_loaded(loaded[:args.batch_size])  # its graph capture and cuBLAS heuristics, out of the timing

    results = {}
    for label, runner in (("batch_1", one), (f"batch_{args.batch_size}", many)):
        _sync(engine)
        t0 = time.perf_counter()
        rows = runner.run_loaded(loaded)
        _sync(engine)
        elapsed = time.perf_counter() - t0
        results[label] = {"images_per_s": len(rows) / elapsed, "seconds": elapsed,
                          "tokens": sum(r.tokens for r in rows), "rows": rows}
    a, b = results["batch_1"], results[f"batch_{args.batch_size}"]
    identical = [(r.text, r.tokens) for r in a["rows"]] == [(r.text, r.tokens) for r in b["rows"]]
    summary = {
        "model": engine.name, "device": engine.device_description(), "dtype": str(engine.dtype).removeprefix("torch."),
        "image_size": engine.cfg.image_size, "images": n, "max_new_tokens": args.max_new_tokens,
        "prompt": args.prompt, "batch_size": args.batch_size, "outputs_identical": identical,
        **{f"{k}_images_per_s": round(v["images_per_s"], 3) for k, v in results.items()},
        **{f"{k}_tokens": v["tokens"] for k, v in results.items()},
        "speedup": round(b["images_per_s"] / a["images_per_s"], 3),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{engine.name} on {summary['device']} ({summary['dtype']}), {engine.cfg.image_size} px, {n} images, "
              f"'{args.prompt}', up to {args.max_new_tokens} new tokens")
        for k, v in results.items():
            print(f"  {k.replace('_', ' '):>9}: {v['images_per_s']:7.3f} images/s  ({v['seconds']:.2f} s, "
                  f"{v['tokens']} tokens)")
        print(f"  speedup: {summary['speedup']:.2f}x   outputs identical: {identical}")
    if not identical:
        print("error: batched rows differ from batch 1; the speedup is not comparable", file=sys.stderr)
        return 1
    return 0


def _sync(engine) -> None:
    import torch

    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)
    elif engine.device.type == "mps":
        torch.mps.synchronize()
