"""`python -m vlm_core batch`: one prompt over a folder, a glob or a list of images, or a prompt per image from a
manifest, into JSONL or CSV.

    python -m vlm_core batch --model M --inputs DIR|GLOB|LIST.txt --prompt "caption en" --out results.jsonl \\
        [--batch-size N|auto] [--resume] [--format jsonl|csv] [--device D] [--dtype T] [--max-new-tokens N]
    python -m vlm_core batch --model M --prompts PROMPTS.csv|.jsonl [--inputs ...] [--prompt DEFAULT] --out ...

One record per image and prompt (path, prompt, text, objects, tokens, seconds, error, stop_reason), flushed as it
is written: an image that cannot be read gets its error and the run goes on; a killed run continues with --resume,
skipping every (image, prompt) already in the output. Rows of different prompts run in one batch. The manifest's
format and rules are in runtime/manifest.py; a bad line stops the run before the model loads.
"""

from __future__ import annotations

import argparse
import sys
import time

from .common import add_quant_arg
from ..runtime.batch_io import FORMATS, InputError, ResultWriter, format_for, path_key, read_rows
from ..runtime.manifest import batch_jobs


def batch_size_arg(value: str) -> int | None:
    """'auto' -> None (fit the device's free memory), else a positive int."""
    if value == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"batch size must be at least 1, got {n}")
    return n


def add_parser(sub) -> None:
    p = sub.add_parser("batch", help="run a prompt (or one per image) over many images into a JSONL or CSV file "
                                     "(resumable)")
    p.add_argument("--model", required=True, help="model folder (config.json, tokenizer.model, *.safetensors)")
    p.add_argument("--inputs", help="a folder, a quoted glob ('scans/**/*.png'), a .txt list of paths (one a line) "
                                    "or one image; optional with --prompts (then the manifest's images run)")
    p.add_argument("--prompt", help='every image\'s prompt, or with --prompts the one for images and lines without '
                                    'their own: e.g. "caption en", "ocr", "detect car ; person"')
    p.add_argument("--prompts", metavar="FILE", help="a manifest of per-image prompts: CSV with columns image,prompt "
                                                     "or JSON Lines {\"image\": ..., \"prompt\": ...}; a relative "
                                                     "image is read from the --inputs folder, else the manifest's")
    p.add_argument("--out", required=True, help="results file (.jsonl, or .csv)")
    p.add_argument("--format", choices=FORMATS, default=None, help="default: from --out's extension, else jsonl")
    p.add_argument("--batch-size", type=batch_size_arg, default=None, metavar="N|auto",
                   help="images per batch; auto (default) = the largest that fits free device memory")
    p.add_argument("--resume", action="store_true", help="skip the images already in --out and append the rest")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    add_quant_arg(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")


def run(args, parser: argparse.ArgumentParser) -> int:
    from tqdm import tqdm

    from ..weights.hub import resolve_model
    from ..runtime.batch import BatchRunner
    from ..runtime.engine import Engine
    from ..runtime.generate import SamplingParams

    if args.prompt is None and args.prompts is None:
        parser.error("batch: give --prompt, or --prompts FILE with a prompt per image")
    if args.inputs is None and args.prompts is None:
        parser.error("batch: give --inputs (the images), or --prompts FILE (images and their prompts)")
    fmt = format_for(args.out, args.format)
    jobs, sources = batch_jobs(args.inputs, args.prompts, args.prompt)
    done = _already_done(args, fmt, {prompt for _, prompt in jobs})
    todo = [(path, prompt) for path, prompt in jobs if (path_key(path), prompt) not in done]
    skipped = len(jobs) - len(todo)
    noun = "rows" if args.prompts else "images"
    if skipped:
        print(f"resuming: {skipped} of {len(jobs)} {noun} are already in {args.out}", file=sys.stderr)
    if args.max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if not todo:
        print(f"nothing to do: all {len(jobs)} {noun} are in {args.out}", file=sys.stderr)
        return 0

    engine = Engine.load(resolve_model(args.model), device=args.device, dtype=args.dtype, quant=args.quant)
    _check_fits(engine, {prompt: sources[prompt] for _, prompt in todo}, args.max_new_tokens)
    runner = BatchRunner(engine, args.prompt, SamplingParams(max_new_tokens=args.max_new_tokens), args.batch_size,
                         prompts={prompt for _, prompt in todo})
    how = "auto, from free device memory" if args.batch_size is None else "as asked"
    print(f"{engine.name} on {engine.device_description()} ({str(engine.dtype).removeprefix('torch.')}), "
          f"batch size {runner.batch_size} ({how})", file=sys.stderr)
    errors, t0 = 0, time.perf_counter()
    with ResultWriter(args.out, fmt, resume=args.resume) as writer, \
            tqdm(total=len(jobs), initial=skipped, unit="img", desc="images", file=sys.stderr, smoothing=0.1,
                 disable=args.no_progress, dynamic_ncols=True) as bar:
        for row in runner.run([path for path, _ in todo], prompts=[prompt for _, prompt in todo]):
            writer.write(row)
            errors += row.error is not None
            bar.update(1)
            if errors:
                bar.set_postfix(errors=errors, refresh=False)
    elapsed = time.perf_counter() - t0
    print(f"{len(todo)} {noun} in {elapsed:.1f} s ({len(todo) / elapsed:.2f} images/s), "
          f"{errors} unreadable (their rows carry the error) -> {args.out}", file=sys.stderr)
    return 0


def _check_fits(engine, sources: dict[str, str], max_new_tokens: int) -> None:
    """Refuse, before anything runs, a prompt past the model's context, naming the manifest line it is on."""
    from ..errors import ContextError

    for prompt, where in sources.items():
        try:
            engine.check_fits(len(engine.prompt_ids(prompt)), max_new_tokens)
        except ContextError as e:
            raise InputError(f"{where}: {e}") from None


def _already_done(args, fmt: str, asked: set[str]) -> set[tuple[str, str]]:
    """The (image, prompt) rows --resume skips; refuses a file holding answers to a prompt this run does not ask,
    or to overwrite results silently."""
    from pathlib import Path

    out = Path(args.out)
    if not out.exists() or out.stat().st_size == 0:
        return set()
    if args.resume:
        rows = read_rows(out, fmt)
        if others := {r.prompt for r in rows} - asked:
            other = sorted(others)[0]
            if args.prompts is None:
                raise InputError(f"{out} holds answers to {other!r}, not {args.prompt!r}: "
                                 "give another --out to run a different prompt")
            raise InputError(f"{out} holds answers to {other!r}, which neither {args.prompts} nor --prompt asks: "
                             "give another --out to run different prompts")
        return {(path_key(r.path), r.prompt) for r in rows}
    if not args.overwrite:
        raise InputError(f"{out} already exists: pass --resume to continue it, or --overwrite to start over")
    return set()
