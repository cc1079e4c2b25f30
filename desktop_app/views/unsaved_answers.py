"""Closing the window while answers still wait to be saved (a full disk, or another window holds the history):
one last try on the history thread, then, if some still wait, a question whose default keeps the window open.

    closeEvent ─▶ may_close(): False ─▶ recorder.flush_now() ──queued──▶ history thread ─▶ flushed(waiting, cause)
        waiting == 0: the window closes, now allowed             (after FLUSH_TIMEOUT_MS: the last count known)
        waiting  > 0: "N answers are not saved yet"  [Keep the window open]  [Quit without saving them]

The GUI thread never waits for the disk: the close is ignored and the window closes itself once the answer comes.
While the question is open the count follows the history thread, and once nothing waits any more (space was freed,
the other window closed) the close the person asked for goes ahead. With nothing waiting, closing asks nothing.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QMessageBox

FLUSH_TIMEOUT_MS = 2000  # the history thread may be busy (a long search): ask with the last count known
KEEP, QUIT = "Keep the window open", "Quit without saving them"


def answers(n: int) -> str:
    return f"{n} answer{'s' if n != 1 else ''}"


def question(waiting: int, cause: str, folder: str) -> tuple[str, str]:
    """The box's text and its informative text: how many, why they cannot be saved, what to do about it."""
    text = f"<b>{answers(waiting)} {'are' if waiting != 1 else 'is'} not saved yet.</b>"
    if cause == "read-only":
        why = ("Another PaliGemma Desktop window has the history open, so this window cannot write to it. Close that "
               "window and this one saves them within a second.")
    elif cause == "disk full":
        why = (f"The disk holding the history ({folder or 'its folder'}) is full. Free some space and they are "
               "saved within a few seconds.")
    else:
        why = f"History cannot write them ({cause})." if cause else "History has not been able to write them yet."
    return text, f"{why} Quitting now loses them."


class UnsavedAnswersGuard(QObject):
    """`window.closeEvent` asks `may_close()` first; False means the guard has taken the close over."""

    def __init__(self, window, recorder):
        super().__init__(window)
        self.window, self.recorder = window, recorder
        self.box: QMessageBox | None = None
        self._quit = None  # the box's "Quit without saving them"
        self.cause = ""  # why they wait, as the history thread said
        self._allowed = False  # the person chose to quit, or nothing waits any more
        self._flushing = False
        self._timeout = QTimer(self)
        self._timeout.setSingleShot(True)
        self._timeout.setInterval(FLUSH_TIMEOUT_MS)
        self._timeout.timeout.connect(self._on_timeout)
        recorder.flushed.connect(self._on_flushed)
        recorder.pending.connect(self._on_pending)

    def may_close(self) -> bool:
        if self._allowed or not self.recorder.waiting:
            return True
        if self.box is not None:
            self.box.raise_()
            self.box.activateWindow()
        elif not self._flushing:
            self._flushing = True
            self._timeout.start()
            self.recorder.flush_now()
        return False

    def _on_timeout(self) -> None:
        if self._flushing:
            self._on_flushed(self.recorder.waiting, "read-only" if self.recorder.read_only else "")

    def _on_flushed(self, waiting: int, cause: str) -> None:
        if not self._flushing:  # an answer after the timeout: the open question follows `pending` instead
            return
        self._flushing = False
        self._timeout.stop()
        if not waiting:
            self._close_now()
        else:
            self._ask(waiting, cause)

    def _ask(self, waiting: int, cause: str) -> None:
        self.cause = cause
        box = self.box = QMessageBox(QMessageBox.Icon.Warning, "Answers not saved yet", "",
                                     QMessageBox.StandardButton.NoButton, self.window)
        self._set_text(waiting)
        keep = box.addButton(KEEP, QMessageBox.ButtonRole.RejectRole)
        self._quit = box.addButton(QUIT, QMessageBox.ButtonRole.DestructiveRole)
        box.setDefaultButton(keep)
        box.setEscapeButton(keep)
        box.finished.connect(self._on_answered)
        box.open()  # window-modal, and the event loop runs on: the history thread's answers still arrive

    def _set_text(self, waiting: int) -> None:
        text, why = question(waiting, self.cause, self.recorder.open_folder)
        self.box.setText(text)
        self.box.setInformativeText(why)

    def _on_answered(self, _result: int) -> None:
        box, self.box = self.box, None
        if box is None:
            return
        quit_ = box.clickedButton() is self._quit
        box.deleteLater()
        if quit_:
            self._close_now()

    def _on_pending(self, waiting: int, _reason: str) -> None:
        if self.box is None:
            return
        if waiting:
            self._set_text(waiting)
            return
        box, self.box = self.box, None  # saved while the question was open: the close goes ahead, nothing lost
        box.done(0)
        box.deleteLater()
        self._close_now()

    def _close_now(self) -> None:
        self._allowed = True
        self.window.close()
