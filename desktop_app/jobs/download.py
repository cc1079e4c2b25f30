"""Model downloads and token checks, off the GUI thread.

A download runs on a QThread of its own (the engine thread stays free to answer questions about the current model);
it reports plain data (dicts) and ends with exactly one of finished(path), failed(kind, message), cancelled().
Cancel is a threading.Event the download checks after every chunk it writes.
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, Signal, Slot


class _DownloadWorker(QObject):
    progress = Signal(dict)
    finished = Signal(str)
    failed = Signal(str, str)  # kind, message
    cancelled = Signal()

    def __init__(self, repo_id: str, cache_dir: str, cancel: threading.Event):
        super().__init__()
        self.repo_id, self.cache_dir, self._cancel = repo_id, cache_dir, cancel

    @Slot()
    def run(self) -> None:
        from vlm_core.weights import hub, store

        try:
            path = store.download(self.repo_id, cache_dir=Path(self.cache_dir),
                                  progress=lambda p: self.progress.emit(asdict(p)), should_stop=self._cancel.is_set)
        except hub.DownloadCancelled:
            self.cancelled.emit()
        except hub.HubError as e:
            self.failed.emit(e.kind, str(e))
        except Exception as e:  # noqa: BLE001 - never a dead thread; explain() keeps the token out
            err = hub.explain(e, self.repo_id)
            self.failed.emit(err.kind, str(err))
        else:
            self.finished.emit(str(path))


class DownloadJob(QObject):
    """One download. The GUI connects to the signals below (re-emitted on the GUI thread)."""

    progress = Signal(dict)
    finished = Signal(str)
    failed = Signal(str, str)
    cancelled = Signal()

    def __init__(self, repo_id: str, cache_dir: str, parent: QObject | None = None):
        super().__init__(parent)
        self.repo_id = repo_id
        self._cancel = threading.Event()
        self._thread = QThread()
        self._thread.setObjectName(f"download {repo_id}")
        self._worker = _DownloadWorker(repo_id, cache_dir, self._cancel)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        self._worker.progress.connect(self.progress)
        self._worker.finished.connect(self._on_finished)
        self._worker.failed.connect(self._on_failed)
        self._worker.cancelled.connect(self._on_cancelled)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def running(self) -> bool:
        return self._thread.isRunning()

    def wait(self) -> None:
        """Cancel and wait: used when the window closes mid-download (the partial file is kept for next time)."""
        self.cancel()
        self._thread.quit()
        self._thread.wait()

    def _stop_thread(self) -> None:
        self._thread.quit()
        self._thread.wait()

    def _on_finished(self, path: str) -> None:
        self._stop_thread()
        self.finished.emit(path)

    def _on_failed(self, kind: str, message: str) -> None:
        self._stop_thread()
        self.failed.emit(kind, message)

    def _on_cancelled(self) -> None:
        self._stop_thread()
        self.cancelled.emit()


class _TokenSignals(QObject):
    done = Signal(str, str, str)  # user name or "", error kind or "", message


class TokenCheck(QObject):
    """Validate and save a pasted token in the background (it is a network call)."""

    succeeded = Signal(str)  # user name
    failed = Signal(str, str)  # kind, message

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._signals = _TokenSignals(self)
        self._signals.done.connect(self._on_done)

    def check(self, token: str) -> None:
        signals = self._signals

        class Job(QRunnable):
            def run(self):
                from vlm_core.weights import hub

                try:
                    signals.done.emit(hub.check_and_save_token(token), "", "")
                except hub.HubError as e:
                    signals.done.emit("", e.kind, str(e))
                except Exception as e:  # noqa: BLE001
                    err = hub.explain(e, None)
                    signals.done.emit("", err.kind, str(err))

        QThreadPool.globalInstance().start(Job())

    def _on_done(self, user: str, kind: str, message: str) -> None:
        if user:
            self.succeeded.emit(user)
        else:
            self.failed.emit(kind, message)


class AccountCheck(QObject):
    """Who a token belongs to (the Hub's whoami), in the background: `named(user)`, or `failed(kind, message)`
    ("invalid_token" when the Hub refuses it; other kinds when it cannot be asked, e.g. offline)."""

    named = Signal(str)
    failed = Signal(str, str)

    def check(self, token: str) -> None:
        # Signals of the job's own: the Settings dialog (and this box) may be closed before the Hub answers,
        # and then the answer goes nowhere instead of to a deleted object.
        signals = _TokenSignals()
        signals.done.connect(self._on_done)

        class Job(QRunnable):
            def run(self):
                from huggingface_hub import HfApi

                from vlm_core.weights import hub

                if hub.is_offline():
                    signals.done.emit("", "offline", "")
                    return
                try:
                    info = HfApi(endpoint=hub.endpoint_url()).whoami(token=token, cache=False)
                    result = (str(info.get("name", "")), "", "")
                except Exception as e:  # noqa: BLE001 - mapped to a kind and a message
                    err = hub.explain(e, None)
                    result = ("", err.kind, str(err))
                try:
                    signals.done.emit(*result)
                except RuntimeError:  # the receiver and its signals are gone
                    pass

        QThreadPool.globalInstance().start(Job())

    def _on_done(self, user: str, kind: str, message: str) -> None:
        if user:
            self.named.emit(user)
        else:
            self.failed.emit(kind, message)
