"""Image input: decode anything a person may drop in, then SigLIP's preprocessing.

Decoding normalises what cameras, browsers and scanners produce: EXIF orientation, transparency (composited onto
white, as a viewer shows it), 16-bit samples (scaled, not clipped), palette, CMYK and grayscale modes, animations
(first frame). Preprocessing then matches transformers' SigLIP image processor: PIL bicubic resize to S x S
(aspect ratio not kept), x / 255, then (x - 0.5) / 0.5 into [-1, 1].
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError

if TYPE_CHECKING:
    import torch

ImageSource = str | Path | bytes | Image.Image


def load_image(source: ImageSource) -> Image.Image:
    """Decode `source` (a path, encoded bytes, or a PIL image) into an 8-bit RGB image, upright."""
    name = str(source) if isinstance(source, (str, Path)) else "the image"
    try:
        with warnings.catch_warnings():
            # Between 1x and 2x Pillow's pixel limit it only warns; treat both the same, as a refusal.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(source, Image.Image):
                img = source
            elif isinstance(source, (bytes, bytearray, memoryview)):
                img = Image.open(io.BytesIO(bytes(source)))
            else:
                img = Image.open(source)
            if getattr(img, "is_animated", False):
                img.seek(0)
            img.load()
            return to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name} is too large to open safely (over {Image.MAX_IMAGE_PIXELS:,} pixels); "
                         "scale it down in an image editor first") from None
    except FileNotFoundError:
        raise ImageError(f"{name} does not exist") from None
    except IsADirectoryError:
        raise ImageError(f"{name} is a folder, not an image") from None
    except PermissionError:
        raise ImageError(f"{name} cannot be read (permission denied)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image format this app can read (try PNG, JPEG, WebP, GIF, BMP or TIFF)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name} is damaged or incomplete ({e}); try re-saving or re-downloading it") from None


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
