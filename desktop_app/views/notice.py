"""A dismissible banner for messages that must not block: a bad drop, a busy model, a failure.

The banner floats over the top of its parent instead of taking a row of the layout, so showing or hiding it never
moves the image or the chat. Its colours are the palette's window and text colours tinted towards red (error) or
blue (info), so it is legible in light and dark themes alike. Each message carries a cause; the window clears the
banner when that cause is fixed (`clear("model")` once a model loads), and Esc or ✕ dismisses it.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QPainter, QPalette, QPen
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QToolButton, QWidget

# What a message is about; the window clears the banner by these when the cause goes away.
MODEL, IMAGE, ANSWER, INPUT, BUSY, DOWNLOAD = "model", "image", "answer", "input", "busy", "download"
API = "api"  # the Local API server did not start (a port in use)
DEVICE = "device"  # the device setting fell back to auto: said until the model has answered there

_ACCENTS = {"error": QColor("#d93025"), "info": QColor("#1a73e8")}
_MARGIN = 8  # from the parent's edges


def _blend(base: QColor, accent: QColor, amount: float) -> QColor:
    return QColor.fromRgbF(*(b + (a - b) * amount for b, a in zip(base.getRgbF()[:3], accent.getRgbF()[:3])))


class Notice(QFrame):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.close_button = QToolButton()
        self.close_button.setText("✕")
        self.close_button.setAutoRaise(True)
        self.close_button.setToolTip("Dismiss (Esc)")
        self.close_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # Esc dismisses; no hidden tab stop
        self.close_button.clicked.connect(self.dismiss)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 8, 6, 8)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.close_button, 0, Qt.AlignmentFlag.AlignTop)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.dismiss)
        self.kind = ""
        self.cause = ""
        if parent is not None:
            parent.installEventFilter(self)
        self.hide()

    # -- showing and clearing ---------------------------------------------------------------------------------
    def show_error(self, text: str, cause: str = "") -> None:
        self._show(text, "error", cause, 0)

    def show_info(self, text: str, cause: str = "") -> None:
        self._show(text, "info", cause, 6000)

    def clear(self, *causes: str) -> bool:
        """Hide the banner if it is about one of `causes`; True if it was."""
        if self.isVisible() and self.cause in causes:
            self.dismiss()
            return True
        return False

    def dismiss(self) -> None:
        self._timer.stop()
        self.kind = self.cause = ""
        self.hide()

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""

    def _show(self, text: str, kind: str, cause: str, timeout_ms: int) -> None:
        self.kind, self.cause = kind, cause
        self.label.setText(text)
        self._place()
        self.show()
        self.raise_()
        self.update()
        if timeout_ms:
            self._timer.start(timeout_ms)
        else:
            self._timer.stop()

    # -- floating over the parent -----------------------------------------------------------------------------
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.parentWidget() and event.type() in (QEvent.Type.Resize, QEvent.Type.LayoutRequest):
            self._place()
        return False

    def _place(self) -> None:
        parent = self.parentWidget()
        if parent is None:
            return
        width = max(parent.width() - 2 * _MARGIN, 100)
        height = self.heightForWidth(width) if self.hasHeightForWidth() else self.sizeHint().height()
        self.setGeometry(_MARGIN, _MARGIN, width, max(height, self.minimumSizeHint().height()))

    def colours(self) -> tuple[QColor, QColor]:
        """(fill, border): the palette's window colour tinted towards the accent; opaque, as it lies over the
        layout. The text keeps the palette's own text colour, which contrasts with the window colour."""
        window = self.palette().color(QPalette.ColorRole.Window)
        accent = _ACCENTS.get(self.kind, _ACCENTS["info"])
        return _blend(window, accent, 0.16), _blend(window, accent, 0.6)

    def paintEvent(self, event) -> None:
        fill, border = self.colours()
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(border, 1))
        painter.setBrush(fill)
        painter.drawRoundedRect(QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5), 5, 5)
