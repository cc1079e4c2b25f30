"""Drive the real app on a virtual screen and save screenshots of each stage (for the README and for review).

    xvfb-run -s "-screen 0 1400x900x24" python scripts/screenshots.py MODEL_DIR IMAGE OUT_DIR [WIDTHxHEIGHT]
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QEventLoop, QSettings, QTimer
from PySide6.QtWidgets import QApplication

from desktop_app.views.main_window import MainWindow


def wait_until(app, condition, timeout_s=60.0):
    for _ in range(int(timeout_s * 50)):
        if condition():
            return
        settle(app, 20)
    raise TimeoutError("condition not met")


def settle(app, ms=300):
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def main(model_dir: str, image: str, out: str) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    app = QApplication(sys.argv[:1])
    store = QSettings(str(out_dir / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(model_dir=model_dir, settings_store=store)
    window.resize(*(int(v) for v in (sys.argv[4:5] or ["1280x780"])[0].split("x")))
    window.show()
    settle(app, 200)
    window.grab().save(str(out_dir / "1-empty.png"))
    wait_until(app, lambda: window.engine.ready)
    window.open_image(image)
    wait_until(app, lambda: window.image is not None)
    settle(app)
    window.grab().save(str(out_dir / "2-image.png"))
    window.settings.max_new_tokens = 40
    window.send("caption", "")
    wait_until(app, lambda: not window.engine.busy)
    window.send("answer", "what is the cat looking at?")
    wait_until(app, lambda: not window.engine.busy)
    settle(app)
    window.grab().save(str(out_dir / "3-answers.png"))
    window.send("detect", "cat ; ear")
    wait_until(app, lambda: not window.engine.busy)
    turn = window.session.current.turns[-1]
    # The toy model's weights are random, so feed the kind of answer a real checkpoint gives for this photo.
    window._requests[10_000] = (turn.id, window.image.key)
    turn.latest.text = ""
    window._on_token(10_000, "<loc0030><loc0110><loc1000><loc0800> cat ; <loc0040><loc0180><loc0300><loc0390> ear"
                             " ; <loc0060><loc0560><loc0330><loc0760> ear")
    window._on_finished(10_000, turn.stats)
    settle(app)
    window.grab().save(str(out_dir / "4-boxes.png"))
    window.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])  # optional 4th argument: the window size, e.g. 800x600
