"""A dismissible banner for messages that must not block: a bad drop, a busy model, a failure."""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton

# (background, border, text): light banners with dark text, legible under light and dark palettes alike.
_STYLES = {
    "error": ("#fdecea", "#f5c2c0", "#611a15"),
    "info": ("#e8f0fe", "#c6d8fb", "#1a3c6e"),
}


class Notice(QFrame):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.label = QLabel()
        self.label.setWordWrap(True)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Dismiss")
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(self.label, 1)
        layout.addWidget(close)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.hide)
        self.kind = ""
        self.hide()

    def show_error(self, text: str) -> None:
        self._show(text, "error", 0)

    def show_info(self, text: str) -> None:
        self._show(text, "info", 6000)

    def _show(self, text: str, kind: str, timeout_ms: int) -> None:
        self.kind = kind
        self.label.setText(text)
        bg, border, fg = _STYLES[kind]
        # The text colour is set on the children too: they take the palette's, which is light in a dark theme.
        self.setStyleSheet(f"Notice {{ background: {bg}; border: 1px solid {border}; border-radius: 4px; }} "
                           f"QLabel, QToolButton {{ color: {fg}; border: none; background: transparent; }}")
        self.show()
        if timeout_ms:
            self._timer.start(timeout_ms)
        else:
            self._timer.stop()

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""
