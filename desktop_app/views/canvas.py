"""The image canvas: fit to view, zoom (wheel, +/-), pan (drag), and detection boxes drawn over the image."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPalette, QPen, QPixmap
from PySide6.QtWidgets import QFrame, QGraphicsPixmapItem, QGraphicsScene, QGraphicsSimpleTextItem, QGraphicsView

from vlm_core.runtime.answers import Detection

# Distinct, readable on photos in both light and dark themes (Tableau 10).
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac"]


def label_colors(labels: list[str]) -> dict[str, QColor]:
    """One colour per distinct label, stable in order of first appearance."""
    colors: dict[str, QColor] = {}
    for label in labels:
        if label not in colors:
            colors[label] = QColor(PALETTE[len(colors) % len(PALETTE)])
    return colors


class ImageCanvas(QGraphicsView):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.SmoothPixmapTransform)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setAcceptDrops(False)  # drops are the window's; the view would otherwise swallow them
        self.setBackgroundBrush(self.palette().color(QPalette.ColorRole.Window).darker(115))
        self._pixmap_item: QGraphicsPixmapItem | None = None
        self._overlay: list = []
        self._fit = True
        self.boxes_visible = True
        self.detections: list[Detection] = []

    def has_image(self) -> bool:
        return self._pixmap_item is not None

    def set_image(self, image: QImage) -> None:
        self.scene().clear()
        self._overlay, self.detections = [], []
        pixmap = QPixmap.fromImage(image)
        self._pixmap_item = self.scene().addPixmap(pixmap)
        self._pixmap_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.scene().setSceneRect(QRectF(pixmap.rect()))
        self.fit()

    def fit(self) -> None:
        self._fit = True
        if self._pixmap_item is not None:
            self.fitInView(self._pixmap_item, Qt.AspectRatioMode.KeepAspectRatio)

    def zoom(self) -> float:
        return self.transform().m11()

    def zoom_by(self, factor: float) -> None:
        if self._pixmap_item is None:
            return
        new = self.zoom() * factor
        if 0.02 <= new <= 40:
            self._fit = False
            self.scale(factor, factor)

    def drawForeground(self, painter: QPainter, rect) -> None:
        if self._pixmap_item is None:  # the empty state says what to do, where the image will be
            painter.save()
            painter.resetTransform()
            font = painter.font()
            font.setPointSizeF(font.pointSizeF() * 1.4)
            painter.setFont(font)
            painter.setPen(self.palette().color(QPalette.ColorRole.PlaceholderText))
            painter.drawText(self.viewport().rect().adjusted(20, 0, -20, 0),
                             Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             "Drop an image here\nor paste one (Ctrl+V), or open one (Ctrl+O)")
            painter.restore()

    def wheelEvent(self, event) -> None:
        steps = event.angleDelta().y() / 120
        if steps:
            self.zoom_by(1.25 ** steps)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._fit:
            self.fit()

    def set_detections(self, detections: list[Detection]) -> None:
        for item in self._overlay:
            self.scene().removeItem(item)
        self._overlay, self.detections = [], list(detections)
        if self._pixmap_item is None:
            return
        colors = label_colors([d.label for d in detections])
        width = max(2.0, self._pixmap_item.pixmap().width() / 300)
        font = QFont()
        font.setPixelSize(int(max(12, self._pixmap_item.pixmap().height() / 30)))
        for det in detections:
            color = colors[det.label]
            x0, y0, x1, y1 = det.box
            pen = QPen(color, width)
            pen.setCosmetic(False)
            rect = self.scene().addRect(QRectF(x0, y0, x1 - x0, y1 - y0), pen)
            text = QGraphicsSimpleTextItem(det.label or "(no label)")
            text.setFont(font)
            text.setBrush(QColor("white"))
            bg = self.scene().addRect(text.boundingRect().adjusted(-3, -1, 3, 1), QPen(Qt.PenStyle.NoPen), color)
            bg.setPos(x0, max(0.0, y0 - text.boundingRect().height() - 2))
            text.setParentItem(bg)
            self._overlay += [rect, bg]
        self.set_boxes_visible(self.boxes_visible)

    def set_boxes_visible(self, visible: bool) -> None:
        self.boxes_visible = visible
        for item in self._overlay:
            item.setVisible(visible)

    def overlay_rects(self) -> list[QRectF]:
        """The drawn boxes in image pixels (for tests and accessibility)."""
        return [item.rect() for item in self._overlay[::2]]
