"""The status bar's model and download items: what is loaded (by its repo name), load progress with a busy
indicator while PyTorch starts and a Cancel, memory in use, and a running download the dialog was hidden to."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QProgressBar, QToolButton, QWidget

from .download_dialog import human_size


def separator() -> QFrame:
    line = QFrame()
    line.setFrameShape(QFrame.Shape.VLine)
    line.setFrameShadow(QFrame.Shadow.Sunken)
    return line


class ModelStatus(QWidget):
    cancel_clicked = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.label = QLabel("No model")
        self.memory = QLabel("")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(180)
        self.progress.setTextVisible(False)
        self.progress.setVisible(False)
        self.cancel = QToolButton()
        self.cancel.setText("Cancel")
        self.cancel.setToolTip("Stop loading the model")
        self.cancel.setVisible(False)
        self.cancel.clicked.connect(self.cancel_clicked)
        self.separator = separator()  # "270.9 MB in use │ paligemma2-3b-mix-224 · CPU", never run together
        self.separator.setVisible(False)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(8)
        for w in (self.progress, self.cancel, self.memory, self.separator, self.label):
            row.addWidget(w)

    def show_busy(self, text: str) -> None:
        """Work whose length is unknown (PyTorch importing): an indicator that moves on its own."""
        self.label.setText(text)
        self.progress.setRange(0, 0)
        self._show_progress(True)

    def show_progress(self, text: str, fraction: float) -> None:
        self.label.setText(text)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1000)
        self.progress.setValue(int(fraction * 1000))
        self._show_progress(True)

    def show_text(self, text: str) -> None:
        self.label.setText(text)
        self._show_progress(False)

    def set_memory(self, n: int | None) -> None:
        self.memory.setText(f"{human_size(n)} in use" if n else "")
        self.separator.setVisible(bool(n))

    def cancelling(self) -> None:
        self.cancel.setEnabled(False)
        self.label.setText("Cancelling…")

    def _show_progress(self, visible: bool) -> None:
        self.progress.setVisible(visible)
        self.cancel.setVisible(visible)
        self.cancel.setEnabled(True)

    @property
    def busy(self) -> bool:
        return self.progress.isVisible() and self.progress.maximum() == 0


class DownloadStatus(QWidget):
    """A running download whose dialog is hidden; clicking it shows the dialog again."""

    show_clicked = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.button = QToolButton()
        self.button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.button.setToolTip("Show the download")
        self.button.clicked.connect(self.show_clicked)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(140)
        self.progress.setTextVisible(False)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.button)
        row.addWidget(self.progress)
        self.setVisible(False)

    def update_progress(self, title: str, p: dict) -> None:
        self.button.setText(f"Downloading {title}: {human_size(p['done'])} of {human_size(p['total'])}")
        self.progress.setValue(int(1000 * p["done"] / p["total"]) if p["total"] else 0)

    def show_state(self, text: str) -> None:
        self.button.setText(text)


class ApiStatus(QLabel):
    """The Local API server: "API on · N requests", its URL in the tooltip; hidden while it is off."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setVisible(False)

    def show_on(self, url: str, requests: int) -> None:
        self.setText(f"API on · {requests} request{'s' if requests != 1 else ''}")
        self.setToolTip(f"Local API server at {url} (OpenAI: {url}/v1). Settings › Local API server turns it off.")
        self.setVisible(True)

    def show_off(self) -> None:
        self.setVisible(False)
