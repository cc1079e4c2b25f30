"""The image canvas: fit to view (small images at 100%), zoom (wheel, +/-, Ctrl+=/Ctrl++/Ctrl+-/Ctrl+0), pan (drag),
and the objects of an answer drawn over the image: boxes, label chips and segmentation masks.

Each object is drawn in its label's colour: a box, a chip with the label that keeps its screen size at any zoom and
is moved so chips never overlap, and (for a segmentation, once decoded off the GUI thread) a translucent fill with
an outline. Hovering any of them names the object and highlights it; `object_hovered(index)` lets a list of the
objects follow, and `highlight(index)` lets the list lead. Right-click offers to save the masks.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (QAction, QColor, QFont, QFontMetricsF, QImage, QKeySequence, QPainter, QPainterPath,
                           QPainterPathStroker, QPalette, QPen, QPixmap, QShortcut)
from PySide6.QtWidgets import (QFrame, QGraphicsItem, QGraphicsPixmapItem, QGraphicsRectItem, QGraphicsScene,
                               QGraphicsView, QMenu)

from vlm_core.runtime.palette import PALETTE, label_color_names
from vlm_core.runtime.answers import Detection

ZOOM_STEP = 1.25
BOX_WIDTH_PX = 2.0  # on screen, at any zoom
CHIP_GAP_PX = 2.0
Z_IMAGE, Z_MASK, Z_BOX, Z_CHIP = 0, 1, 2, 3

__all__ = ["ImageCanvas", "PALETTE", "label_colors"]


def label_colors(labels: list[str]) -> dict[str, QColor]:
    """One colour per distinct label, stable in order of first appearance (the annotated PNG's colours too)."""
    return {label: QColor(name) for label, name in label_color_names(labels).items()}


class LabelChip(QGraphicsItem):
    """A label on a coloured chip, a constant size on screen: its local coordinates are device pixels, anchored at
    pos() in the scene. `offset` (screen pixels) is where the chip sits relative to that anchor."""

    def __init__(self, text: str, color: QColor, font: QFont, index: int):
        super().__init__()
        self.text, self.color, self.font, self.index = text, color, font, index
        metrics = QFontMetricsF(font)
        self.size = QRectF(0, 0, metrics.horizontalAdvance(text) + 10, metrics.height() + 4)
        self.offset = QPointF(0, -self.size.height())
        self.highlighted = False
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
        self.setAcceptHoverEvents(True)
        self.setToolTip(text)
        self.setZValue(Z_CHIP)

    def boundingRect(self) -> QRectF:
        return self.size.translated(self.offset)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        rect = self.boundingRect()
        painter.setPen(QPen(QColor("white"), 1.5) if self.highlighted else Qt.PenStyle.NoPen)
        painter.setBrush(self.color)
        painter.drawRoundedRect(rect, 3, 3)
        painter.setFont(self.font)
        painter.setPen(QColor("white"))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, self.text)

    def set_offset(self, offset: QPointF) -> None:
        self.prepareGeometryChange()
        self.offset = offset

    def hoverEnterEvent(self, event) -> None:
        self.scene().views()[0].set_hovered(self.index)

    def hoverLeaveEvent(self, event) -> None:
        self.scene().views()[0].set_hovered(-1)


class _HoverRect(QGraphicsRectItem):
    def __init__(self, rect: QRectF, index: int):
        super().__init__(rect)
        self.index = index
        self.setAcceptHoverEvents(True)

    def shape(self) -> QPainterPath:  # hover on the outline only, so a box inside another one stays reachable
        path = QPainterPath()
        path.addRect(self.rect())
        stroker = QPainterPathStroker()
        zoom = self.scene().views()[0].zoom() if self.scene() and self.scene().views() else 1.0
        stroker.setWidth(8.0 / max(zoom, 1e-3))  # 8 screen pixels wide at any zoom
        return stroker.createStroke(path)

    def hoverEnterEvent(self, event) -> None:
        self.scene().views()[0].set_hovered(self.index)

    def hoverLeaveEvent(self, event) -> None:
        self.scene().views()[0].set_hovered(-1)


class _MaskItem(QGraphicsPixmapItem):
    """A mask, hover-sensitive on its own pixels only (the pixmap's alpha)."""

    def __init__(self, pixmap: QPixmap, index: int):
        super().__init__(pixmap)
        self.index = index
        self.setShapeMode(QGraphicsPixmapItem.ShapeMode.MaskShape)
        self.setAcceptHoverEvents(True)
        self.setZValue(Z_MASK)

    def hoverEnterEvent(self, event) -> None:
        self.scene().views()[0].set_hovered(self.index)

    def hoverLeaveEvent(self, event) -> None:
        self.scene().views()[0].set_hovered(-1)


