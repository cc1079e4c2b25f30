"""Image input: decode anything a person may drop in, then SigLIP's preprocessing.

Decoding normalises what cameras, browsers and scanners produce: EXIF orientation, transparency (composited onto
white, as a viewer shows it), 16-bit samples (scaled, not clipped), palette, CMYK and grayscale modes, animations
(first frame). Preprocessing then matches transformers' SigLIP image processor: PIL bicubic resize to S x S
(aspect ratio not kept), x / 255, then (x - 0.5) / 0.5 into [-1, 1].

Big photos. Pillow's limit (Image.MAX_IMAGE_PIXELS, 89 MP by default) guards against decompression bombs: files
whose decode costs far more memory and time than their size suggests. A phone's 108-200 MP JPEG exceeds it, yet is
no bomb, because a JPEG can be decoded at 1/2, 1/4 or 1/8 scale inside libjpeg (Pillow's draft), and the reduced
decode costs what an image of that size costs. So the limit is applied to the decode actually done:
  - an image within the limit decodes in full, exactly what the reference processor sees;
  - a JPEG over the limit decodes at the smallest scale that still leaves 2 x `min_size` pixels on each side (the
    reducing gap of Pillow's own thumbnail(); the S x S bicubic resize then runs as always), or, without
    `min_size`, at the largest scale that fits within the limit. It is refused only if even that exceeds the limit
    or it claims more than 8 x the limit (716 MP: beyond any camera; libjpeg still walks every block);
  - anything else is refused above 2 x the limit, Pillow's own refusal line (between 1x and 2x Pillow only warns,
    so a 144 MP PNG opens; it has no reduced decode and costs ~430 MB).
Limitation: a progressive JPEG keeps its full coefficient buffer during a reduced decode (libjpeg's design), so a
200 MP progressive file needs ~600 MB; phones write baseline JPEGs.
"""

from __future__ import annotations

import errno
import io
import os
import struct
import warnings
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from ..errors import ImageError

if TYPE_CHECKING:
    import torch

ImageSource = str | Path | bytes | Image.Image

_JPEG_MAGIC = b"\xff\xd8\xff"
_REDUCING_GAP = 2  # decode to at least this many times the processor's size, as Image.thumbnail does
_JPEG_CLAIM_LIMIT = 8  # x MAX_IMAGE_PIXELS: the most pixels a JPEG may claim to decode reduced


class _Empty(Exception):
    pass


class _TooLarge(Exception):
    def __init__(self, limit: int):
        self.limit = limit


def load_image(source: ImageSource, min_size: int | None = None) -> Image.Image:
    """Decode `source` (a path, encoded bytes, or a PIL image) into an 8-bit RGB image, upright.

    `min_size`: the side the image will be resized to (the processor's S); a JPEG over Pillow's pixel limit then
    decodes straight to a small multiple of it. original_size(image) gives the size of the file's pixels."""
    name = str(source) if isinstance(source, (str, Path)) else "the image"
    try:
        with warnings.catch_warnings():
            # Between 1x and 2x its limit Pillow only warns; the checks below decide (see the module docstring).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if isinstance(source, Image.Image):
                return _decode(source, None)
            if isinstance(source, (bytes, bytearray, memoryview)):
                if not len(source):
                    raise _Empty()
                return _decode(_open(io.BytesIO(bytes(source)), ""), min_size)
            with open(source, "rb") as f:
                if os.fstat(f.fileno()).st_size == 0:
                    raise _Empty()
                return _decode(_open(f, str(source)), min_size)
    except _Empty:
        raise ImageError(f"{name} is empty (0 bytes): the file has no image in it; copy or save it again") from None
    except _TooLarge as e:
        raise ImageError(f"{name} is too large to open safely (over {e.limit:,} pixels); "
                         "scale it down in an image editor first") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{name} is too large to open safely (over {2 * Image.MAX_IMAGE_PIXELS:,} pixels); "
                         "scale it down in an image editor first") from None
    except FileNotFoundError:
        raise ImageError(f"{name} does not exist") from None
    except IsADirectoryError:
        raise ImageError(f"{name} is a folder, not an image") from None
    except PermissionError:
        raise ImageError(f"{name} cannot be read (permission denied)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image format this app can read (try PNG, JPEG, WebP, GIF, BMP or TIFF)") from None
    except OSError as e:  # after its subclasses above
        if e.errno == errno.ELOOP:
            raise ImageError(f"{name} is a symlink loop (the link leads back to itself); fix or remove the link") \
                from None
        raise _damaged(name, e) from None
    except (SyntaxError, ValueError, struct.error) as e:
        raise _damaged(name, e) from None


