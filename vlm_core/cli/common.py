"""What several commands share: their common options. Commands import this and the floors below, never each other."""

from __future__ import annotations

import argparse

DEVICES = ["auto", "cpu", "cuda", "mps"]
DTYPES = ["auto", "float32", "bfloat16", "float16"]


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    """--model, --image, --device and --dtype, as generate and bench take them."""
    p.add_argument("--model", required=True, help="model folder (config.json, tokenizer.model, *.safetensors)")
    p.add_argument("--image", required=True, help="image file")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--dtype", default="auto", choices=DTYPES)
