"""Command line: `python -m vlm_core COMMAND`, one module per command in this package.

Exit codes: 0 success, 1 an error the user can act on (one line on stderr, no traceback unless --debug),
2 bad usage, 130 interrupted.

Each command module has `add_parser(sub)` and `run(args, parser)` (the parser, for usage errors that argparse
cannot see). Commands import `common` and the floors below (runtime, weights, model), never each other; this file only
builds the parser and dispatches, importing a command's heavy dependencies only when that command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import VlmError

# command name -> module in this package, in the order `--help` lists them
COMMANDS = {
    "generate": "generate",
    "bench": "bench",
    "download": "download",
    "info": "info",
    "objects": "objects",
    "make-toy": "make_toy",
    "batch": "batch",
    "bench-batch": "bench_batch",
    "serve": "serve",
    "quantize": "quantize",
}


def _module(command: str):
    return importlib.import_module(f"{__name__}.{COMMANDS[command]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vlm_core", description="PaliGemma 2, locally.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        _module(command).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _module(args.command).run(args, parser)
    except VlmError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
