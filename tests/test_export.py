"""Exports of a stored conversation: the files hold what was asked and answered, Markdown renders its image links
(checked with Qt's own Markdown renderer), and the annotated PNG has the boxes and masks where the objects are."""

from __future__ import annotations

import json
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image
from PySide6.QtGui import QTextDocument

from desktop_app.history import export
from vlm_core.runtime import coco_rle as coco
from desktop_app.history import store as st
from desktop_app.history.store import HistoryStore, StoredObject, StoredTurn
from vlm_core.runtime.palette import PALETTE
from vlm_core.runtime.answers import objects_json, parse_objects
from vlm_core.runtime.masks import place_mask

SEG_ANSWER = "<loc0256><loc0256><loc0768><loc0768>" + "".join(f"<seg{i:03d}>" for i in range(16)) + " cat"


def disc_logits() -> np.ndarray:
    """float[64, 64]: positive inside a centred disc, as a decoder output would be."""
    yy, xx = np.mgrid[0:64, 0:64]
    return (20.0 - np.hypot(yy - 31.5, xx - 31.5)).astype(np.float32)


@pytest.fixture
def conv(tmp_path, photos):
    s = HistoryStore.open(tmp_path / "history")
    photo = photos[0]  # chelsea.png, 451 x 300
    sha = s.add_image(photo.read_bytes(), photo.suffix)
    cid = s.ensure_conversation("key", sha, "chelsea the cat.png")
    w, h = Image.open(photo).size
    model = {"name": "toy", "repo_id": "google/paligemma2-3b-mix-224", "folder": "/models/x", "dtype": "bfloat16",
             "device": "CUDA (H200)"}
    sampling = {"max_new_tokens": 64, "temperature": 0.0, "top_k": 0, "top_p": 1.0}
    stats = {"prompt_tokens": 260, "generated_tokens": 7, "ttft_s": 0.12, "decode_tokens_per_s": 41.5}
    box = (256 / 1023 * w, 256 / 1023 * h, 768 / 1023 * w, 768 / 1023 * h)
    turns = [StoredTurn("caption en", "a tabby cat *looking* at <the> camera", st.DONE, "eos", stats=stats,
                        model=model, sampling=sampling),
             StoredTurn("segment cat", SEG_ANSWER, st.DONE, "eos", stats=stats, model=model, sampling=sampling,
                        objects=[StoredObject("cat", box, tuple(range(16)), (256, 256, 768, 768),
                                              disc_logits().astype(np.float16).tobytes())])]
    for i, t in enumerate(turns):
        t.position = i
        s.save_turn(cid, t)
    yield s.load(cid)
    s.close()


def rendered_images(md_path) -> list[str]:
    """The image sources Qt's Markdown renderer finds in the file."""
    doc = QTextDocument()
    doc.setMarkdown(md_path.read_text(encoding="utf-8"))
    found, block = [], doc.begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            fmt = it.fragment().charFormat()
            if fmt.isImageFormat():
                found.append(fmt.toImageFormat().name())
            it += 1
        block = block.next()
    return found, doc.toPlainText()


def test_markdown_export_renders_its_images_and_says_what_was_asked(qapp, conv, tmp_path, photos):
    out = tmp_path / "out"
    out.mkdir()
    written = export.export_markdown(conv, out / "my cat.md")
    md = out / "my cat.md"
    assert written[0] == md and all(p.exists() for p in written)
    sources, text = rendered_images(md)
    assert sources == ["my_cat-image.png", "my_cat-annotated-2.png"]
    for src in sources:
        assert (out / unquote(src)).is_file()
    assert (out / "my_cat-image.png").read_bytes() == photos[0].read_bytes()
    # What the reader sees: prompts and answers as they were, the <loc>/<seg> tokens intact, the object listed.
    assert "a tabby cat *looking* at <the> camera" in text
    assert "caption en" in text and "segment cat" in text and SEG_ANSWER in text
    assert "google/paligemma2-3b-mix-224" in text and "41.5 tokens/s" in text
    assert "cat" in text.split("Found 1 object.")[1]


