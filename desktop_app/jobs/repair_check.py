"""Does an installed model's every file still match its hash? Asked when a downloaded model fails to load, and from
the Models dialog's "Check files", on the thread pool (hashing a few GB takes seconds): the answer lets the window
offer "Repair", which downloads again only the files that are wrong (vlm_core.weights.hub checks what is there and
re-fetches the rest).

GUI thread                       thread pool
RepairCheck.check(snapshot) ───▶ damaged_files ─▶ progressed(snapshot, bytes hashed, bytes in all)  (per mille)
                                                ─▶ checked(snapshot, [damaged file, ...]), and damaged(...) if any
                                                 | errored(snapshot, message): the folder could not be read
RepairCheck.cancel()             stops within one 8 MB chunk ─▶ aborted(snapshot)
"""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal


class _Signals(QObject):
    progressed = Signal(int, object, object)  # check number, bytes hashed, bytes in all (may pass 2**31)
    finished = Signal(int, object, str)  # check number, (damaged, unchecked) or None (stopped or failed), the error


class _Stopped(Exception):
    pass


class RepairCheck(QObject):
    """check(snapshot) -> checked(snapshot, [file, ...]): [] when every file passes. One check at a time: a new
    one stops the one before."""

    damaged = Signal(str, list)  # only when some file fails its hash
    checked = Signal(str, list, list)  # damaged files, and copies that have no checksum to compare with
    progressed = Signal(str, object, object)
    errored = Signal(str, str)
    aborted = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._signals = _Signals(self)
        self._signals.progressed.connect(self._on_progress)
        self._signals.finished.connect(self._on_finished)
        self._stop = threading.Event()
        self._number = 0  # of the latest check: what an earlier, stopped one still says is ignored
        self.running = ""  # the snapshot being checked

    def check(self, snapshot: str) -> None:
        self._stop.set()
        stop = self._stop = threading.Event()
        self._number += 1
        number, self.running = self._number, snapshot
        signals = self._signals

        class Job(QRunnable):
            def run(self):
                from vlm_core.weights.hub import damaged_files, unchecked_files

                last = -1

                def progress(done: int, total: int) -> None:
                    nonlocal last
                    if stop.is_set():
                        raise _Stopped
                    if (per_mille := done * 1000 // max(total, 1)) != last:  # a few hundred signals, not 750/GB
                        last = per_mille
                        try:
                            signals.progressed.emit(number, done, total)
                        except RuntimeError:  # whoever asked is gone (see below): stop hashing for nobody
                            raise _Stopped from None

                try:
                    bad, error = (damaged_files(snapshot, progress), unchecked_files(snapshot)), ""
                except _Stopped:
                    bad, error = None, ""
                except OSError as e:  # an unreadable folder
                    bad, error = None, f"{type(e).__name__}: {e}"
                try:
                    signals.finished.emit(number, bad, error)
                except RuntimeError:  # the dialog that asked is gone, and its signals with it: nobody to tell
                    pass

        QThreadPool.globalInstance().start(Job())

    def cancel(self) -> None:
        self._stop.set()

    def _on_progress(self, number: int, done: int, total: int) -> None:
        if number == self._number and self.running:
            self.progressed.emit(self.running, done, total)

    def _on_finished(self, number: int, result: tuple | None, error: str) -> None:
        if number != self._number:  # a check stopped by a newer one
            return
        snapshot, self.running = self.running, ""
        if error:
            self.errored.emit(snapshot, error)
        elif result is None:
            self.aborted.emit(snapshot)
        else:
            bad, unchecked = result
            self.checked.emit(snapshot, bad, unchecked)
            if bad:
                self.damaged.emit(snapshot, bad)
