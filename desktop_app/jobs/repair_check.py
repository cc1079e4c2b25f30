"""Does an installed model's every file still match its hash? Asked when a downloaded model fails to load, on the
thread pool (hashing a few GB takes seconds): the answer lets the window offer "Repair", which downloads again only
the files that are wrong (vlm_core.weights.hub checks what is there and re-fetches the rest)."""

from __future__ import annotations

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal


class _Signals(QObject):
    done = Signal(str, list)  # snapshot folder, damaged files (relative names)


class RepairCheck(QObject):
    """check(snapshot) -> damaged(snapshot, [file, ...]) when some file fails its hash; nothing when all pass."""

    damaged = Signal(str, list)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._signals = _Signals(self)
        self._signals.done.connect(self._on_done)

    def check(self, snapshot: str) -> None:
        signals = self._signals

        class Job(QRunnable):
            def run(self):
                from vlm_core.weights.hub import damaged_files

                try:
                    bad = damaged_files(snapshot)
                except OSError:  # an unreadable folder: the load failure already says what is wrong
                    bad = []
                signals.done.emit(snapshot, bad)

        QThreadPool.globalInstance().start(Job())

    def _on_done(self, snapshot: str, bad: list) -> None:
        if bad:
            self.damaged.emit(snapshot, bad)