def test_annotated_png_has_the_box_and_the_mask(conv, tmp_path, photos):
    path = export.export_annotated_png(conv, tmp_path / "a")
    original = np.asarray(Image.open(photos[0]).convert("RGB")).astype(int)
    drawn = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert drawn.shape == original.shape
    h, w = original.shape[:2]
    x0, y0, x1, y1 = (int(256 / 1023 * w), int(256 / 1023 * h), int(768 / 1023 * w), int(768 / 1023 * h))
    colour = np.array([int(PALETTE[0][i:i + 2], 16) for i in (1, 3, 5)])
    cy = (y0 + y1) // 2
    assert (drawn[cy, x0] == colour).all()  # the box's left edge
    centre = drawn[cy, (x0 + x1) // 2]
    assert np.abs(centre - original[cy, (x0 + x1) // 2]).sum() > 10  # tinted by the mask
    assert np.abs(centre - colour).sum() > 10  # but translucent
    corner = (y0 + 4, x0 + 6)  # inside the box, outside the disc: neither mask nor box
    assert (drawn[corner] == original[corner]).all()
    assert (drawn[5, w - 5] == original[5, w - 5]).all()  # far from every object


def test_annotated_png_without_objects_says_what_to_do(conv, tmp_path):
    conv.turns = conv.turns[:1]
    with pytest.raises(export.ExportError, match="Detect or Segment"):
        export.export_annotated_png(conv, tmp_path / "a.png")


def test_json_export_has_every_field_of_every_turn(conv, tmp_path, photos):
    dest, image = export.export_json(conv, tmp_path / "conv.json")
    data = json.loads(dest.read_text(encoding="utf-8"))
    assert data["format"] == export.FORMAT and data["name"] == "chelsea the cat.png"
    assert (tmp_path / data["image"]["file"]).read_bytes() == photos[0].read_bytes()
    assert data["image"]["sha256"] == conv.summary.image_sha256
    assert [(t["prompt"], t["answer"], t["state"], t["stop_reason"]) for t in data["turns"]] == [
        (t.prompt, t.answer, t.state, t.stop_reason) for t in conv.turns]
    seg = data["turns"][1]
    assert seg["model"]["device"] == "CUDA (H200)" and seg["sampling"]["max_new_tokens"] == 64
    assert seg["stats"]["ttft_s"] == 0.12
    [obj] = seg["objects"]
    assert obj["label"] == "cat" and obj["seg_codes"] == list(range(16)) and obj["locs"] == [256, 256, 768, 768]
    assert data["format_version"] == 2 and "mask64_f16" not in json.dumps(data)


def test_json_objects_are_as_the_cli_prints_them_with_coco_rle_masks_at_the_image_s_size(conv, tmp_path, photos):
    from pycocotools import mask as coco_mask

    dest, _ = export.export_json(conv, tmp_path / "conv.json")
    [obj] = json.loads(dest.read_text(encoding="utf-8"))["turns"][1]["objects"]
    w, h = Image.open(photos[0]).size
    [det] = parse_objects(SEG_ANSWER, w, h)
    [cli] = objects_json([det])
    assert obj["box"] == cli["box"] and all(isinstance(v, int) for v in obj["box"])  # integer pixels, as printed
    assert obj["mask"]["size"] == [h, w]
    decoded = coco_mask.decode({"size": obj["mask"]["size"], "counts": obj["mask"]["counts"].encode()})
    expected = place_mask(disc_logits(), det)
    assert decoded.shape == (h, w) and (decoded.astype(bool) == expected).all() and expected.sum() > 1000
    assert coco_mask.encode(np.asfortranarray(expected.astype(np.uint8)))["counts"].decode() == obj["mask"]["counts"]


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (17, 4), (64, 80)])
def test_coco_rle_matches_pycocotools(shape):
    from pycocotools import mask as coco_mask

    rng = np.random.default_rng(sum(shape))
    for density in (0.0, 0.02, 0.5, 0.97, 1.0):
        mask = rng.random(shape) < density
        want = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        got = coco.encode(mask)
        assert got["size"] == list(want["size"]) and got["counts"] == want["counts"].decode()


def test_a_whitespace_only_answer_is_exported_as_an_empty_answer(conv, tmp_path):
    conv.turns[0].answer = "  \n" * 130
    md = export.markdown(conv, "img.png")
    assert "*(empty answer)*" in md and "\n\n\n\n" not in md


def test_export_all_writes_one_json_line_per_conversation_and_each_image_once(tmp_path, photos):
    s = HistoryStore.open(tmp_path / "history")
    for key, photo, answer in (("a", photos[0], "cat"), ("b", photos[1], "astronaut"), ("c", photos[0], "again")):
        cid = s.ensure_conversation(key, s.add_image(photo.read_bytes(), photo.suffix), photo.name)
        s.save_turn(cid, StoredTurn("caption en", answer, st.DONE))
    n = export.export_all(s, tmp_path / "all")
    lines = (tmp_path / "all" / "conversations.jsonl").read_text(encoding="utf-8").splitlines()
    assert n == 3 and len(lines) == 3
    rows = [json.loads(line) for line in lines]
    assert sorted(r["turns"][0]["answer"] for r in rows) == ["again", "astronaut", "cat"]
    assert len(list((tmp_path / "all" / "images").iterdir())) == 2
    for r in rows:
        assert (tmp_path / "all" / r["image"]["file"]).is_file()
    s.close()


def test_clipboard_markdown_says_the_image_is_not_included_and_links_nothing_private(qapp, conv):
    text = export.clipboard_markdown(conv)
    assert "caption en" in text and "not included" in text
    assert "file:" not in text and str(conv.image_path.parent) not in text and "](" not in text
