"""The GUI thread's longest stalls while a model loads and while a large image opens: a 5 ms timer on the GUI
thread; a gap between its ticks is time the event loop could not run. Each stall over the threshold is printed with
what the window was doing, so a regression points at its cause.

    QT_QPA_PLATFORM=offscreen python scripts/measure_stalls.py MODEL_DIR [--image-mp 50] [--threshold 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class Ticker:
    def __init__(self):
        from PySide6.QtCore import QElapsedTimer, QTimer

        self.gaps: list[tuple[int, int, str]] = []  # (ms since start, gap ms, phase)
        self.phase = ""
        self.clock = QElapsedTimer()
        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(self._tick)
        self.last = 0
        self.clock.start()
        self.timer.start()

    def _tick(self):
        now = self.clock.elapsed()
        self.gaps.append((now, now - self.last, self.phase))
        self.last = now

    def worst(self) -> int:
        return max((g for _, g, _ in self.gaps), default=0)


def spin_until(cond, timeout_s=300):
    from PySide6.QtCore import QEventLoop, QTimer

    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError
        loop = QEventLoop()
        QTimer.singleShot(10, loop.quit)
        loop.exec()


def big_image(megapixels: float) -> Path:
    from PIL import Image

    side = int((megapixels * 1e6) ** 0.5)
    path = Path(tempfile.gettempdir()) / f"pgd-measure-{side}.jpg"
    if not path.exists():
        Image.radial_gradient("L").resize((side, side)).convert("RGB").save(path, quality=90)
    return path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--image-mp", type=float, default=50.0)
    p.add_argument("--threshold", type=int, default=50)
    args = p.parse_args()
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    _app = QApplication.instance() or QApplication([])
    image = big_image(args.image_mp)
    from desktop_app.views.main_window import MainWindow

    store = QSettings(str(Path(tempfile.mkdtemp()) / "s.ini"), QSettings.Format.IniFormat)
    window = MainWindow(model_dir=args.model, settings_store=store)  # the load starts on the first loop turn
    window.show()
    ticker = Ticker()
    ticker.phase = "load model"
    spin_until(lambda: window.engine.ready)
    load_gaps = list(ticker.gaps)
    ticker.gaps.clear()
    ticker.phase = "open image"
    window.open_image(str(image))
    spin_until(lambda: window.image is not None)
    ticker.timer.stop()
    image_gaps = ticker.gaps
    window.close()
    for title, gaps in (("model load", load_gaps), (f"opening a {args.image_mp:g} MP JPEG", image_gaps)):
        worst = max(gaps, key=lambda g: g[1])
        print(f"{title}: longest GUI stall {worst[1]} ms ({worst[2]})")
        for at, gap, phase in gaps:
            if gap > args.threshold:
                print(f"    {gap:4d} ms ending at {at} ms  [{phase}]")


if __name__ == "__main__":
    main()
