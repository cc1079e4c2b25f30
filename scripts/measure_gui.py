"""Measure what a person feels: time from launch to the window on screen, and the longest GUI-thread stall while an
answer streams (a 5 ms timer on the GUI thread; a gap between its ticks is time the event loop could not run).

    QT_QPA_PLATFORM=offscreen python scripts/measure_gui.py MODEL_DIR IMAGE [--tokens N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def time_to_window() -> float:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "desktop_app", "--exit-when-shown"], capture_output=True, text=True,
                         timeout=120)
    assert "shown after" in out.stdout, out.stderr
    return float(out.stdout.split("shown after")[1].split()[0]), time.perf_counter() - t0


def stalls(model: str, image: str, tokens: int) -> tuple[float, float, int, float]:
    from PySide6.QtCore import QElapsedTimer, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from desktop_app.views.main_window import MainWindow
    from measure_stalls import spin_until  # its sibling in scripts/ (run as python scripts/measure_gui.py)

    _app = QApplication.instance() or QApplication([])  # held: the app must outlive the window
    store = QSettings(str(Path(tempfile.mkdtemp()) / "s.ini"), QSettings.Format.IniFormat)
    window = MainWindow(model_dir=model, settings_store=store)
    window.show()

    spin_until(lambda: window.engine.ready)
    window.open_image(image)
    spin_until(lambda: window.image is not None)
    window.settings.max_new_tokens = tokens
    gaps, clock = [], QElapsedTimer()
    ticker = QTimer()
    ticker.setInterval(5)
    last = [0]

    def tick():
        now = clock.elapsed()
        gaps.append(now - last[0])
        last[0] = now

    ticker.timeout.connect(tick)
    clock.start()
    ticker.start()
    window.send("", "describe en")  # free text: runs to max tokens unless <eos>
    spin_until(lambda: window.session.current.turns and not window.engine.busy)
    ticker.stop()
    turn = window.session.current.turns[-1]
    window.close()
    return max(gaps), statistics.quantiles(gaps, n=100)[98], turn.stats["generated_tokens"], \
        turn.stats["decode_tokens_per_s"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("image")
    p.add_argument("--tokens", type=int, default=256)
    args = p.parse_args()
    in_app, wall = time_to_window()
    print(f"time to window: {in_app:.3f} s after main() starts, {wall:.2f} s from process launch "
          f"(interpreter start and imports included)")
    worst, p99, n, rate = stalls(args.model, args.image, args.tokens)
    print(f"GUI thread while streaming {n} tokens at {rate:.0f} tokens/s: longest stall {worst} ms, p99 gap {p99:.0f} ms"
          " (timer interval 5 ms)")


if __name__ == "__main__":
    main()
