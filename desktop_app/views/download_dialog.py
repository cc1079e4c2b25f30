"""Downloading a model: progress per file and overall, speed, time left, Cancel and Resume; asks for a token when
needed. Not modal: Hide leaves the download running behind a status-bar item while the app stays usable."""

from __future__ import annotations

import re

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton,
                               QVBoxLayout)

from ..jobs.download import DownloadJob, TokenCheck
from ..wording import for_the_window

TOKEN_PAGE = "https://huggingface.co/settings/tokens"


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def without_token_instructions(reason: str) -> str:
    """The Hub's messages end with where to get a token; the dialog says that once, with a link, so drop it here."""
    reason = re.sub(r"\s*\([^)]*settings/tokens[^)]*\)", "", reason)
    sentences = re.split(r"(?<=[.!?])\s+", reason.strip())
    return " ".join(s for s in sentences if "settings/tokens" not in s)


def keep_text_height(dialog: QDialog, event: QEvent) -> None:
    """A top-level window ignores its layout's height-for-width, so wrapped text is cut when the dialog is narrow
    or a longer message appears: keep the height the text needs at the current width."""
    if event.type() in (QEvent.Type.LayoutRequest, QEvent.Type.Resize, QEvent.Type.Show) and dialog.layout():
        needed = dialog.layout().totalHeightForWidth(dialog.width())
        if needed > 0 and dialog.minimumHeight() != needed:
            dialog.setMinimumHeight(needed)
            if dialog.height() < needed:
                dialog.resize(dialog.width(), needed)


def stopped_text(kind: str, bytes_done: int) -> str:
    """Under a failure's message: what is left on disk. Nothing is, when the file was discarded (a corrupt copy) or
    nothing had arrived (a licence refusal at 0 bytes)."""
    if kind == "corrupt" or bytes_done <= 0:
        return "The download stopped."
    return f"The download stopped. The {human_size(bytes_done)} already fetched are kept; Try again continues."


