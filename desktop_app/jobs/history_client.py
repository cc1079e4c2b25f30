"""The GUI thread's handle on the history thread (jobs/history_writer.py): each call is a queued signal to the
worker, so nothing here waits on the disk; `shutdown` is the one call that blocks, until what was queued before it
is written."""

from __future__ import annotations

from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, Signal

from ..history.store import StoredTurn
from .history_writer import EXPORT_KINDS, HistoryWorker


class HistoryClient(QObject):
    """The GUI thread's handle on the history thread: thin forwarding and a clean shutdown."""

    _open = Signal(str)
    _image_opened = Signal(str, str, str, object)
    _adopt = Signal(str, int, object, object)  # dicts with tuple keys: passed as they are
    _save = Signal(str, int, int, object)
    _checkpoint = Signal(int, int, str)
    _list = Signal(int, str, int, int)
    _load = Signal(int, int)
    _delete = Signal(object)
    _undelete = Signal(object)
    _clear_all = Signal()
    _export = Signal(str, object, str)
    _copy_markdown = Signal(object)
    _flush_now = Signal()
    _close = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("history")
        self.worker = HistoryWorker()
        self.worker.moveToThread(self._thread)
        w = self.worker
        for signal, slot in ((self._open, w.open), (self._image_opened, w.image_opened), (self._adopt, w.adopt),
                             (self._save, w.save), (self._checkpoint, w.checkpoint), (self._list, w.list),
                             (self._load, w.load), (self._delete, w.delete), (self._undelete, w.undelete),
                             (self._clear_all, w.clear_all), (self._export, w.export),
                             (self._copy_markdown, w.copy_markdown), (self._flush_now, w.flush_now)):
            signal.connect(slot)
        # Blocking: shutdown returns once every write queued before it is done.
        self._close.connect(w.close, Qt.ConnectionType.BlockingQueuedConnection)
        self._thread.start()
        self._seq = 0
        if (app := QCoreApplication.instance()) is not None:
            app.aboutToQuit.connect(self.shutdown)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def open(self, folder: str) -> None:
        self._open.emit(folder)

    def image_opened(self, key: str, name: str, path: str, pil) -> None:
        self._image_opened.emit(key, name, path, pil)

    def adopt(self, key: str, conversation_id: int, rows: dict, positions: dict) -> None:
        self._adopt.emit(key, conversation_id, rows, positions)

    def save(self, key: str, turn_id: int, index: int, row: StoredTurn) -> None:
        self._save.emit(key, turn_id, index, row)

    def checkpoint(self, turn_id: int, index: int, text: str) -> None:
        self._checkpoint.emit(turn_id, index, text)

    def list(self, query: str = "", offset: int = 0, limit: int = 100) -> int:
        seq = self.next_seq()
        self._list.emit(seq, query, offset, limit)
        return seq

    def load(self, conversation_id: int) -> int:
        seq = self.next_seq()
        self._load.emit(seq, conversation_id)
        return seq

    def delete(self, ids: list[int]) -> None:
        self._delete.emit(list(ids))

    def undelete(self, ids: list[int]) -> None:
        self._undelete.emit(list(ids))

    def clear_all(self) -> None:
        self._clear_all.emit()

    def export(self, kind: str, target: int | str | None, dest: str) -> None:
        """`target`: a conversation id or an image key; None for kind "all"."""
        if kind not in EXPORT_KINDS:
            raise ValueError(f"Unknown export kind: {kind}")
        self._export.emit(kind, target, dest)

    def copy_markdown(self, target: int | str) -> None:
        self._copy_markdown.emit(target)

    def flush_now(self) -> None:
        """Try what waits once more; the answer is the worker's `flushed(waiting, cause)`."""
        self._flush_now.emit()

    def shutdown(self) -> None:
        """Write what is queued, close the store, end the thread: stop → quit() → wait()."""
        if self._thread.isRunning():
            self._close.emit()
            self._thread.quit()
            self._thread.wait()
