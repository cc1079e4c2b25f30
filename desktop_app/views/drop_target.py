"""While something is dragged over the window: a highlighted frame over the whole window that says what a drop
does. It ignores the mouse, so the drag events still reach the window underneath."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPalette, QPen
from PySide6.QtWidgets import QWidget


class DropHighlight(QWidget):
    def __init__(self, parent: QWidget):
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.text = "Drop to open the image"
        self.hide()

    def show_over(self, target: QWidget) -> None:
        self.setGeometry(target.rect())
        self.raise_()
        self.show()

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        accent = self.palette().color(QPalette.ColorRole.Highlight)
        fill = QColor(accent)
        fill.setAlpha(40)
        rect = QRectF(self.rect()).adjusted(4, 4, -4, -4)
        p.setPen(QPen(accent, 3, Qt.PenStyle.DashLine))
        p.setBrush(fill)
        p.drawRoundedRect(rect, 10, 10)
        font = p.font()
        font.setPointSizeF(font.pointSizeF() * 1.4)
        font.setBold(True)
        p.setFont(font)
        # On a pill of the window colour, so the words stay legible over any image or text underneath.
        text_rect = p.fontMetrics().boundingRect(self.text).adjusted(-18, -10, 18, 10)
        text_rect.moveCenter(rect.center().toPoint())
        p.setPen(QPen(accent, 2))
        p.setBrush(self.palette().color(QPalette.ColorRole.Window))
        p.drawRoundedRect(QRectF(text_rect), 12, 12)
        p.setPen(self.palette().color(QPalette.ColorRole.WindowText))
        p.drawText(QRectF(text_rect), Qt.AlignmentFlag.AlignCenter, self.text)