class TokenDialog(QDialog):
    """Paste a Hugging Face token; it is checked against the server and saved where huggingface_hub keeps it.
    The field never shows the token, and nothing logs it."""

    def __init__(self, reason: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Sign in to Hugging Face")
        self.setMinimumWidth(460)
        self.user = ""
        reason = without_token_instructions(reason.replace(
            "was refused (expired or revoked?)", "was not accepted (mistyped, expired or revoked)"))
        self.intro = intro = QLabel((f"{reason}<br><br>" if reason else "") +
                                    "Create an access token with <b>Read</b> access at "
                                    f"<a href='{TOKEN_PAGE}'>{TOKEN_PAGE}</a> and paste it here. It is saved where "
                                    "the Hugging Face tools keep it, so you only do this once.")
        intro.setWordWrap(True)
        intro.setOpenExternalLinks(True)
        self.field = QLineEdit()
        self.field.setEchoMode(QLineEdit.EchoMode.Password)
        self.field.setPlaceholderText("hf_…")
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Sign in")
        self.buttons.accepted.connect(self._check)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        for w in (intro, self.field, self.status, self.buttons):
            layout.addWidget(w)
        self.checker = TokenCheck(self)
        self.checker.succeeded.connect(self._on_ok)
        self.checker.failed.connect(self._on_failed)

    def event(self, event) -> bool:
        handled = super().event(event)
        keep_text_height(self, event)
        return handled

    def _check(self) -> None:
        self.buttons.setEnabled(False)
        self.status.setText("Checking the token…")
        self.checker.check(self.field.text())

    def _on_ok(self, user: str) -> None:
        self.user = user
        self.field.clear()
        self.accept()

    def _on_failed(self, kind: str, message: str) -> None:
        self.buttons.setEnabled(True)
        if kind == "invalid_token" and "expired or revoked" in message:
            # A token pasted just now has never worked: it was not copied whole, or is not a token at all.
            message = ("Hugging Face did not accept this token. Check that you copied all of it, or create a new "
                       "one.")
        self.status.setText(f"<span style='color:#b3261e'>{message}</span>")


class DownloadDialog(QDialog):
    """Owns one DownloadJob; emits `downloaded(path)` when the model is complete. Hide (`hidden_to_background`)
    keeps the download going without the dialog; `progressed` feeds whatever shows it meanwhile."""

    downloaded = Signal(str)
    progressed = Signal(dict)
    stopped = Signal(str)  # the outcome when the download ends other than "done" (cancelled or a failure kind)
    hidden_to_background = Signal()

    def __init__(self, repo_id: str, title: str, cache_dir: str, parent=None, ask_token=None, verb="Downloading"):
        """verb: "Repairing" for a repair, the same download of what is wrong or missing and nothing else."""
        super().__init__(parent)
        self.setWindowTitle(f"{verb} {title}")
        self.setMinimumWidth(520)
        self.repo_id, self.cache_dir = repo_id, cache_dir
        self.ask_token = ask_token or self._ask_token
        self.setModal(False)
        self.title = title
        self.job: DownloadJob | None = None
        self.outcome = ""  # "done", "cancelled", or the failure kind
        self.bytes_done = 0  # on disk for this model, resumed bytes included
        self.heading = QLabel(f"<b>{title}</b><br>{repo_id}")
        self.file_label = QLabel("Connecting to the Hugging Face Hub…")
        self.file_label.setWordWrap(True)
        self.file_bar = QProgressBar()
        self.total_label = QLabel()
        self.total_bar = QProgressBar()
        for bar in (self.file_bar, self.total_bar):
            bar.setRange(0, 1000)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setOpenExternalLinks(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.retry_button = QPushButton("Try again")
        self.retry_button.clicked.connect(self.start)
        self.retry_button.setVisible(False)
        self.hide_button = QPushButton("Hide")
        self.hide_button.setToolTip("Keep downloading in the background; the status bar shows the progress")
        self.hide_button.clicked.connect(self.hide_to_background)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        for b in (self.retry_button, self.hide_button, self.cancel_button):
            b.setAutoDefault(False)  # Enter must not cancel a download by accident
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.retry_button)
        row.addWidget(self.hide_button)
        row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        for w in (self.heading, self.file_label, self.file_bar, self.total_label, self.total_bar, self.message):
            layout.addWidget(w)
        layout.addLayout(row)

    def start(self) -> None:
        self.outcome = ""
        self.message.setText("")
        self._show_bars(True)
        self.retry_button.setVisible(False)
        self.hide_button.setVisible(True)
        self.cancel_button.setText("Cancel")
        self.cancel_button.setEnabled(True)
        self.file_label.setText("Connecting to the Hugging Face Hub…")
        self.job = DownloadJob(self.repo_id, self.cache_dir, self)
        self.job.progress.connect(self._on_progress)
        self.job.finished.connect(self._on_finished)
        self.job.failed.connect(self._on_failed)
        self.job.cancelled.connect(self._on_cancelled)
        self.job.start()

    def _show_bars(self, visible: bool) -> None:
        for w in (self.file_bar, self.total_bar, self.total_label):
            w.setVisible(visible)

    def cancel(self) -> None:
        if self.job is not None and self.job.running:
            self.cancel_button.setEnabled(False)
            self.file_label.setText("Stopping… (what was downloaded is kept)")
            self.job.cancel()
        else:
            super().reject()

    def event(self, event) -> bool:
        handled = super().event(event)
        keep_text_height(self, event)
        return handled

    def hide_to_background(self) -> None:
        self.hide()
        self.hidden_to_background.emit()

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def _on_progress(self, p: dict) -> None:
        self.bytes_done = p["done"]
        self.progressed.emit(p)
        self.file_label.setText(f"{p['filename']} — {human_size(p['file_done'])} of {human_size(p['file_total'])}")
        self.file_bar.setValue(int(1000 * p["file_done"] / p["file_total"]) if p["file_total"] else 1000)
        self.total_bar.setValue(int(1000 * p["done"] / p["total"]) if p["total"] else 0)
        self.total_label.setText(f"{human_size(p['done'])} of {human_size(p['total'])} · "
                                 f"{human_size(p['bytes_per_s'])}/s · {human_duration(p['eta_s'])} left")

    def _on_finished(self, path: str) -> None:
        self.outcome = "done"
        self.downloaded.emit(path)
        self.accept()

    def _on_cancelled(self) -> None:
        """Stay open, saying what is kept and offering to go on from there."""
        self.outcome = "cancelled"
        self.file_label.setText(f"{human_size(self.bytes_done)} downloaded — Resume continues from there (so does "
                                "the next download of this model).")
        self._show_bars(False)
        self.retry_button.setText("Resume")
        self.retry_button.setVisible(True)
        self.hide_button.setVisible(False)
        self.cancel_button.setText("Close")
        self.cancel_button.setEnabled(True)
        self.stopped.emit("cancelled")

    def _on_failed(self, kind: str, message: str) -> None:
        self.outcome = kind
        self.cancel_button.setEnabled(True)
        if kind in ("not_logged_in", "invalid_token") and self.ask_token(message):
            self.start()  # signed in: try again straight away
            return
        message = for_the_window(message)
        if kind == "licence":
            link = f"https://huggingface.co/{self.repo_id}"
            message = message.replace(link, f"<a href='{link}'>{link}</a>")
        self.message.setText(f"<b>{message}</b>")
        self.file_label.setText(stopped_text(kind, self.bytes_done))
        self._show_bars(False)
        self.retry_button.setText("Try again")
        self.retry_button.setVisible(True)
        self.hide_button.setVisible(False)
        self.cancel_button.setText("Close")
        self.stopped.emit(kind)
        if not self.isVisible():
            self.show()  # hidden to the background: a failure needs the person

    def _ask_token(self, reason: str) -> bool:
        return TokenDialog(reason, self).exec() == QDialog.DialogCode.Accepted

    def closeEvent(self, event) -> None:
        if self.job is not None and self.job.running:  # closes once the download has stopped
            self.cancel()
            event.ignore()
            return
        super().closeEvent(event)

    def reject(self) -> None:
        if self.job is not None and self.job.running:  # Esc: stop first, close on `cancelled`
            self.cancel()
            return
        super().reject()
