"""`python -m vlm_core make-toy FOLDER`: a random-weight checkpoint in the Hub's layout, for tests and benchmarks."""

from __future__ import annotations

import argparse

from ..weights.toy_sizes import BENCH_SIZES


def add_parser(sub) -> None:
    t = sub.add_parser("make-toy", help="write a random-weight toy checkpoint in the Hub's layout (for testing)")
    t.add_argument("folder")
    t.add_argument("--spelling", default="hub", choices=["hub", "transformers4", "transformers5"])
    t.add_argument("--kind", default="toy", choices=["toy", "paligemma2-3b", "paligemma2-10b", "paligemma2-28b",
                                                     "paligemma-3b"],
                   help="toy: every feature on; the others: that release's exact files at toy size")
    t.add_argument("--image-size", type=int, default=224, help="for --kind other than toy: 224, 448 or 896")
    t.add_argument("--head", default="tied", choices=["tied", "separate"])
    t.add_argument("--shards", type=int, default=None, help="default: 2, or the release's shard count")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--size", default="toy", choices=["toy", "medium", *BENCH_SIZES],
                   help="medium: 133M parameters; 896-attn: 4096 image tokens through the 3B's attention, 4 layers; "
                        "3b-224: PaliGemma 2 3B's every shape (12 GB in float32): for bench; "
                        "10b-224: the 10B's (19 GB in bfloat16, written a shard at a time)")
    t.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="default: float32, or the release's dtype")


def run(args, parser: argparse.ArgumentParser) -> int:
    import torch

    from ..weights.toy import MEDIUM_TEXT, MEDIUM_VISION, write_checkpoint

    sizes = {"toy": {}, "medium": {"text": MEDIUM_TEXT, "vision": MEDIUM_VISION},
             **{name: {"text": text, "vision": vision} for name, (text, vision) in BENCH_SIZES.items()}}
    if args.kind != "toy":
        if args.size != "toy":
            parser.error("--size applies to --kind toy only")
        sizes["toy"] = {"kind": args.kind, "image_size": args.image_size}
    print(write_checkpoint(args.folder, spelling=args.spelling, shards=args.shards, seed=args.seed,
                           dtype=getattr(torch, args.dtype) if args.dtype else None, head=args.head,
                           **sizes[args.size]))
    return 0
