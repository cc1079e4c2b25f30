"""Command line: `python -m vlm_core generate | bench | download | info | objects | make-toy`.

Exit codes: 0 success, 1 an error the user can act on (one line on stderr, no traceback unless --debug),
2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .errors import VlmError


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model folder (config.json, tokenizer.model, *.safetensors)")
    p.add_argument("--image", required=True, help="image file")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vlm_core", description="PaliGemma 2, locally.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="answer a prompt about an image, streaming the text")
    _add_runtime_args(g)
    g.add_argument("--prompt", required=True, help='e.g. "caption en", "detect cat ; dog", "answer en what is this?"')
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--ignore-eos", action="store_true", help="keep going past <eos> up to --max-new-tokens")
    g.add_argument("--no-graphs", action="store_true", help="decode eagerly on CUDA (no CUDA graphs)")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")

    b = sub.add_parser("bench", help="load time, peak RSS, TTFT and decode speed (optionally vs transformers)")
    _add_runtime_args(b)
    from .bench import BENCH_SIZES, add_arguments as add_bench_arguments

    add_bench_arguments(b)

    d = sub.add_parser("download", help="download a PaliGemma 2 model from the Hugging Face Hub (resumable)")
    d.add_argument("repo_id", help="e.g. google/paligemma2-3b-mix-224")
    d.add_argument("--cache-dir", default=None, help="models folder (default: the platform cache directory)")

    i = sub.add_parser("info", help="what a model folder holds, from config.json alone (weights optional)")
    i.add_argument("--model", required=True, help="model folder, or a repo id already downloaded")
    i.add_argument("--json", action="store_true", help="print one JSON object")

    from .objects_cli import add_objects_parser

    add_objects_parser(sub)

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
                        "3b-224: PaliGemma 2 3B's every shape (12 GB in float32): for bench")
    t.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="default: float32, or the release's dtype")

    from . import batch_cli, bench_batch  # their options live with their code

    batch_cli.add_parser(sub)
    bench_batch.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            return _generate(args, parser)
        if args.command == "bench":
            from .bench import run_bench

            return run_bench(args)
        if args.command == "download":
            return _download(args)
        if args.command == "info":
            from .info import run_info

            return run_info(args)
        if args.command == "objects":
            from .objects_cli import run_objects

            return run_objects(args)
        if args.command == "batch":
            from .batch_cli import run as run_batch

            return run_batch(args)
        if args.command == "bench-batch":
            from .bench_batch import run as run_bench_batch

            return run_bench_batch(args)
        if args.command == "make-toy":
            import torch

            from .weights.toy import MEDIUM_TEXT, MEDIUM_VISION, write_checkpoint

            from .bench import BENCH_SIZES

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
    except VlmError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


def _generate(args, parser: argparse.ArgumentParser) -> int:
    from .runtime.engine import Engine
    from .runtime.generate import SamplingParams, TokenEvent

    try:
        params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                                top_p=args.top_p, seed=args.seed, ignore_eos=args.ignore_eos)
    except ValueError as e:
        parser.error(str(e))  # exits 2
    engine = Engine.load(_model_dir(args.model), device=args.device, dtype=args.dtype,
                         cuda_graphs=not args.no_graphs)
    image = engine.prepare_image(args.image)
    text, ids, stats = [], [], None
    for event in engine.stream(image, args.prompt, params):
        if isinstance(event, TokenEvent):
            text.append(event.text)
            if event.token_id is not None:
                ids.append(event.token_id)
            if not args.json:
                sys.stdout.write(event.text)
                sys.stdout.flush()
        else:
            stats = event
    if args.json:
        payload = {"text": "".join(text), "token_ids": ids, "prompt_tokens": stats.prompt_tokens,
                   "ttft_s": round(stats.ttft_s, 6), "decode_tokens_per_s": round(stats.decode_tokens_per_s, 3),
                   "stop_reason": stats.stop_reason}
        if "<loc" in payload["text"]:  # detect / segment: the objects, as `objects --json` lists them
            from .objects_cli import objects_json
            from .runtime.answers import parse_objects
            from .runtime.image import original_size

            payload["objects"] = objects_json(parse_objects(payload["text"], *original_size(image.image)))
        print(json.dumps(payload, ensure_ascii=False))
    else:
        sys.stdout.write("\n")
        print(f"[{stats.generated_tokens} tokens, first after {stats.ttft_s:.2f} s, "
              f"{stats.decode_tokens_per_s:.1f} tokens/s, stopped: {stats.stop_reason}]", file=sys.stderr)
    return 0


def _model_dir(name: str):
    """--model takes a folder or a repo id already in a cache (never downloads on its own)."""
    from .weights.hub import resolve_model

    return resolve_model(name)


def _download(args) -> int:
    from .weights.hub import download

    last = {"line": ""}

    def show(p) -> None:
        width = 30
        frac = p.done / p.total if p.total else 1.0
        eta = f"{p.eta_s / 60:.0f}m{p.eta_s % 60:02.0f}s" if p.eta_s is not None else "--"
        line = (f"\r[{'#' * int(frac * width):<{width}}] {frac:6.1%} {p.done / 1e9:.2f}/{p.total / 1e9:.2f} GB "
                f"{p.bytes_per_s / 1e6:6.1f} MB/s ETA {eta:>7}  {p.filename}")
        if line != last["line"]:
            sys.stderr.write(line.ljust(len(last["line"])))
            sys.stderr.flush()
            last["line"] = line

    path = download(args.repo_id, cache_dir=args.cache_dir, progress=show)
    sys.stderr.write("\n")
    print(path)
    return 0
