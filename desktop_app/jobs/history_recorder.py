"""Keeps the history in step with the window's conversations, and puts stored ones back into the window.

It watches rather than being called from every handler: when an answer starts or ends, when the card shows another
version, and every CHECKPOINT_MS while anything is being written, it compares each version with what it last sent
(`records.fingerprint`) and sends a full row or, for text that merely grew, a checkpoint. Everything goes to the
history thread (jobs/history_writer.py); nothing here touches the disk. A process killed mid-answer therefore loses
at most the last CHECKPOINT_MS of that answer.

Settings (QSettings, under `history/`): `enabled` ("Don't keep history" is enabled=false: nothing is stored, not
even an empty database) and `folder` (empty: the platform's user data directory).
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, QTimer, Signal

from ..conversation import STREAMING, WAITING, ImageEntry
from ..history import records
from ..history.store import DB_NAME, Conversation, default_folder
from .history_client import HistoryClient

CHECKPOINT_MS = 2000
NOTICE_CAUSE = "history"


def history_enabled(settings: QSettings) -> bool:
    return str(settings.value("history/enabled", "true")).lower() not in ("false", "0", "no")


def history_folder(settings: QSettings) -> str:
    return str(settings.value("history/folder", "") or "")


def model_description(model_info: dict | None, model_dir: str) -> dict:
    """What a turn records about the model: its repo id when it came from a models folder, else the folder."""
    info = model_info or {}
    repo = next((p for p in Path(model_dir).parts if p.startswith("models--")), "") if model_dir else ""
    return {"name": info.get("name", Path(model_dir).name if model_dir else ""),
            "repo_id": repo.removeprefix("models--").replace("--", "/", 1), "folder": model_dir,
            "dtype": info.get("dtype", ""), "device": info.get("device", "")}


class HistoryRecorder(QObject):
    """Owns the HistoryClient. `window` is the MainWindow: its session, current image, model info, settings, chat,
    notice, and `open_image` / `refresh_conversation`."""

    state_changed = Signal()  # enabled, folder or read-only changed: the panel shows it
    messages = Signal(str, bool)  # text, is_error: the window's banner says it

    def __init__(self, window, settings: QSettings):
        super().__init__(window)
        self.window = window
        self.settings = settings
        self.client = HistoryClient(self)
        self.enabled = history_enabled(settings)
        self.folder = history_folder(settings)
        self.open_folder = ""  # where the store is actually open ("" in memory)
        self.read_only = False
        self.is_open = False
        self.waiting = 0  # answers the history thread holds until it can write them
        self._sent: dict[tuple[int, int], tuple] = {}  # (turn id, version) -> fingerprint last sent
        self._meta: dict[tuple[int, int], tuple[dict, dict, float]] = {}  # -> (model, sampling, created)
        self._skip: set[tuple[int, int]] = set()  # versions made while history was off: never stored
        self._announced: set[str] = set()  # image keys the history thread knows
        self._conversation_ids: dict[str, int] = {}  # image key -> the stored conversation its session entry holds
        self._timer = QTimer(self)
        self._timer.setInterval(CHECKPOINT_MS)
        self._timer.timeout.connect(self.sync)

        w = self.client.worker
        w.opened.connect(self._on_opened)
        w.problem.connect(self._on_problem)
        w.recovered.connect(self._on_recovered)
        w.conversation_found.connect(self._on_conversation_found)
        w.pending.connect(self._on_pending)
        w.conversation_started.connect(self._on_conversation_started)
        w.forgotten.connect(self._on_forgotten)
        # Connected after the window's own slots, so the version's state is already updated when these run.
        window.engine.worker.started.connect(self._on_answer_started)
        window.answer_done.connect(self._on_answer_done)
        window.image_shown.connect(self._on_image_shown)
        window.chat.version_shown.connect(self._on_version_shown)
        if (objects := getattr(window, "objects", None)) is not None:  # views/objects.py decodes masks later
            objects.decoding.decoded.connect(self._on_masks_decoded)
        self.loaded = w.loaded
        self.flushed = w.flushed  # (still waiting, cause): the answer to flush_now
        self.pending = w.pending  # (waiting, reason): slots connected to it run after _on_pending has counted
        if self.enabled or (Path(self.folder or default_folder()) / DB_NAME).exists():
            self._open()

    # -- the store ----------------------------------------------------------------------------------------------
    def _open(self) -> None:
        self._sent.clear()
        self._announced.clear()
        self.is_open = True
        self.client.open(self.folder)

    def _on_opened(self, info: dict) -> None:
        self.open_folder, self.read_only = info["folder"], info["read_only"]
        for message in info["messages"]:  # a damaged file, another window, a folder that cannot be written
            self.messages.emit(message, True)
        if self.enabled:
            if self.window.image is not None:
                self._on_image_shown(self.window.image.key)
            self.sync()
        self.state_changed.emit()

    def set_enabled(self, enabled: bool) -> None:
        """"Don't keep history" is set_enabled(False): from now on nothing is stored; what is stored stays
        (Clear all removes it). Answers given while it was off are not stored when it is turned back on."""
        if enabled == self.enabled:
            return
        self.enabled = enabled
        self.settings.setValue("history/enabled", enabled)
        if enabled:
            self._skip |= {(t.id, i) for e in self.window.session.entries.values() for t in e.turns
                           for i in range(len(t.versions))}
            if not self.is_open:
                self._open()
            elif self.window.image is not None:
                self._on_image_shown(self.window.image.key)
        else:
            self._timer.stop()
        self.state_changed.emit()

    def set_folder(self, folder: str) -> None:
        """Move to another history folder (empty: the default). This run's conversations are saved there too."""
        self.folder = folder
        self.settings.setValue("history/folder", folder)
        self._conversation_ids.clear()
        if self.enabled or (Path(folder or default_folder()) / DB_NAME).exists():
            self._open()
        self.state_changed.emit()

    def _on_problem(self, message: str) -> None:
        self.messages.emit(message, True)

    def _on_recovered(self, message: str) -> None:
        self.read_only = False
        self.messages.emit(message, False)
        self.state_changed.emit()

    def _on_forgotten(self, keys: list) -> None:
        """Those images' conversations were deleted: their turns leave the window (the image stays), and a new
        question about them starts a new conversation."""
        for key in keys:
            self._conversation_ids.pop(key, None)
            if (entry := self.window.session.entries.get(key)) is not None:
                self._skip |= {(t.id, i) for t in entry.turns for i in range(len(t.versions))}
                entry.turns.clear()
                if self.window.session.current_key == key:
                    self.window.refresh_conversation()

    def _on_conversation_started(self, key: str, conversation_id: int) -> None:
        self._conversation_ids[key] = conversation_id

    def _on_pending(self, count: int, reason: str) -> None:
        """The banner says how many answers wait to be saved, and goes once they are."""
        self.waiting = count
        if count and reason and reason != "read-only":
            self.messages.emit(f"{count} answer{'s are' if count != 1 else ' is'} waiting to be saved. {reason} "
                               "Waiting answers are saved as soon as that works again.", True)
        elif not count and self.window.notice.cause == NOTICE_CAUSE and self.window.notice.kind == "error":
            self.window.notice.clear(NOTICE_CAUSE)
            self.messages.emit("Every answer is saved.", False)

    # -- watching the window --------------------------------------------------------------------------------------
    def _announce(self, key: str) -> None:
        image = self.window.image
        if image is not None and image.key == key:
            # A file's bytes are read on the history thread; only pasted data needs the pixels kept.
            self.client.image_opened(key, image.name, image.path, None if image.path else image.pil)
            self._announced.add(key)

    def _on_image_shown(self, key: str) -> None:
        if self.enabled and self.is_open and key not in self._announced:
            self._announce(key)

    def _on_answer_started(self, *_):
        if self.enabled:
            QTimer.singleShot(0, self.sync)  # after the window has marked the version as streaming
            self._timer.start()

    def _on_answer_done(self, *_):
        self.sync()

    def _on_version_shown(self, *_):
        self.sync()

    def _on_masks_decoded(self, *_):
        QTimer.singleShot(0, self.sync)  # after the objects view has put the masks on the version

    def sync(self) -> None:
        """Send what changed since the last call: new or finished versions in full, grown text as a checkpoint."""
        if not (self.enabled and self.is_open):
            return
        live = False
        model = sampling = None
        for key, entry in self.window.session.entries.items():
            if key not in self._announced:
                continue
            for turn in entry.turns:
                for i, version in enumerate(turn.versions):
                    k = (turn.id, i)
                    if version.state == WAITING or k in self._skip:
                        continue
                    live |= version.state == STREAMING
                    fp = records.fingerprint(turn, i)
                    last = self._sent.get(k)
                    if last == fp:
                        continue
                    if last is not None and last[0] == fp[0] == STREAMING and last[2:] == fp[2:]:
                        self.client.checkpoint(turn.id, i, version.text)
                    else:
                        if k not in self._meta:
                            if model is None:
                                model = model_description(self.window.model_info, self.window.settings.model_dir)
                                sampling = self.window.settings.sampling()
                            self._meta[k] = (model, sampling, time.time())
                        self.client.save(key, turn.id, i, records.to_stored(turn, i, *self._meta[k]))
                    self._sent[k] = fp
        if not live:
            self._timer.stop()

    # -- restoring ------------------------------------------------------------------------------------------------
    def _adopt(self, conv: Conversation) -> list:
        turns, rows, positions = records.to_turns(conv)
        for k, row in rows.items():
            self._meta[k] = (row.model, row.sampling, row.created)
        self.client.adopt(conv.summary.image_key, conv.summary.id, {k: r.id for k, r in rows.items()}, positions)
        for turn in turns:
            for i in range(len(turn.versions)):
                self._sent[(turn.id, i)] = records.fingerprint(turn, i)
        self._conversation_ids[conv.summary.image_key] = conv.summary.id
        return turns

    def _on_conversation_found(self, key: str, conv: Conversation) -> None:
        """An opened image is in the history: its stored turns come first, then any asked since it opened."""
        entry = self.window.session.entries.get(key)
        if entry is None or key in self._conversation_ids:
            return
        entry.turns[:0] = self._adopt(conv)
        if self.window.session.current_key == key:
            self.window.refresh_conversation()

    def restore(self, conv: Conversation) -> None:
        """Show a stored conversation: its image (history's own copy), turns and overlays. A conversation the
        window already holds (started or restored in this run) is shown as it is, never added twice."""
        key = conv.summary.image_key
        session = self.window.session
        held = self._conversation_ids.get(key)
        if key not in session.entries:
            s = conv.summary
            session.entries[key] = ImageEntry(key, s.name, s.width, s.height, self._adopt(conv))
        elif held is None:  # turns asked since the image was opened, not written yet: after the stored ones
            session.entries[key].turns[:0] = self._adopt(conv)
        elif held != conv.summary.id:  # another conversation about the same image was on screen
            session.entries[key].turns[:] = self._adopt(conv)
        self.window.open_image(str(conv.image_path), conv.summary.name)

    def flush_now(self) -> None:
        """Send the latest state of every answer and try what waits once more; `flushed` answers."""
        self.sync()
        self.client.flush_now()

    def shutdown(self) -> None:
        """Write the latest state of every answer, then close the store (blocks until written)."""
        self._timer.stop()
        self.sync()
        self.client.shutdown()
