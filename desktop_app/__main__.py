"""Start PaliGemma Desktop: `paligemma-desktop [IMAGE] [--model DIR]` or `python -m desktop_app ...`.

The window is shown before anything imports torch; the engine worker imports it on its own thread.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

_T0 = time.perf_counter()


def build_parser() -> argparse.ArgumentParser:
    from . import APP_NAME

    p = argparse.ArgumentParser(prog="paligemma-desktop", description=f"{APP_NAME}: talk about an image with PaliGemma 2.")
    p.add_argument("image", nargs="?", help="an image to open")
    p.add_argument("--model", help="a PaliGemma 2 model folder (config.json, tokenizer.model, *.safetensors)")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--self-test", nargs="?", const="", metavar="MODEL",
                   help="load MODEL (a folder or repo id; default: the installed default model), answer one prompt "
                        "about a built-in picture, print the answer and timings, and exit; needs no screen")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="for --self-test")
    p.add_argument("--exit-when-shown", action="store_true", help=argparse.SUPPRESS)  # startup measurement
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        from vlm_core import __version__

        print(f"paligemma-desktop {__version__}")
        return 0
    if args.self_test is not None:
        from .self_test import run_self_test

        return run_self_test(args.self_test or None, device=args.device)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from . import APP_ID, APP_NAME, ORG_NAME

    app = QApplication(sys.argv[:1])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(ORG_NAME)
    app.setDesktopFileName(APP_ID)

    from .views.main_window import MainWindow

    window = MainWindow(model_dir=args.model)
    window.show()
    if args.image:
        window.open_image(args.image)
    if args.exit_when_shown:
        def report():
            print(f"shown after {time.perf_counter() - _T0:.3f} s (torch imported: {'torch' in sys.modules})",
                  flush=True)
            window.close()
        QTimer.singleShot(0, report)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
