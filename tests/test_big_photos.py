"""Photos as phones make them: a 200 MP JPEG (16320 x 12240) answers with bounded memory, a 144 MP PNG opens, and a
file that only claims to be huge is still refused with the clear message.

The big files are written by a child process (a full-size image is ~600 MB while it is encoded, which the test
process should not keep), with low-entropy content so that writing them takes seconds. Memory is measured in a
child of its own (VmHWM) and asserted against a bound; the seconds are printed, never asserted.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys

import pytest
import torch
from PIL import Image

from vlm_core.errors import ImageError
from vlm_core.runtime.image import load_image, original_size, preprocess

MiB = 2**20

_WRITE = r"""
import sys
from PIL import Image, ImageDraw
w, h, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
small = Image.new("RGB", (w // 16, h // 16), (170, 190, 210))
draw = ImageDraw.Draw(small)
for i in range(0, w // 16, 60):  # blocks of colour: some structure, little entropy
    draw.rectangle([i, (i * 3) % (h // 16), i + 45, (i * 3) % (h // 16) + 200], fill=(i % 256, 90, 255 - i % 256))
draw.ellipse([w // 64, h // 64, w // 24, h // 24], fill=(250, 230, 40))
big = small.resize((w, h), Image.Resampling.NEAREST)
if path.endswith(".png"):
    big.save(path, compress_level=1)
else:
    big.save(path, quality=90)
"""

# Runs the engine on the photo in a fresh process and reports what it cost.
_ANSWER = r"""
import json, sys, time
from vlm_core.cli.bench import _peak_rss_bytes, _rss_bytes
from vlm_core.runtime.engine import Engine
from vlm_core.runtime.generate import SamplingParams
engine = Engine.load(sys.argv[1], device="cpu", dtype="float32")
engine.generate(sys.argv[3], "caption en", SamplingParams(max_new_tokens=2))  # warm up on a small photo
before = _rss_bytes()
t0 = time.perf_counter()
prepared = engine.prepare_image(sys.argv[2])
decoded = time.perf_counter() - t0
result = engine.generate(prepared, "caption en", SamplingParams(max_new_tokens=8, ignore_eos=True))
print(json.dumps({"decode_s": decoded, "answer_s": time.perf_counter() - t0, "tokens": len(result.token_ids),
                  "peak_added": _peak_rss_bytes() - before, "decoded_size": list(prepared.image.size),
                  "original_size": list(prepared.image.info.get("original_size", prepared.image.size))}))
"""


def _write(path, w, h):
    subprocess.run([sys.executable, "-c", _WRITE, str(w), str(h), str(path)], check=True, timeout=300)
    return path


@pytest.fixture(scope="module")
def photo_200mp(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("big") / "phone.jpg", 16320, 12240)


def test_a_200_megapixel_jpeg_answers_with_bounded_memory(toy_model_dir, photo_200mp, photos):
    with pytest.raises(Image.DecompressionBombError):  # 199.8 MP: over 2x Pillow's limit of 89.5 MP
        Image.open(photo_200mp)
    out = subprocess.run([sys.executable, "-c", _ANSWER, str(toy_model_dir), str(photo_200mp), str(photos[0])],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    run = json.loads(out.stdout)
    print(f"\n200 MP JPEG: decoded at {run['decoded_size']} in {run['decode_s']:.2f} s, answered in "
          f"{run['answer_s']:.2f} s, peak RSS added {run['peak_added'] / MiB:.0f} MiB")
    assert run["original_size"] == [16320, 12240] and run["decoded_size"] == [2040, 1530]  # 1/8 in libjpeg
    assert run["tokens"] == 8
    assert run["peak_added"] < 100 * MiB  # a full decode alone is 571 MiB of RGB


def test_the_cli_answers_about_it(toy_model_dir, photo_200mp):
    out = subprocess.run([sys.executable, "-m", "vlm_core", "generate", "--model", str(toy_model_dir), "--image",
                          str(photo_200mp), "--prompt", "caption en", "--max-new-tokens", "4", "--ignore-eos",
                          "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["token_ids"]) == 4


def _jpeg(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, **kwargs)
    return buf.getvalue()


def test_reduced_decode_stays_within_two_levels_of_a_full_decode(monkeypatch, photos):
    """A real photo, 12 MP, decoded reduced the way a 200 MP one is (the limit lowered to 2 MP so that 12 MP is
    over it): the processor's pixels differ from a full decode's by at most 2 of 255 levels. At full scale
    (astronaut upscaled to 16320 x 12240, measured once) the difference is 1 level at 224 px and 2 at 896 px."""
    photo = Image.open(photos[1]).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
    data = _jpeg(photo)
    full = preprocess(Image.open(io.BytesIO(data)).convert("RGB"), 224)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2_000_000)
    img = load_image(data, min_size=224)
    assert img.size == (1000, 750) and original_size(img) == (4000, 3000)  # 1/4: 1000 >= 2 x 224 pixels left
    diff = (preprocess(img, 224) - full).abs()
    assert diff.max() <= 2 / 127.5 + 1e-6 and diff.mean() < 2e-3  # [-1, 1] units: one level is 1/127.5


def test_below_the_limit_nothing_changes(photos):
    data = _jpeg(Image.open(photos[0]).convert("RGB"))
    exact = Image.open(io.BytesIO(data)).convert("RGB")
    img = load_image(data, min_size=56)  # tiny S, but the photo is within the limit: decoded in full
    assert img.size == exact.size and "original_size" not in img.info
    assert torch.equal(preprocess(img, 56), preprocess(exact, 56))


def test_orientation_and_the_original_size(monkeypatch, photos):
    stored = Image.open(photos[0]).convert("RGB").resize((800, 600))
    exif = Image.Exif()
    exif[0x0112] = 6  # a portrait shot stored sideways
    data = _jpeg(stored, exif=exif)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    img = load_image(data)  # no min_size (the app's display): the largest scale that fits within the limit
    assert img.size == (150, 200) and original_size(img) == (600, 800)


def test_a_144_megapixel_png_opens(tmp_path):
    path = _write(tmp_path / "scan.png", 12000, 12000)
    img = load_image(path)
    assert img.size == (12000, 12000) and img.mode == "RGB"
    assert preprocess(img, 224).shape == (3, 224, 224)


def _claiming(data: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header (SOF0) rewritten to claim another size: the shape of a JPEG bomb."""
    at = data.index(b"\xff\xc0")
    return data[:at + 5] + struct.pack(">HH", height, width) + data[at + 9:]


def test_suspicious_files_are_still_refused_with_the_message(photos):
    small = _jpeg(Image.open(photos[0]).convert("RGB").resize((64, 48)))
    bomb = _claiming(small, 65000, 65000)  # 4.2 gigapixels claimed by a 2 KB file
    with pytest.raises(ImageError, match=r"too large to open safely \(over 715,827,880 pixels\); scale it down"):
        load_image(bomb, min_size=224)
    with pytest.raises(ImageError, match="too large to open safely"):
        load_image(bomb)
    # Claiming a phone's size is no threat once the decode is reduced: it costs what a 3 MP image costs (libjpeg
    # fills what the thumbnail's data does not cover).
    img = load_image(_claiming(small, 16320, 12240), min_size=224)
    assert img.size == (2040, 1530) and original_size(img) == (16320, 12240)
