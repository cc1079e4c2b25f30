"""The thread that owns the history store: every read and write of history happens here, never on the GUI thread.
The GUI thread talks to it through HistoryClient (jobs/history_client.py).

GUI thread                                    history thread
HistoryClient.open(folder)        ──queued──▶ open         ─▶ opened({folder, read_only, messages})
HistoryClient.image_opened(...)   ──queued──▶ image_opened ─▶ conversation_found(key, Conversation) if it has one
HistoryClient.save(...)           ──queued──▶ save         ─▶ changed | problem(message)
HistoryClient.checkpoint(...)     ──queued──▶ checkpoint   ─▶ problem(message) on failure
HistoryClient.list(query, offset) ──queued──▶ list         ─▶ listed(seq, Page): a page of summaries and the total
HistoryClient.load(seq, id)       ──queued──▶ load         ─▶ loaded(seq, Conversation | None)
HistoryClient.delete/undelete/clear_all, export(kind, id, dest), copy_markdown(id)
HistoryClient.flush_now()         ──queued──▶ flush_now    ─▶ flushed(waiting, cause): a last try at closing
HistoryClient.shutdown()          blocks until the queue before it is written, then ends the thread

One thread and one queue keep the writes in order (a checkpoint never overtakes the row it updates). A write that
cannot land (a full disk; a read-only store while another window holds the history) waits in memory
(history/pending.py) and is retried every RETRY_MS and on every new write, in order, until it lands; `pending` says
how many answers wait, and 0 once they are saved. It never stops the answer being generated. While read-only, the
worker polls every POLL_MS: SQLite's `PRAGMA data_version` tells it the other window saved (the list is refreshed),
and the lock is taken over as soon as the other window is gone. The worker emits plain data (dataclasses, str,
dict) and never touches a widget.
"""

from __future__ import annotations

import io
import logging
import sqlite3
import traceback
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from ..history.pending import PendingWrites, Write
from ..history.rows import Page
from ..history.store import HistoryStore, ReadOnlyError, StoredTurn, describe, is_disk_full

log = logging.getLogger(__name__)

RETRY_MS = 2000  # a full disk is retried this often (and on every new write)
POLL_MS = 1000  # a read-only window looks this often for the writer's changes and for the lock being free

EXPORT_KINDS = ("markdown", "json", "png", "all")


