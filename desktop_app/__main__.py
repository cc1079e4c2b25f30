"""Start PaliGemma Desktop: `paligemma-desktop [IMAGE] [--model DIR] [--device D] [--dtype T]` or
`python -m desktop_app ...`. Qt's own arguments (-style fusion, -platform offscreen, ...) pass through to Qt.
`paligemma-desktop --serve [--model M] [serve options]` runs the local API server with no window (no Qt at all):
the same as `python -m vlm_core serve`, for the packaged executable.

The window is shown before anything imports torch, numpy or Pillow: the engine worker imports torch on its own
thread, the image and history threads numpy and Pillow when they first need them. `--exit-when-shown` prints the
time to the shown window and where it went (scripts/bench_history.py reads it), then closes the window.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

_T0 = time.perf_counter()
_STEPS: dict[str, float] = {}  # start-up step -> seconds after _T0, for --exit-when-shown
HEAVY = ("torch", "numpy", "PIL")  # what the window must not wait for

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
# Qt's standard command-line options (QApplication, QGuiApplication): those that take a value, and flags.
QT_VALUE_OPTIONS = {"style", "stylesheet", "platform", "platformpluginpath", "platformtheme", "plugin", "session",
                    "display", "geometry", "qwindowgeometry", "qwindowicon", "qwindowtitle", "title", "name", "font",
                    "qmljsdebugger", "widgetcount-file"}
QT_FLAGS = {"reverse", "widgetcount", "nograb", "dograb", "sync"}


def split_qt_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(ours, Qt's): `-style fusion`, `-style=fusion` and `--style fusion` go to Qt, the rest to argparse."""
    ours, qt = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.lstrip("-").split("=", 1)[0] if arg.startswith("-") and arg not in ("-", "--") else ""
        if name in QT_VALUE_OPTIONS:
            if "=" in arg or i + 1 == len(argv):
                qt.append(arg)
            else:
                qt += [arg, argv[i + 1]]
                i += 1
        elif name in QT_FLAGS:
            qt.append(arg)
        else:
            ours.append(arg)
        i += 1
    return ours, qt


def build_parser() -> argparse.ArgumentParser:
    from . import APP_NAME

    p = argparse.ArgumentParser(prog="paligemma-desktop", description=f"{APP_NAME}: talk about an image with "
                                "PaliGemma 2. Qt's own options (-style NAME, -platform NAME, ...) are passed to Qt.")
    p.add_argument("image", nargs="?", help="an image to open")
    p.add_argument("--model", help="a PaliGemma 2 model folder (config.json, tokenizer.model, *.safetensors) or "
                   "the repo id of a downloaded one")
    p.add_argument("--device", choices=DEVICE_CHOICES, help="run the model here this time (default: the setting)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, help="precision this time (default: the setting)")
    p.add_argument("--vae", metavar="NPZ", help="the segmentation mask decoder to use instead of the downloaded "
                   "vae-oid.npz (its layout is checked strictly; same as PALIGEMMA_VAE=NPZ)")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--self-test", nargs="?", const="", metavar="MODEL",
                   help="load MODEL (a folder or repo id; default: the installed default model), answer one prompt "
                        "about a built-in picture, print the answer and timings, and exit; needs no screen")
    p.add_argument("--serve", action="store_true", help="run the local API server, no window (options: "
                   "`python -m vlm_core serve --help`; --model defaults to the default model)")
    p.add_argument("--exit-when-shown", action="store_true", help=argparse.SUPPRESS)  # startup measurement
    return p


def use_vae(path: str) -> str | None:
    """--vae: the mask decoder file the objects view (views/objects.py) loads; returns a problem, or None."""
    if not os.path.isfile(path):
        return f"--vae {path}: no such file; pass the path of a vae-oid.npz"
    os.environ["PALIGEMMA_VAE"] = os.path.abspath(path)
    return None


def log_handlers() -> list[logging.Handler]:
    """stderr, and the log file the README names (platform_check.log_path), when it can be written."""
    from .platform_check import log_path

    handlers: list[logging.Handler] = [logging.StreamHandler()]
    try:
        path = log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, encoding="utf-8"))
    except OSError:
        pass
    return handlers


def serve(argv: list[str]) -> int:
    """--serve: the CLI's serve command (its options, errors and exit codes), without importing Qt."""
    from vlm_core.cli import main as cli_main
    from vlm_core.weights.catalog import DEFAULT_REPO

    rest = [a for a in argv if a != "--serve"]
    if not any(a == "--model" or a.startswith("--model=") for a in rest):
        rest += ["--model", DEFAULT_REPO]
    return cli_main(["serve", *rest])


def _step(name: str) -> None:
    _STEPS[name] = time.perf_counter() - _T0


def exit_when_shown(window) -> None:
    """--exit-when-shown: once the event loop runs, print how long the window took, where the time went, the
    process's CPU time so far (all threads; on a busy machine less than the wall time) and which of HEAVY were
    loaded when the window was shown; then close it."""
    from PySide6.QtCore import QTimer

    loaded = [m for m in HEAVY if m in sys.modules]  # now, before the event loop starts the threads' work

    def report():
        steps = ", ".join(f"{k} {v:.3f}" for k, v in _STEPS.items())
        print(f"shown after {time.perf_counter() - _T0:.3f} s ({steps}; CPU {time.process_time():.3f} s; "
              f"{', '.join(HEAVY)} loaded: {', '.join(loaded) or 'none'})",
              flush=True)
        window.close()

    QTimer.singleShot(0, report)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--serve" in argv:
        return serve(argv)
    ours, qt_args = split_qt_args(argv)
    args = build_parser().parse_args(ours)
    if args.version:
        from vlm_core import __version__

        print(f"paligemma-desktop {__version__}")
        return 0
    if args.self_test is not None:  # headless: no Qt at all
        from .self_test import run_self_test

        return run_self_test(args.self_test or None, device=args.device or "auto", dtype=args.dtype or "auto")
    if args.vae and (problem := use_vae(args.vae)):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=log_handlers())
    if not os.environ.get("PGD_PLATFORM_CHECKED"):  # scripts/run_app.sh has checked already
        from .platform_check import check

        if advice := check(argv=qt_args):
            from .platform_check import show_failure

            print(advice, file=sys.stderr)
            show_failure(advice)  # started from a menu, nobody reads stderr: the log file and a notification
            return 1

    _step("arguments, log, platform")
    from PySide6.QtWidgets import QApplication  # noqa: F401 - imported here to time it apart from our modules

    _step("Qt imported")
    from . import APP_ID, APP_NAME, ORG_NAME
    from .open_with import Application

    app = Application(sys.argv[:1] + qt_args)
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(ORG_NAME)
    app.setDesktopFileName(APP_ID)

    _step("application")
    from .views.main_window import MainWindow

    _step("window imported")
    window = MainWindow(model_dir=args.model, device=args.device, dtype=args.dtype)
    _step("window built")
    app.file_opened.connect(window.open_image)  # macOS: Open With and drops on the Dock icon
    window.show()
    if args.exit_when_shown:
        exit_when_shown(window)
    if args.image:
        window.open_image(args.image)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
