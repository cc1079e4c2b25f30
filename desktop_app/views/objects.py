"""The objects of the answer shown on the canvas: a compact list under the image, the Masks toggle, saving, and the
mask decoder's download offer.

ObjectsController is the window's one handle on all of it: it follows the canvas (`detections_changed`), asks
jobs/masks.py to decode segmentation masks off the GUI thread, hands the overlays to the canvas, and links hover
both ways (a list row and its object on the canvas). Decoded masks are kept on the answer's version
(`version.masks`, the decoder's float[64, 64] per object) so the history store keeps them and switching back to an
answer needs no second decode; a restored conversation's stored masks are drawn without the decoder at all.
"""

from __future__ import annotations

import os

from PySide6.QtCore import QSize, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton,
                               QToolButton, QVBoxLayout, QWidget)

from vlm_core.runtime.answers import Detection
from vlm_core.weights.vae import MASK_DECODER_REPO, MASK_DECODER_TITLE

from ..jobs.masks import MaskDecoding, MaskResult, MaskSaver
from .file_dialogs import remember_folder, start_folder

MASK_DECODER_SIZE = "8.5 MB"
DECODER_FILE = "mask_decoder_file"  # QSettings key: a decoder file chosen in the Models dialog


def object_row_text(det: Detection, has_mask: bool) -> str:
    x0, y0, x1, y1 = det.pixel_box
    kind = "mask" if has_mask else ("mask codes" if det.has_mask_codes else "box")
    return f"{det.label or '(no label)'}  ·  {x1 - x0}×{y1 - y0} px  ·  {kind}"


class ObjectList(QListWidget):
    """One compact row per object with its colour; hovering a row reports it (`row_hovered`, -1 on leaving)."""

    row_hovered = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMouseTracking(True)
        self.setIconSize(QSize(12, 12))
        self.setUniformItemSizes(True)
        self.setSelectionMode(QListWidget.SelectionMode.SingleSelection)
        self.itemEntered.connect(lambda item: self.row_hovered.emit(self.row(item)))

    def leaveEvent(self, event) -> None:
        super().leaveEvent(event)
        self.row_hovered.emit(-1)

    def fit_rows(self, visible_rows: int = 4) -> None:
        rows = max(1, min(self.count(), visible_rows))
        self.setFixedHeight(rows * max(self.sizeHintForRow(0), 16) + 2 * self.frameWidth() + 2)


class ObjectsPanel(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.list = ObjectList()
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.download_button = QPushButton(f"Download the mask decoder ({MASK_DECODER_SIZE})")
        self.download_button.setVisible(False)
        self.save_button = QPushButton("Save masks…")
        self.save_button.setToolTip("Save one PNG per mask and the annotated image (also on right-click)")
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.status, 1)
        row.addWidget(self.download_button)
        row.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 2)
        layout.setSpacing(2)
        layout.addWidget(self.list)
        layout.addLayout(row)
        self.setVisible(False)


def _swatch(color: QColor) -> QIcon:
    pixmap = QPixmap(12, 12)
    pixmap.fill(color)
    return QIcon(pixmap)


