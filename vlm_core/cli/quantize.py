"""`python -m vlm_core quantize --model DIR --quant int8|int4`: build the packed-weights cache ahead of time, so
the first load in the app or a command maps it instead of quantizing (model/quant.py, weights/quantize.py)."""

from __future__ import annotations

import argparse
import logging
import sys
import time


def add_parser(sub) -> None:
    q = sub.add_parser("quantize", help="build the int8/int4 weights cache in a model folder ahead of the first load")
    q.add_argument("--model", required=True, help="model folder, or a repo id already downloaded")
    q.add_argument("--quant", required=True, choices=["int8", "int4"])


def run(args, parser: argparse.ArgumentParser) -> int:
    from ..weights.hub import resolve_model
    from ..weights.quantize import packed_state
    from ..weights.quantize_cache import cache_path

    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # a stale cache being rebuilt says so
    model_dir = resolve_model(args.model)
    t0 = time.perf_counter()
    _, state, built, _ = packed_state(model_dir, args.quant)
    path = cache_path(model_dir, args.quant)
    size = sum(t.numel() * t.element_size() for t in state.values())
    if not path.is_file():
        print(f"error: could not write {path}: see the warning above", file=sys.stderr)
        return 1
    what = "built" if built else "already up to date:"
    print(f"{what} {path} ({size / 2**30:.2f} GiB, {time.perf_counter() - t0:.1f} s)")
    return 0
