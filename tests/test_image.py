"""The processor: real photos against transformers' SigLIP processor, and every image mode a person can drop in."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from vlm_core.errors import ImageError
from vlm_core.runtime.image import load_image, preprocess


def _png(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kwargs.pop("format", "PNG"), **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize("size", [224, 448])
def test_pixels_equal_transformers_siglip_processor(photos, size):
    transformers = pytest.importorskip("transformers")
    ref = transformers.SiglipImageProcessorPil(size={"height": size, "width": size})
    for photo in photos:
        theirs = torch.as_tensor(np.asarray(ref(Image.open(photo), return_tensors="np")["pixel_values"][0]))
        mine = preprocess(load_image(photo), size)
        assert mine.shape == (3, size, size) and mine.dtype == torch.float32
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)
        assert mine.min() >= -1 and mine.max() <= 1


def test_accepts_path_bytes_and_pil(photos):
    by_path = load_image(photos[0])
    by_bytes = load_image(photos[0].read_bytes())
    by_pil = load_image(Image.open(photos[0]))
    assert np.array_equal(np.asarray(by_path), np.asarray(by_bytes))
    assert np.array_equal(np.asarray(by_path), np.asarray(by_pil))


def test_exif_orientation_is_applied(photos):
    upright = load_image(photos[0])
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # how a phone stores a portrait shot
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    loaded = load_image(_png(stored, exif=exif))
    assert loaded.size == upright.size
    assert np.array_equal(np.asarray(loaded), np.asarray(upright))


def test_transparency_is_composited_onto_white():
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(255, 0, 0, 0), (255, 0, 0, 255), (0, 0, 0, 128)])
    out = np.asarray(load_image(_png(rgba)))
    assert out[0, 0].tolist() == [255, 255, 255]  # fully transparent: the white behind it
    assert out[0, 1].tolist() == [255, 0, 0]
    assert out[0, 2].tolist() == [127, 127, 127]  # half-transparent black over white


@pytest.mark.parametrize("mode", ["LA", "PA"])
def test_grey_and_palette_alpha_modes(mode):
    img = Image.new("RGBA", (2, 1))
    img.putdata([(0, 0, 0, 0), (0, 0, 0, 255)])
    converted = img.convert(mode)
    out = np.asarray(load_image(converted if mode == "PA" else _png(converted)))  # PNG cannot store PA
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [0, 0, 0]


def test_palette_with_transparency_index():
    img = Image.new("P", (2, 1))
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    img.putdata([0, 1])
    out = np.asarray(load_image(_png(img, transparency=0)))
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [200, 100, 50]


def test_sixteen_bit_is_scaled_not_clipped():
    values = np.array([[0, 1000, 32896, 65535]], dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    out = np.asarray(load_image(_png(img)))
    assert out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 4, 128, 255]


def test_cmyk_and_grayscale_become_rgb(photos):
    rgb = load_image(photos[0])
    cmyk = load_image(_png(rgb.convert("CMYK"), format="JPEG", quality=95))
    assert cmyk.mode == "RGB" and cmyk.size == rgb.size
    assert np.abs(np.asarray(cmyk, dtype=int) - np.asarray(rgb, dtype=int)).mean() < 6
    grey = np.asarray(load_image(_png(rgb.convert("L"))))
    assert grey.shape[2] == 3 and (grey[..., 0] == grey[..., 2]).all()


def test_first_frame_of_an_animation():
    frames = [Image.new("RGB", (4, 4), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    out = np.asarray(load_image(buf.getvalue()))
    assert out[0, 0].tolist() == [255, 0, 0]


def test_decompression_bomb_is_refused_with_a_message(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    # Between 1x and 2x its limit Pillow only warns, and so a 144 MP PNG opens (tests/test_big_photos.py); beyond
    # 2x a file that has no reduced decode is refused, as Pillow refuses it.
    assert load_image(_png(Image.new("RGB", (150, 1)))).size == (150, 1)
    for data in (_png(Image.new("RGB", (201, 1))), _png(Image.new("RGB", (201, 1)), format="GIF")):
        with pytest.raises(ImageError, match=r"too large to open safely \(over 200 pixels\); scale it down"):
            load_image(data)


@pytest.mark.parametrize("data, match", [
    (b"not an image at all", "not an image format"),
    (None, "damaged or incomplete"),
])
def test_corrupt_input_gets_a_clear_error(photos, data, match):
    if data is None:
        data = photos[0].read_bytes()[:4000]  # a truncated PNG
    with pytest.raises(ImageError, match=match):
        load_image(data)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)