class HistoryWorker(QObject):
    opened = Signal(dict)  # folder ("" in memory), read_only, messages
    problem = Signal(str)  # a write failed; said once until one works again
    recovered = Signal(str)
    conversation_found = Signal(str, object)  # image key, Conversation: an opened image that is in the history
    listed = Signal(int, object)  # request number, Page
    loaded = Signal(int, object)  # request number, Conversation | None
    changed = Signal()  # what the list shows has changed
    deleted = Signal(object)  # [conversation id]: hidden now, undoable
    forgotten = Signal(object)  # [image key] whose conversation was deleted: later answers start a new one
    exported = Signal(str)  # a message saying what was written where
    markdown_ready = Signal(str)
    pending = Signal(int, str)  # answers waiting to be saved, and why ("" once none wait)
    conversation_started = Signal(str, int)  # image key, the conversation now written for it
    flushed = Signal(int, str)  # answers still waiting after flush_now, and why: "read-only", "disk full", or words

    def __init__(self):
        super().__init__()
        self.store: HistoryStore | None = None
        self._images: dict[str, tuple[str, str, object]] = {}  # image key -> (name, path, PIL image) not yet stored
        self._conversations: dict[str, int] = {}  # image key -> conversation id
        self._rows: dict[tuple[int, int], int] = {}  # (chat turn id, version index) -> turn row id
        self._positions: dict[int, int] = {}  # chat turn id -> position in its conversation
        self._turn_conversation: dict[int, int] = {}  # chat turn id -> conversation id
        self._problem = ""
        self._pending = PendingWrites()
        self._search_cache: tuple[str, list] = ("", [])  # the last search's query and every match
        self._waiting, self._reason = 0, ""  # the count and reason last announced
        self._cause = ""  # why the last flush left writes waiting, for the window's question at closing
        self._data_version = None
        self._read_failed = False
        self._retry = QTimer(self)  # children move with the worker to its thread
        self._retry.setInterval(RETRY_MS)
        self._retry.timeout.connect(self._flush)
        self._poll = QTimer(self)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._watch)

    # -- opening ----------------------------------------------------------------------------------------------
    @Slot(str)
    def open(self, folder: str) -> None:
        if self.store is not None:
            self.store.close()
        self._conversations.clear()
        self._rows.clear()
        self._positions.clear()
        self._turn_conversation.clear()
        try:
            self.store = HistoryStore.open(folder or None)
        except Exception as e:  # noqa: BLE001 - the app always starts; history is then in memory
            log.error("history open failed\n%s", "".join(traceback.format_exception(e)))
            self.store = HistoryStore.in_memory([f"History could not be opened ({type(e).__name__}: {e}); this run "
                                                 "keeps it in memory only."])
        s = self.store
        self._data_version = None
        if s.read_only:
            # The version as of the list about to be read: a writer's commit before the first poll still counts.
            try:
                self._data_version = s.data_version()
            except sqlite3.Error:
                self._read_failed = True
            self._poll.start()
        self.opened.emit({"folder": str(s.folder or ""), "read_only": s.read_only, "messages": list(s.messages)})
        self.changed.emit()

    @Slot()
    def close(self) -> None:
        if self.store is not None:
            self._flush()
            if n := len(self._pending):
                log.error("history: %d answer version%s could not be saved before closing and %s lost", n,
                          "s" if n != 1 else "", "are" if n != 1 else "is")
        self._retry.stop()
        self._poll.stop()
        if self.store is not None:
            self.store.close()
            self.store = None

    # -- writing ---------------------------------------------------------------------------------------------------
    @Slot(str, str, str, object)
    def image_opened(self, key: str, name: str, path: str, pil) -> None:
        """Remember the image (it is stored with its first answer, not before) and continue its conversation."""
        self._images[key] = (name, path, pil)
        if self.store is None or key in self._conversations:
            return
        if (cid := self._read(lambda: self.store.conversation_for_image(key))) is not None:
            self._conversations[key] = cid
            if (conv := self._read(lambda: self.store.load(cid))) is not None:
                self.conversation_found.emit(key, conv)

    @Slot(str, int, object, object)
    def adopt(self, key: str, conversation_id: int, rows: dict, positions: dict) -> None:
        """The chat's turn ids for a restored conversation's rows."""
        self._conversations[key] = conversation_id
        self._rows.update(rows)
        self._positions.update(positions)
        self._turn_conversation.update({turn_id: conversation_id for turn_id in positions})

    @Slot(str, int, int, object)
    def save(self, key: str, turn_id: int, index: int, row: StoredTurn) -> None:
        self._pending.save(key, (turn_id, index), row)
        self._flush()

    @Slot(int, int, str)
    def checkpoint(self, turn_id: int, index: int, text: str) -> None:
        self._pending.checkpoint((turn_id, index), text)
        self._flush()

    def _apply(self, w: Write) -> None:
        turn_id, index = w.version
        if w.row is None:
            if (row_id := self._rows.get(w.version)) is not None:
                self.store.checkpoint(row_id, w.text)
            return
        cid = self._conversation(w.key)
        if turn_id not in self._positions:
            self._positions[turn_id] = self.store.next_position(cid)
            self._turn_conversation[turn_id] = cid
        w.row.position = self._positions[turn_id]
        w.row.id = self._rows.get(w.version)
        self._rows[w.version] = self.store.save_turn(cid, w.row)

    @Slot()
    def _flush(self) -> None:
        """Write what waits, in order. A full disk (or any failure SQLite or the OS may recover from) keeps the
        write and what follows it for the next try; a write that can never land is dropped with a message."""
        if self.store is None or not len(self._pending):
            return self._announce_pending("")
        if self.store.read_only and not self._take_over():
            self._cause = "read-only"
            return self._announce_pending("read-only")
        before = len(self._pending)
        failure = self._pending.flush(self._apply, self._retryable)
        self._cause = ("" if failure is None else "disk full" if is_disk_full(failure)
                       else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            self._rollback()
        if failure is not None and not len(self._pending):
            self._report(failure)  # dropped: it can never land
        elif failure is not None and not is_disk_full(failure):
            log.warning("history write will be retried: %s", failure)
        elif failure is None:
            self._problem = ""
        self._announce_pending(describe(failure, self.store.folder or Path("memory"))
                               if failure is not None and len(self._pending) else "")
        if len(self._pending) < before:
            self.changed.emit()

    @Slot()
    def flush_now(self) -> None:
        """The window is closing: try what waits once more, now, and say how many answers still wait."""
        self._flush()
        self.flushed.emit(len(self._pending), self._cause if len(self._pending) else "")

    @staticmethod
    def _retryable(e: BaseException) -> bool:
        return is_disk_full(e) or isinstance(e, (OSError, sqlite3.OperationalError, ReadOnlyError))

    def _announce_pending(self, reason: str) -> None:
        n = len(self._pending)
        if not n:
            self._retry.stop()
        elif not self._retry.isActive():
            self._retry.start()
        if n != self._waiting or (n and reason != self._reason):
            self._waiting, self._reason = n, reason
            self.pending.emit(n, reason)

    def _take_over(self) -> bool:
        if not self.store.try_become_writer():
            return False
        self._poll.stop()
        self.recovered.emit("The other window has closed its history; this window saves answers again.")
        return True

    @Slot()
    def _watch(self) -> None:
        """Read-only: the writer's commits refresh the list; its lock, once free, is taken over."""
        if self.store is None or not self.store.read_only:
            return self._poll.stop()
        if self._take_over():
            self._flush()
            self.changed.emit()
            return
        try:
            version = self.store.data_version()
        except sqlite3.Error:
            return
        if version != self._data_version or self._read_failed:
            self._read_failed = False
            self._data_version = version
            self.changed.emit()

    def _conversation(self, key: str) -> int:
        if (cid := self._conversations.get(key)) is not None:
            return cid
        name, path, pil = self._images[key]
        data, suffix = _image_bytes(path, pil)
        sha = self.store.add_image(data, suffix)
        cid = self._conversations[key] = self.store.ensure_conversation(key, sha, name)
        self.conversation_started.emit(key, cid)
        return cid

    def _write(self, fn) -> bool:
        """A delete or undo: done at once (after what waits), or refused with a message."""
        if self.store is None:
            return False
        self._flush()
        if self.store.read_only and not self._take_over():
            self.problem.emit("History is read-only in this window while another window has it open.")
            return False
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a failed write is a message; generation goes on
            self._rollback()
            self._report(e)
            return False
        return True

    def _report(self, e: BaseException) -> None:
        if not is_disk_full(e):
            log.error("history write failed\n%s", "".join(traceback.format_exception(e)))
        message = describe(e, self.store.folder or Path("memory"))
        if message != self._problem:
            self._problem = message
            self.problem.emit(message)

    def _rollback(self) -> None:
        try:
            self.store.conn.rollback()
        except Exception:  # noqa: BLE001 - nothing to roll back
            pass

    def _read(self, fn):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - a read that fails shows an empty result and says why
            log.error("history read failed\n%s", "".join(traceback.format_exception(e)))
            self._read_failed = True  # a read-only window reads again at its next poll
            self.problem.emit(f"History could not be read ({type(e).__name__}: {e}).")
            return None

    # -- reading, deleting ---------------------------------------------------------------------------------------
    @Slot(int, str, int, int)
    def list(self, seq: int, query: str, offset: int, limit: int) -> None:
        """A page of the list, newest first. A search runs once per query and store state; its later pages are
        sliced from that result, so scrolling through 2,000 matches searches once."""
        page = Page(query, 0, offset, [])
        if self.store is not None:
            def read():
                if not query.strip():
                    return Page(query, self.store.count_conversations(), offset,
                                self.store.list_conversations("", offset, limit))
                if offset == 0 or self._search_cache[0] != query:
                    self._search_cache = (query, self.store.search(query))
                found = self._search_cache[1]
                return Page(query, len(found), offset, self.store.summaries_for(found[offset:offset + limit]))
            page = self._read(read) or page
        self.listed.emit(seq, page)

    @Slot(int, int)
    def load(self, seq: int, conversation_id: int) -> None:
        conv = self._read(lambda: self.store.load(conversation_id)) if self.store else None
        self.loaded.emit(seq, conv)

    @Slot(object)
    def delete(self, ids: list) -> None:
        if self._write(lambda: self.store.delete(ids)):
            self._forget(ids)
            self.deleted.emit(list(ids))
            self.changed.emit()

    @Slot(object)
    def undelete(self, ids: list) -> None:
        if self._write(lambda: self.store.undelete(ids)):
            self.changed.emit()

    @Slot()
    def clear_all(self) -> None:
        ids: list[int] = []
        if self._write(lambda: ids.extend(self.store.clear_all())):
            self._forget(ids)
            self.deleted.emit(ids)
            self.changed.emit()

    def _forget(self, ids: list) -> None:
        """Nothing more is written into a deleted conversation: its image starts a new one if it is asked about
        again, and the window is told which images those are."""
        gone = set(ids)
        keys = [key for key, cid in self._conversations.items() if cid in gone]
        for key in keys:
            del self._conversations[key]
        turn_ids = [t for t, cid in self._turn_conversation.items() if cid in gone]
        self._pending.drop(set(keys), set(turn_ids))
        self._announce_pending(self._reason)
        for turn_id in turn_ids:
            del self._turn_conversation[turn_id]
            self._positions.pop(turn_id, None)
            for k in [k for k in self._rows if k[0] == turn_id]:
                del self._rows[k]
        if keys:
            self.forgotten.emit(keys)

    # -- exporting -------------------------------------------------------------------------------------------------
    @Slot(str, object, str)
    def export(self, kind: str, target, dest: str) -> None:
        """`target`: a conversation id, or an image key (the window's current image)."""
        from ..history import export  # numpy and Pillow: imported here, at the first export, not before the window

        if self.store is None:
            self.problem.emit("History is off, so there is nothing to export. Turn it on in the History panel.")
            return
        try:
            if kind == "all":
                n = export.export_all(self.store, dest)
                self.exported.emit(f"Exported {n} conversation{'s' if n != 1 else ''} to {dest}.")
                return
            conv = self._conversation_for(target)
            if kind == "markdown":
                paths = export.export_markdown(conv, dest)
            elif kind == "json":
                paths = export.export_json(conv, dest)
            elif kind == "png":
                paths = [export.export_annotated_png(conv, dest)]
            else:
                raise ValueError(f"Unknown export kind: {kind}")
            self.exported.emit(f"Exported to {paths[0]}" + (f" (and {len(paths) - 1} image file"
                                                             f"{'s' if len(paths) > 2 else ''} beside it)."
                                                             if len(paths) > 1 else "."))
        except export.ExportError as e:
            self.problem.emit(str(e))
        except Exception as e:  # noqa: BLE001
            log.error("export failed\n%s", "".join(traceback.format_exception(e)))
            self.problem.emit(f"The export failed ({type(e).__name__}: {e}).")

    @Slot(object)
    def copy_markdown(self, target) -> None:
        from ..history import export

        try:
            self.markdown_ready.emit(export.clipboard_markdown(self._conversation_for(target)))
        except export.ExportError as e:
            self.problem.emit(str(e))

    def _conversation_for(self, target):
        from ..history import export

        if self.store is None:
            raise export.ExportError("History is off, so there is nothing to export.")
        if isinstance(target, str):
            target = self._conversations.get(target) or self.store.conversation_for_image(target)
        conv = self.store.load(target) if target is not None else None
        if conv is None:
            raise export.ExportError("Nothing to export yet: this image has no saved answers. Ask something about "
                                     "it first (and keep history on).")
        return conv


def _image_bytes(path: str, pil) -> tuple[bytes, str]:
    """The original file when there is one (the copy is the file as it was opened), else the pixels as PNG."""
    if path:
        try:
            return Path(path).read_bytes(), Path(path).suffix or ".img"
        except OSError:
            pass  # moved or deleted since it was opened: keep the decoded pixels instead
    buf = io.BytesIO()
    pil.save(buf, "PNG")
    return buf.getvalue(), ".png"
