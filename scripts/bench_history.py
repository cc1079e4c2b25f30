"""How the window's start-up and the History search scale with the size of the history.

    QT_QPA_PLATFORM=offscreen python scripts/bench_history.py [--sizes 0 10000] [--runs 3]

First the floor this machine sets, whatever the app does: the interpreter alone (`python -c` printing one line), and a bare
PySide6 window (import, QApplication, an empty QMainWindow shown). For each size it then builds a history of that
many conversations (one stored image, one turn each; every fifth answer says "tabby") in a private data folder, and
measures:
- launch to window shown: from starting `python -m desktop_app --exit-when-shown` on that history to the line it
  prints once the window is shown, median of --runs after one untimed run (which writes the .pyc files an installed
  app has: PYTHONDONTWRITEBYTECODE is dropped), with the app's own breakdown of that run (seconds after its first
  line: Qt imported, our window module imported, the window built) and whether torch, numpy or Pillow were loaded;
- launch to the first rows of the History list, in-process (the list arrives from the history thread);
- the GUI thread's time per search keystroke: the key itself and the handling of the result it brings (typing
  "tabby" key by key, waiting for each result), the worst of all keys; and the history thread's time per search.
Figures are printed, not asserted: they depend on the machine (the load average is printed with them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(data_home: Path, n: int, photo: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from desktop_app.history.store import HistoryStore

    s = HistoryStore.open(data_home / "paligemma-desktop" / "history")
    sha = s.add_image(photo.read_bytes(), photo.suffix)
    t0 = time.time() - n
    with s.conn:
        for i in range(n):
            cid = s.conn.execute("INSERT INTO conversations (image_key, image_sha256, name, created, updated) "
                                 "VALUES (?, ?, ?, ?, ?)", (f"k{i}", sha, f"photo-{i:05d}.jpg", t0 + i, t0 + i)
                                 ).lastrowid
            answer = "a tabby cat on a sofa" if i % 5 == 0 else f"a street scene number {i} with cars"
            s.conn.execute("INSERT INTO turns (conversation_id, position, prompt, answer, state, created, updated) "
                           "VALUES (?, 0, 'caption en', ?, 'done', ?, ?)", (cid, answer, t0 + i, t0 + i))
    s.close()


BARE_WINDOW = """import sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication(sys.argv[:1]); w = QMainWindow(); w.resize(1280, 800); w.menuBar().addMenu("File"); w.show()
QTimer.singleShot(0, lambda: (print("shown after", flush=True), w.close()))
app.exec()
"""


def launch(args: list[str], env: dict) -> tuple[float, str]:
    """(seconds from starting the process to its "shown after" line, that line); the exit is not timed."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=ROOT)  # one pipe, read as it comes: the log can never fill it and stall
    seen = []
    for line in proc.stdout:
        if line.startswith("shown after"):
            elapsed = time.perf_counter() - t0
            break
        seen.append(line)
    else:
        raise AssertionError("".join(seen)[-2000:])
    proc.communicate(timeout=120)
    return elapsed, line.strip()


def median_launch(args: list[str], env: dict, runs: int) -> tuple[float, list[float], str]:
    launch(args, env)  # untimed: writes the .pyc files, warms the disk cache
    timed = [launch(args, env) for _ in range(runs)]
    seconds = [t for t, _ in timed]
    return statistics.median(seconds), seconds, min(timed)[1]


def floor(env: dict, runs: int) -> None:
    python = statistics.median(launch(["-c", "print('shown after')"], env)[0] for _ in range(runs))
    bare, _, _ = median_launch(["-c", BARE_WINDOW], env, runs)
    print(f"floor: interpreter alone {python:.3f} s; a bare PySide6 window {bare:.3f} s (medians of {runs})")


def in_process(n: int) -> tuple[float, float, float]:
    """(launch to the first rows, worst GUI-thread ms per search keystroke, worst history-thread ms per search)."""
    from PySide6.QtCore import QEventLoop, QSettings
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from desktop_app.views.main_window import MainWindow

    app = QApplication.instance() or QApplication([])

    def spin_until(cond, timeout=30.0):
        end = time.perf_counter() + timeout
        while not cond() and time.perf_counter() < end:
            app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 5)

    t0 = time.perf_counter()
    w = MainWindow(model_dir="", settings_store=QSettings(str(Path(tempfile.mkdtemp()) / "s.ini"),
                                                          QSettings.Format.IniFormat))
    w.show()
    panel = w.history_panel
    spin_until(lambda: panel.model.rowCount() > 0 or (n == 0 and panel.status.text()))
    first_rows = time.perf_counter() - t0

    gui_ms, worker_ms = [], []
    model = panel.model
    handle = model._on_listed

    def timed(seq, page):
        t = time.perf_counter()
        handle(seq, page)
        gui_ms.append((time.perf_counter() - t) * 1000)

    model.client.worker.listed.disconnect(handle)
    model.client.worker.listed.connect(timed)
    worker = model.client.worker
    for ch in "tabby":
        t = time.perf_counter()
        QTest.keyClick(panel.search, ch)
        gui_ms.append((time.perf_counter() - t) * 1000)
        before = len(gui_ms)
        spin_until(lambda: len(gui_ms) > before and not model._fetching)
    t = time.perf_counter()  # the history thread's work for that search and its first page, timed on its own
    found = worker.store.search("tabby")
    worker.store.summaries_for(found[:100])
    worker_ms.append((time.perf_counter() - t) * 1000)
    print(f"    search 'tabby': {model.total:,} matches listed, {len(found):,} found")
    w.close()
    return first_rows, max(gui_ms), max(worker_ms)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[0, 10_000])
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed app has its .pyc files
    sys.path.insert(0, str(ROOT))
    import skimage

    print(f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    floor(dict(os.environ), args.runs)
    photo = Path(skimage.__file__).parent / "data" / "chelsea.png"
    for n in args.sizes:
        home = Path(tempfile.mkdtemp(prefix=f"bench-history-{n}-"))
        build(home / "data", n, photo)
        os.environ.update(XDG_DATA_HOME=str(home / "data"), XDG_CONFIG_HOME=str(home / "config"))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        shown, each, fastest = median_launch(["-m", "desktop_app", "--exit-when-shown"], env, args.runs)
        print(f"{n:>6,} conversations: launch to window {shown:.3f} s "
              f"(median of {args.runs}: {', '.join(f'{s:.3f}' for s in each)})")
        print(f"    the fastest run, from the app's first line: {fastest}")
        first_rows, gui, worker = in_process(n)
        print(f"    window to the first History rows (in-process): {first_rows:.3f} s")
        print(f"    per search keystroke: GUI thread at most {gui:.1f} ms; history thread at most {worker:.1f} ms")


if __name__ == "__main__":
    main()
