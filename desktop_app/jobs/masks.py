"""Decoding an answer's segmentation masks off the GUI thread, and saving them.

A request names the objects and the image size; a pool thread loads the mask decoder once (kept for the next
request), decodes every object's 16 codes in one batch, places each mask on the original image exactly as
vlm_core.runtime.masks does, and builds one translucent ARGB overlay per object, cropped to its box (a full-size
overlay per object would cost width x height x 4 bytes each). It emits plain data (numpy arrays and QImages, never
a QPixmap or a widget): `decoded(MaskResult)` or `failed(request, kind, message)`, kind "missing" when the decoder's
weights are not installed yet. Results of a request that has been superseded are dropped by the caller (the
request id says which). numpy and the drawing code are imported by the pool thread when it first needs them, so
importing this module costs the window nothing before it is shown.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtGui import QImage

from vlm_core.runtime.answers import Detection
from vlm_core.runtime.palette import FILL_ALPHA, label_color_names

if TYPE_CHECKING:
    import numpy as np

_decoders: dict[tuple[str, float], object] = {}  # (path, mtime) -> MaskDecoder, shared by the pool's threads
_decoders_lock = threading.Lock()


@dataclass
class MaskResult:
    request: int
    detections: list[Detection]
    logits: list[np.ndarray | None]  # float[64, 64] per object (the decoder's output), None without codes
    masks: list[np.ndarray | None]  # bool[H, W] on the original image, None for no mask
    overlays: list[tuple[int, int, QImage] | None]  # x, y and the box-sized overlay, for the canvas


def overlay_image(mask: np.ndarray, box: tuple[int, int, int, int], color: str, outline: int) -> QImage:
    """The part of `mask` inside `box` as an RGBA image: the fill at FILL_ALPHA, the outline opaque."""
    import numpy as np

    from vlm_core.runtime.annotate import mask_outline

    x0, y0, x1, y1 = box
    crop = mask[y0:y1, x0:x1]
    rgba = np.zeros((*crop.shape, 4), dtype=np.uint8)
    rgba[..., :3] = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    rgba[..., 3] = np.where(crop, round(255 * FILL_ALPHA), 0)
    edge = mask_outline(mask, outline)[y0:y1, x0:x1]
    rgba[..., 3][edge] = 255
    h, w = crop.shape
    return QImage(rgba.tobytes(), w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()  # copy: own the bytes


def _decoder_for(path: Path, official: bool):
    from vlm_core.weights.vae import load_decoder

    key = (str(path), path.stat().st_mtime)
    with _decoders_lock:
        if key not in _decoders:
            _decoders[key] = load_decoder(path, official=official)
        return _decoders[key]


def decode_masks(detections: list[Detection], models_folder: str | None, vae: str | None = None,
                 logits: list | None = None) -> tuple[list, list]:
    """(logits, masks) per object. Stored `logits` (a restored conversation) are used as they are; otherwise the
    decoder runs (raises HubError "not_installed" when its weights are missing)."""
    import numpy as np

    from vlm_core.runtime.masks import place_mask

    if logits is None or len(logits) != len(detections):
        from vlm_core.weights.vae import resolve_mask_decoder

        path, official = resolve_mask_decoder(vae, Path(models_folder) if models_folder else None)
        decoder = _decoder_for(path, official)
        with_codes = [i for i, d in enumerate(detections) if d.has_mask_codes]
        decoded = decoder.decode([detections[i].seg_codes for i in with_codes]) if with_codes else []
        logits = [None] * len(detections)
        for i, l64 in zip(with_codes, decoded):
            logits[i] = l64
    masks = [place_mask(np.asarray(l, np.float32), d) if l is not None else None for d, l in zip(detections, logits)]
    return list(logits), masks


class _Signals(QObject):
    decoded = Signal(object)
    failed = Signal(int, str, str)


class MaskDecoding(QObject):
    """The GUI's handle: `request(...)` returns an id; one of `decoded` / `failed` follows for it."""

    decoded = Signal(object)  # MaskResult
    failed = Signal(int, str, str)  # request id, kind ("missing" or "error"), message

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.pool = QThreadPool(self)  # first child, so it is destroyed first: it waits for a running job
        self.pool.setMaxThreadCount(1)  # requests run in order; one decoder in memory
        self._signals = _Signals(self)
        self._signals.decoded.connect(self.decoded)
        self._signals.failed.connect(self.failed)
        self._next = 0

    def request(self, detections: list[Detection], models_folder: str | None, vae: str | None = None,
                logits: list | None = None) -> int:
        self._next += 1
        request, signals = self._next, self._signals
        detections = list(detections)

        class Job(QRunnable):
            def run(self):
                from vlm_core.errors import VlmError
                from vlm_core.weights.hub import HubError

                try:
                    out_logits, masks = decode_masks(detections, models_folder, vae, logits)
                    colors = label_color_names([d.label for d in detections])
                    overlays = []
                    for d, m in zip(detections, masks):
                        if m is None:
                            overlays.append(None)
                            continue
                        x0, y0, x1, y1 = d.pixel_box
                        line = max(2, round(max(d.image_size) / 400))  # image pixels, as the saved PNG
                        overlays.append((x0, y0, overlay_image(m, (x0, y0, x1, y1), colors[d.label], line)))
                    signals.decoded.emit(MaskResult(request, detections, out_logits, masks, overlays))
                except HubError as e:
                    signals.failed.emit(request, "missing" if e.kind == "not_installed" else "error", str(e))
                except VlmError as e:
                    signals.failed.emit(request, "error", str(e))
                except Exception as e:  # noqa: BLE001 - never a dead thread; the window says what happened
                    signals.failed.emit(request, "error", f"The masks could not be decoded ({type(e).__name__}: {e})")

        self.pool.start(Job())
        return request

    def wait(self) -> None:
        self.pool.waitForDone()


class _SaveSignals(QObject):
    done = Signal(str, str)  # folder or "", error message or ""


class MaskSaver(QObject):
    """Writes the mask PNGs and the annotated image on a pool thread (large photos take a moment to encode)."""

    saved = Signal(str)  # folder
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.pool = QThreadPool(self)  # first child: destroyed (waiting for a save) before the signals it uses
        self.pool.setMaxThreadCount(1)
        self._signals = _SaveSignals(self)
        self._signals.done.connect(self._on_done)

    def save(self, folder: str, image, detections: list[Detection], masks: list) -> None:
        signals = self._signals

        class Job(QRunnable):
            def run(self):
                from vlm_core.runtime.annotate import annotate
                from vlm_core.runtime.masks import write_masks

                try:
                    write_masks(folder, detections, masks)
                    annotate(image, detections, masks).save(Path(folder) / "annotated.png")
                    signals.done.emit(folder, "")
                except OSError as e:
                    signals.done.emit("", f"The masks could not be saved in {folder}: {e.strerror or e}. "
                                          "Choose another folder.")

        self.pool.start(Job())

    def _on_done(self, folder: str, error: str) -> None:
        if error:
            self.failed.emit(error)
        else:
            self.saved.emit(folder)

    def wait(self) -> None:
        self.pool.waitForDone()