class ObjectsController:
    """Owns the Masks toggle and the objects panel for `window` (a MainWindow: canvas, settings, image, session)."""

    def __init__(self, window):
        self.window = window
        self.canvas = window.canvas
        self.masks_toggle = QToolButton()
        self.masks_toggle.setText("Masks")
        self.masks_toggle.setCheckable(True)
        self.masks_toggle.setChecked(True)
        self.masks_toggle.setToolTip("Show or hide segmentation masks")
        self.masks_toggle.setVisible(False)
        self.panel = ObjectsPanel()
        self.decoding = MaskDecoding(window)
        self.saver = MaskSaver(window)
        self.result: MaskResult | None = None
        # The CLI's --vae for the app: a decoder file taken as given instead of the store's official copy.
        # Models › Choose a file… sets it too, and it is remembered.
        self.vae_path: str | None = (os.environ.get("PALIGEMMA_VAE") or str(window.store.value(DECODER_FILE, "") or "")
                                     or None)
        self._pending = 0
        self.download_dialog = None

        self.masks_toggle.toggled.connect(self.canvas.set_masks_visible)
        self.canvas.detections_changed.connect(self.refresh)
        self.canvas.object_hovered.connect(self._on_canvas_hover)
        self.canvas.save_requested.connect(self.save)
        self.panel.list.row_hovered.connect(self.canvas.highlight)
        self.panel.save_button.clicked.connect(self.save)
        self.panel.download_button.clicked.connect(self.download_decoder)
        self.decoding.decoded.connect(self._on_decoded)
        self.decoding.failed.connect(self._on_failed)
        self.saver.saved.connect(self._on_saved)
        self.saver.failed.connect(self._on_save_failed)

    # -- following the canvas ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        dets = self.canvas.detections
        self.result = None
        self._pending = 0
        self.panel.download_button.setVisible(False)
        self._fill_list(dets, [False] * len(dets))
        self.panel.setVisible(bool(dets))
        wants_masks = any(d.has_mask_codes for d in dets)
        self.masks_toggle.setVisible(wants_masks)
        self.panel.save_button.setEnabled(False)
        self.panel.save_button.setVisible(wants_masks)
        if not wants_masks:
            self.panel.status.setText("")
            return
        self.panel.status.setText("Decoding masks…")
        self._pending = self.decoding.request(dets, self.window.settings.models_folder(), vae=self.vae_path,
                                              logits=self._stored_logits(dets))

    def _versions_with(self, dets: list[Detection]):
        session = getattr(self.window, "session", None)
        entry = session.current if session is not None else None
        for turn in getattr(entry, "turns", []) or []:
            for version in getattr(turn, "versions", []) or []:
                if getattr(version, "detections", None) == dets:
                    yield version

    def _stored_logits(self, dets: list[Detection]):
        for version in self._versions_with(dets):
            masks = getattr(version, "masks", None)
            if masks and len(masks) == len(dets) and any(m is not None for m in masks):
                return list(masks)
        return None

    def _on_decoded(self, result: MaskResult) -> None:
        if result.request != self._pending or result.detections != self.canvas.detections:
            return  # a newer answer or image is shown
        self.result = result
        self.canvas.set_masks(result.overlays)
        self.canvas.set_masks_visible(self.masks_toggle.isChecked())
        for version in self._versions_with(result.detections):
            version.masks = list(result.logits)
        for turn in getattr(getattr(self.window.session, "current", None), "turns", []) or []:
            if turn.current.detections == result.detections:
                self.window.chat.update_turn(turn)  # its card's object lines now say "mask"
        n = sum(m is not None for m in result.masks)
        self._fill_list(result.detections, [m is not None for m in result.masks])
        self.panel.status.setText(f"{n} mask{'s' if n != 1 else ''} · hover to name an object")
        self.panel.save_button.setEnabled(n > 0)

    def _on_failed(self, request: int, kind: str, message: str) -> None:
        if request != self._pending:
            return
        if kind == "missing":
            self.panel.status.setText("Masks need PaliGemma's mask decoder, which is not downloaded yet "
                                      f"({MASK_DECODER_SIZE}, once; it then works offline).")
            self.panel.download_button.setVisible(True)
        else:
            self.panel.status.setText(message)

    def _fill_list(self, dets: list[Detection], has_mask: list[bool]) -> None:
        lst = self.panel.list
        lst.clear()
        for i, (det, masked) in enumerate(zip(dets, has_mask)):
            item = QListWidgetItem(_swatch(self.canvas.color_of(i)), object_row_text(det, masked))
            item.setToolTip(det.label or "(no label)")
            lst.addItem(item)
        lst.fit_rows()

    def _on_canvas_hover(self, index: int) -> None:
        lst = self.panel.list
        if 0 <= index < lst.count():
            lst.setCurrentRow(index)
            label = self.canvas.detections[index].label or "(no label)"
            self.window.statusBar().showMessage(label, 3000)
        else:
            lst.clearSelection()

    # -- saving and downloading -------------------------------------------------------------------------------
    def save(self, folder: str | None = None) -> None:
        if self.result is None or not any(m is not None for m in self.result.masks) or self.window.image is None:
            self.window.statusBar().showMessage("There are no decoded masks to save for this answer.", 4000)
            return
        folder = folder or QFileDialog.getExistingDirectory(self.window, "Save the masks and the annotated image",
                                                            start_folder(self.window.store))
        if not folder:
            return
        remember_folder(folder, self.window.store)
        self.panel.save_button.setEnabled(False)
        self.saver.save(folder, self.window.image.pil, self.result.detections, self.result.masks)

    def _on_saved(self, folder: str) -> None:
        self.panel.save_button.setEnabled(True)
        n = sum(m is not None for m in self.result.masks) if self.result else 0
        self.panel.status.setText(f"Saved {n} mask PNG{'s' if n != 1 else ''} and annotated.png in {folder}")

    def _on_save_failed(self, message: str) -> None:
        self.panel.save_button.setEnabled(True)
        self.panel.status.setText(message)

    def use_decoder_file(self, path: str) -> None:
        """Models › Choose a file…: decode with this vae-oid.npz from now on (its layout is checked on use)."""
        self.vae_path = path
        self.window.store.setValue(DECODER_FILE, path)
        self.refresh()

    def download_decoder(self) -> None:
        from .download_dialog import DownloadDialog

        dialog = DownloadDialog(MASK_DECODER_REPO, MASK_DECODER_TITLE, self.window.settings.models_folder(),
                                self.window)
        dialog.downloaded.connect(lambda _path: self.refresh())
        dialog.start()
        dialog.open()
        self.download_dialog = dialog

    def shutdown(self) -> None:
        self.decoding.wait()
        self.saver.wait()
