"""Image decoding on the thread pool, so a 50-megapixel photo never freezes the window.

Produces what both sides need: an upright RGB PIL image for the engine (decoded once, here) and a QImage for the
canvas. QImage, unlike QPixmap, may be made off the GUI thread. numpy and Pillow are imported by the pool thread
that decodes the first image: the window is shown without them.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QObject, QRunnable, QThreadPool, Signal
from PySide6.QtGui import QImage

from vlm_core.errors import ImageError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


@dataclass(frozen=True)
class LoadedImage:
    name: str
    pil: Image.Image
    qimage: QImage
    key: str
    path: str = ""  # the file it was opened from; "" for pasted or dropped image data (history copies the file)

    @property
    def size(self) -> tuple[int, int]:
        return self.pil.size


def decode(source: str | Path | bytes | QImage, name: str) -> LoadedImage:
    """Decode a path, encoded bytes, or a QImage (pasted or dropped image data). Raises ImageError."""
    import numpy as np

    from vlm_core.runtime.image import load_image

    path = str(source) if isinstance(source, (str, Path)) else ""
    if isinstance(source, QImage):
        if source.isNull():
            raise ImageError(f"{name} holds no image data")
        data = QByteArray()
        buf = QBuffer(data)
        buf.open(QIODevice.OpenModeFlag.WriteOnly)
        source.save(buf, "PNG")
        source = bytes(data.data())
    pil = load_image(source)
    if pil.width * pil.height == 0:
        raise ImageError(f"{name} is empty (0 pixels)")
    rgb = np.asarray(pil)  # uint8[H, W, 3]
    key = hashlib.blake2b(rgb.data, digest_size=16, person=b"pgd-image").hexdigest()  # releases the GIL
    return LoadedImage(name, pil, display_image(rgb), key, path)


def display_image(rgb: np.ndarray) -> QImage:
    """uint8[H, W, 3] -> a QImage in the screen's native 32-bit format, sharing the array's memory.

    Why not QImage(rgb888).copy(): PySide holds the GIL through QImage's copy and conversion (measured 1.3 s for
    50 megapixels, all of it a frozen window), and QPixmap.fromImage converts RGB888 again on the GUI thread
    (170 ms). numpy's copies release the GIL, and an RGB32 image goes into a pixmap as a plain memcpy (20 ms).
    The QImage keeps the array alive (PySide holds the buffer it was made from)."""
    import numpy as np

    h, w, _ = rgb.shape
    argb = np.empty((h, w, 4), np.uint8)  # RGB32 is 0xffRRGGBB in a native-endian uint32
    b, g, r, a = (0, 1, 2, 3) if sys.byteorder == "little" else (3, 2, 1, 0)
    argb[..., b], argb[..., g], argb[..., r], argb[..., a] = rgb[..., 2], rgb[..., 1], rgb[..., 0], 255
    return QImage(argb.data, w, h, 4 * w, QImage.Format.Format_RGB32)


class _Signals(QObject):
    loaded = Signal(int, object)  # sequence number, LoadedImage
    failed = Signal(int, str)


class ImageLoader(QObject):
    """Decodes in the background; only the latest request's result is delivered."""

    loaded = Signal(object)  # LoadedImage
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._seq = 0
        self._signals = _Signals(self)
        self._signals.loaded.connect(self._on_loaded)
        self._signals.failed.connect(self._on_failed)
        self._pool = QThreadPool.globalInstance()

    def load(self, source: str | Path | bytes | QImage, name: str) -> None:
        self._seq += 1
        seq, signals = self._seq, self._signals

        class Job(QRunnable):
            def run(self):
                try:
                    signals.loaded.emit(seq, decode(source, name))
                except ImageError as e:
                    signals.failed.emit(seq, str(e))
                except Exception as e:  # a decoder bug must not kill the pool thread silently
                    signals.failed.emit(seq, f"{name} could not be opened ({type(e).__name__}: {e})")

        self._pool.start(Job())

    def _on_loaded(self, seq: int, image: LoadedImage) -> None:
        if seq == self._seq:
            self.loaded.emit(image)

    def _on_failed(self, seq: int, message: str) -> None:
        if seq == self._seq:
            self.failed.emit(message)

    def wait(self) -> None:
        self._pool.waitForDone()