class ImageCanvas(QGraphicsView):
    object_hovered = Signal(int)  # index into `detections`, -1 when none
    detections_changed = Signal()
    save_requested = Signal()  # right-click › Save masks and annotated image…
    zoom_changed = Signal(float)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.SmoothPixmapTransform)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setAcceptDrops(False)  # drops are the window's; the view would otherwise swallow them
        self.setMouseTracking(True)
        self.setBackgroundBrush(self.palette().color(QPalette.ColorRole.Window).darker(115))
        self._pixmap_item: QGraphicsPixmapItem | None = None
        self._overlay: list[QGraphicsItem] = []  # boxes and chips, in object order: box, chip, box, chip...
        self._boxes: list[_HoverRect] = []
        self._chips: list[LabelChip] = []
        self._masks: list[_MaskItem | None] = []
        self._fit = True
        self.boxes_visible = True
        self.masks_visible = True
        self.hovered = -1
        self.detections: list[Detection] = []
        self._colors: dict[str, QColor] = {}
        self.chip_font = QFont(self.font())
        self.chip_font.setPixelSize(12)
        for keys, slot in ((("Ctrl+=", "Ctrl++"), lambda: self.zoom_by(ZOOM_STEP)),
                           (("Ctrl+-",), lambda: self.zoom_by(1 / ZOOM_STEP)),
                           (("Ctrl+0",), self.fit)):
            for key in keys:  # window-wide: they work whether the canvas or the chat input has the focus
                QShortcut(QKeySequence(key), self, slot, context=Qt.ShortcutContext.WindowShortcut)

    # -- image and zoom ---------------------------------------------------------------------------------------------
    def has_image(self) -> bool:
        return self._pixmap_item is not None

    def set_image(self, image: QImage) -> None:
        self.scene().clear()
        self._overlay, self._boxes, self._chips, self._masks, self.detections = [], [], [], [], []
        self.hovered = -1
        pixmap = QPixmap.fromImage(image)
        self._pixmap_item = self.scene().addPixmap(pixmap)
        self._pixmap_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self._pixmap_item.setZValue(Z_IMAGE)
        self.scene().setSceneRect(QRectF(pixmap.rect()))
        self.fit()
        self.detections_changed.emit()

    def fit(self) -> None:
        """Fit the image to the view, but never enlarge it: a small image is shown at 100% until zoomed."""
        self._fit = True
        if self._pixmap_item is None:
            return
        rect = self._pixmap_item.boundingRect()
        view = self.viewport().rect()
        scale = min(1.0, view.width() / max(rect.width(), 1), view.height() / max(rect.height(), 1))
        self.resetTransform()
        self.scale(scale, scale)
        self.centerOn(rect.center())
        self._after_zoom()

    def zoom(self) -> float:
        return self.transform().m11()

    def zoom_by(self, factor: float) -> None:
        if self._pixmap_item is None:
            return
        new = self.zoom() * factor
        if 0.02 <= new <= 40:
            self._fit = False
            self.scale(factor, factor)
            self._after_zoom()

    def _after_zoom(self) -> None:
        self.layout_chips()
        self.zoom_changed.emit(self.zoom())

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
                             # no-break spaces: a narrow canvas breaks after the comma, never inside a clause
                             "Drop an image here\nor paste\u00a0one\u00a0(Ctrl+V), or\u00a0open\u00a0one\u00a0(Ctrl+O)")
            painter.restore()

    def wheelEvent(self, event) -> None:
        steps = event.angleDelta().y() / 120
        if steps:
            self.zoom_by(ZOOM_STEP ** steps)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._fit:
            self.fit()
        else:
            self.layout_chips()

    def scrollContentsBy(self, dx: int, dy: int) -> None:
        super().scrollContentsBy(dx, dy)
        if self._chips:
            self.layout_chips()  # chips that were pushed aside may fit at their box again

    def contextMenuEvent(self, event) -> None:
        if not self.detections:
            return super().contextMenuEvent(event)
        menu = QMenu(self)
        save = QAction("Save masks and annotated image…", menu)
        save.triggered.connect(self.save_requested)
        menu.addAction(save)
        menu.exec(event.globalPos())

    # -- objects ----------------------------------------------------------------------------------------------------
    def set_detections(self, detections: list[Detection]) -> None:
        for item in self._overlay + [m for m in self._masks if m is not None]:
            self.scene().removeItem(item)
        self._overlay, self._boxes, self._chips, self._masks = [], [], [], []
        self.detections, self.hovered = list(detections), -1
        if self._pixmap_item is None:
            self.detections = []
            self.detections_changed.emit()
            return
        self._colors = label_colors([d.label for d in detections])
        for i, det in enumerate(detections):
            color = self._colors[det.label]
            x0, y0, x1, y1 = det.box
            rect = _HoverRect(QRectF(x0, y0, x1 - x0, y1 - y0), i)
            rect.setPen(self._box_pen(color, False))
            rect.setZValue(Z_BOX)
            rect.setToolTip(det.label or "(no label)")
            self.scene().addItem(rect)
            chip = LabelChip(det.label or "(no label)", color, self.chip_font, i)
            chip.setPos(x0, y0)
            self.scene().addItem(chip)
            self._boxes.append(rect)
            self._chips.append(chip)
            self._overlay += [rect, chip]
        self._masks = [None] * len(detections)
        self.set_boxes_visible(self.boxes_visible)
        self.layout_chips()
        self.detections_changed.emit()

    def set_masks(self, overlays: list[tuple[int, int, QImage] | None]) -> None:
        """One (x, y, ARGB image of the box's size) per detection, or None; drawn under the boxes."""
        for item in self._masks:
            if item is not None:
                self.scene().removeItem(item)
        self._masks = []
        for i, overlay in enumerate(overlays[:len(self.detections)]):
            if overlay is None:
                self._masks.append(None)
                continue
            x, y, image = overlay
            item = _MaskItem(QPixmap.fromImage(image), i)
            item.setPos(x, y)
            item.setToolTip(self.detections[i].label or "(no label)")
            item.setVisible(self.masks_visible)
            self.scene().addItem(item)
            self._masks.append(item)
        self._masks += [None] * (len(self.detections) - len(self._masks))

    def set_boxes_visible(self, visible: bool) -> None:
        self.boxes_visible = visible
        for item in self._overlay:
            item.setVisible(visible)

    def set_masks_visible(self, visible: bool) -> None:
        self.masks_visible = visible
        for item in self._masks:
            if item is not None:
                item.setVisible(visible)

    def has_masks(self) -> bool:
        return any(m is not None for m in self._masks)

    def color_of(self, index: int) -> QColor:
        return QColor(self._colors[self.detections[index].label])

    def set_hovered(self, index: int) -> None:
        """Hover from the canvas itself; tells a list of the objects through `object_hovered`."""
        if index != self.hovered:
            self.highlight(index)
            self.object_hovered.emit(index)

    def highlight(self, index: int) -> None:
        """Emphasise object `index` (-1: none): a thicker box, an outlined chip, its mask fully opaque."""
        self.hovered = index
        for i, (rect, chip) in enumerate(zip(self._boxes, self._chips)):
            rect.setPen(self._box_pen(chip.color, i == index))
            chip.highlighted = i == index
            chip.setZValue(Z_CHIP + (1 if i == index else 0))
            chip.update()
        for i, mask in enumerate(self._masks):
            if mask is not None:
                mask.setOpacity(1.0 if index in (-1, i) else 0.6)
                mask.setZValue(Z_MASK + (0.5 if i == index else 0))

    @staticmethod
    def _box_pen(color: QColor, highlighted: bool) -> QPen:
        pen = QPen(color, BOX_WIDTH_PX * (2 if highlighted else 1))
        pen.setCosmetic(True)  # the same width on screen at any zoom
        return pen

    def layout_chips(self) -> None:
        """Put each chip above its box's top-left corner (or inside it, at the image's top edge), then move it down
        until it overlaps no chip placed before it. Done in screen pixels, so it is redone after every zoom."""
        placed: list[QRectF] = []
        for chip, det in zip(self._chips, self.detections):
            x0, y0, _, y1 = det.box
            anchor = self.mapFromScene(QPointF(x0, y0))
            size = chip.size
            top = anchor.y() - size.height() if anchor.y() - size.height() >= self.mapFromScene(QPointF(0, 0)).y() \
                else anchor.y()
            rect = QRectF(anchor.x(), top, size.width(), size.height())
            for _ in range(len(placed) + 1):
                clash = next((p for p in placed if p.intersects(rect)), None)
                if clash is None:
                    break
                rect.moveTop(clash.bottom() + CHIP_GAP_PX)
            placed.append(rect)
            chip.set_offset(QPointF(rect.left() - anchor.x(), rect.top() - anchor.y()))
        self.viewport().update()

    def chip_screen_rects(self) -> list[QRectF]:
        """Where each label chip is on screen (viewport pixels): for tests and accessibility."""
        out = []
        for chip in self._chips:
            anchor = self.mapFromScene(chip.pos())
            out.append(chip.boundingRect().translated(QPointF(anchor)))
        return out

    def overlay_rects(self) -> list[QRectF]:
        """The drawn boxes in image pixels (for tests and accessibility)."""
        return [item.rect() for item in self._boxes]