def _damaged(name: str, e: BaseException) -> ImageError:
    return ImageError(f"{name} is damaged or incomplete ({e}); try re-saving or re-downloading it")


def original_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) of the file's pixels, upright: larger than img.size where a big JPEG decoded reduced. Pixel
    coordinates for the user (detection boxes) are in this size."""
    return img.info.get("original_size", img.size)


def _open(f, filename: str) -> Image.Image:
    """Image.open, except that a JPEG skips Pillow's bomb check at open: _decode applies it to the reduced size."""
    if f.read(3) == _JPEG_MAGIC:
        f.seek(0)
        return JpegImagePlugin.jpeg_factory(f, filename)  # what Image.open picks for JPEG and MPO, minus the check
    f.seek(0)
    return Image.open(f)


def _decode(img: Image.Image, min_size: int | None) -> Image.Image:
    if getattr(img, "is_animated", False):
        img.seek(0)
    full = img.size
    limit = Image.MAX_IMAGE_PIXELS
    if isinstance(img, JpegImagePlugin.JpegImageFile) and limit is not None and _pixels(full) > limit:
        if _pixels(full) > _JPEG_CLAIM_LIMIT * limit:
            raise _TooLarge(_JPEG_CLAIM_LIMIT * limit)
        img.draft(img.mode, _draft_request(full, min_size, limit))
        if _pixels(img.size) > limit:
            raise _TooLarge(limit)
    img.load()
    rgb = to_rgb(img)
    if img.size != full:
        turned = rgb.size[0] != img.size[0]  # EXIF said 90 or 270 degrees
        rgb.info["original_size"] = full[::-1] if turned else full
    return rgb


def _draft_request(full: tuple[int, int], min_size: int | None, limit: int) -> tuple[int, int]:
    """The size to ask draft() for (it picks the largest of 1/8, 1/4, 1/2 that stays at least that size): the
    smallest scale that fits within the limit, reduced further while 2 x min_size pixels remain on each side."""
    fits = next((s for s in (2, 4, 8) if _pixels((full[0] // s, full[1] // s)) <= limit), 8)
    scale = fits
    if min_size is not None:
        scale = max(fits, next(s for s in (8, 4, 2, 1) if min(full) // s >= _REDUCING_GAP * min_size or s == 1))
    return full[0] // scale, full[1] // scale


def _pixels(size: tuple[int, int]) -> int:
    return max(1, size[0]) * max(1, size[1])


def to_rgb(img: Image.Image) -> Image.Image:
    img = ImageOps.exif_transpose(img)  # phones store portrait photos sideways with an orientation tag
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        img = _scale_high_bit_depth(img)
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) * (255.0 if _max(img) <= 1.0 else 1.0),
                                      0, 255).round().astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "La", "PA", "RGBa") or (img.mode == "L" and "transparency" in img.info):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    return img.convert("RGB") if img.mode != "RGB" else img


def _max(img: Image.Image) -> float:
    return float(np.asarray(img).max(initial=0))


def _scale_high_bit_depth(img: Image.Image) -> Image.Image:
    # 16-bit PNG and TIFF samples span 0..65535; Pillow's own convert("L") clips them to 255 (a white image).
    arr = np.asarray(img, dtype=np.float64)
    scale = 65535.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
    return Image.fromarray(np.clip(arr / scale * 255.0, 0, 255).round().astype(np.uint8))


def preprocess(img: Image.Image, size: int) -> "torch.Tensor":
    """RGB image -> float32[3, size, size] in [-1, 1]."""
    import torch  # here, not at the top: the desktop app decodes images on threads that never need torch

    resized = img.resize((size, size), resample=Image.Resampling.BICUBIC)
    arr = (np.asarray(resized, dtype=np.float64) * (1 / 255)).astype(np.float32)  # the reference's rescale
    arr = (arr - 0.5) / 0.5
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
