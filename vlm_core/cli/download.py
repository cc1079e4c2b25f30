"""`python -m vlm_core download REPO_ID`: fetch a model (or the mask decoder) into the models folder, resumably."""

from __future__ import annotations

import argparse
import logging
import sys


def add_parser(sub) -> None:
    d = sub.add_parser("download", help="download a PaliGemma 2 model from the Hugging Face Hub (resumable)")
    d.add_argument("repo_id", help="e.g. google/paligemma2-3b-mix-224")
    d.add_argument("--cache-dir", default=None, help="models folder (default: the platform cache directory)")


def run(args, parser: argparse.ArgumentParser) -> int:
    from ..weights.store import download

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

    def end_bar() -> None:
        """Whatever is said next (a retry, the error line) starts on a line of its own; the bar redraws below."""
        if last["line"]:
            sys.stderr.write("\n")
            last["line"] = ""

    class Notices(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            end_bar()
            sys.stderr.write(f"{record.getMessage()}\n")

    hub_log = logging.getLogger("vlm_core.weights")
    handler = Notices(logging.WARNING)
    hub_log.addHandler(handler)
    try:
        path = download(args.repo_id, cache_dir=args.cache_dir, progress=show)
    finally:
        end_bar()
        hub_log.removeHandler(handler)
    print(path)
    return 0
