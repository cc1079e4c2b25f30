"""What several commands share: their common options. Commands import this and the floors below, never each other."""

from __future__ import annotations

import argparse

DEVICES = ["auto", "cpu", "cuda", "mps"]
DTYPES = ["auto", "float32", "bfloat16", "float16"]
QUANTS = ["none", "int8", "int4"]  # weight formats (model/quant.py); "auto" is the app's, by memory fit


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    """--model, --image, --device and --dtype, as generate and bench take them."""
    p.add_argument("--model", required=True, help="model folder (config.json, tokenizer.model, *.safetensors)")
    p.add_argument("--image", required=True, help="image file")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--dtype", default="auto", choices=DTYPES)


def add_quant_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quant", default="none", choices=QUANTS,
                   help="decoder weights: none (as the checkpoint), int8, or int4 (quantized on first load and "
                        "cached in the model folder)")
