"""The batch manifest (`batch --prompts FILE`): CSV and JSON Lines read alike, relative images, non-UTF-8 names,
default prompts, and every bad input as one line naming the file and line, before any model loads (the model path
here does not exist: a message that needed it would say so instead)."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import pytest

from vlm_core.cli import main
from vlm_core.runtime.batch_io import InputError
from vlm_core.runtime.manifest import plan, read_manifest

ODD = b"\xe9t\xe9 \xff.png"  # Latin-1, and a byte that is never UTF-8


@pytest.fixture
def folder(tmp_path) -> Path:
    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True)
    for name in ("a.png", "b.png", "sub/c.png"):
        (imgs / name).write_bytes(b"not decoded here")
    return imgs


def test_csv_and_jsonl_give_the_same_rows(folder):
    (folder / "m.csv").write_text('\ufeffimage,prompt\r\na.png,caption en\r\n\r\nsub/c.png,"detect cat; dog"\r\n'
                                  'b.png,\r\na.png,"answer en what is\r\nthis ""thing""?"\r\n', encoding="utf-8")
    (folder / "m.jsonl").write_text("\n".join(json.dumps(d) for d in [
        {"image": "a.png", "prompt": "caption en"}, {"image": "sub/c.png", "prompt": "detect cat; dog"},
        {"image": "b.png"}, {"image": str(folder / "a.png"), "prompt": 'answer en what is\r\nthis "thing"?'}]) + "\n")
    want = [(str(folder / "a.png"), "caption en"), (str(folder / "sub" / "c.png"), "detect cat; dog"),
            (str(folder / "b.png"), "ocr"), (str(folder / "a.png"), 'answer en what is\r\nthis "thing"?')]
    for name in ("m.csv", "m.jsonl"):
        entries = read_manifest(folder / name, folder)
        assert plan(entries, folder / name, "ocr") == want, name
    assert [e.line for e in read_manifest(folder / "m.csv", folder)] == [2, 4, 5, 6]  # blank line 3 skipped


def test_with_inputs_the_folder_order_rules_and_unlisted_images_take_the_default(folder):
    entries = read_manifest(_write(folder / "m.csv", "image,prompt\nsub/c.png,ocr\na.png,detect cat\na.png,ocr\n"),
                            folder)
    inputs = [str(folder / "a.png"), str(folder / "b.png"), str(folder / "sub" / "c.png")]
    assert plan(entries, "m.csv", "caption en", inputs, str(folder)) == [
        (inputs[0], "detect cat"), (inputs[0], "ocr"), (inputs[1], "caption en"), (inputs[2], "ocr")]
    with pytest.raises(InputError, match=r"1 of the images of .* have no line in m.csv \(the first: .*b.png\) and "
                                         r"there is no --prompt"):
        plan(entries, "m.csv", None, inputs, str(folder))


@pytest.mark.skipif(sys.platform != "linux", reason="file names as raw bytes are a Linux (POSIX) thing")
def test_a_name_that_is_not_utf8_by_image_b64_or_by_json_surrogate_escapes(folder):
    odd = os.path.join(os.fsencode(folder), ODD)
    with open(odd, "wb") as f:
        f.write(b"x")
    b64 = base64.b64encode(ODD).decode()
    _write(folder / "m.csv", f"image,image_b64,prompt\n,{b64},ocr\n")
    (folder / "m.jsonl").write_text(json.dumps({"image": os.fsdecode(ODD), "prompt": "ocr"}) + "\n"
                                    + json.dumps({"image_b64": b64, "prompt": "caption en"}) + "\n")
    assert [os.fsencode(e.image) for e in read_manifest(folder / "m.csv", folder)] == [odd]
    assert [os.fsencode(e.image) for e in read_manifest(folder / "m.jsonl", folder)] == [odd, odd]


BAD = [  # (file name, its bytes, extra argv, what the one line says after "FILE line N")
    ("m.csv", b"image\na.png\n", [], "line 1 has no prompt column (it has 'image')"),
    ("m.csv", b"a.png,caption en\n", [], "line 1: unknown column 'a.png'"),
    ("m.csv", b"image,promt\na.png,ocr\n", [], "line 1: unknown column 'promt'"),
    ("m.csv", b"image,prompt\na.png,caption en\nb.png,caf\xe9\n", [], "line 3 is not UTF-8 text (byte 0xe9)"),
    ("m.csv", b"image,prompt\na.png,detect cat, dog\n", [], "line 2 has 3 fields and the header 2: quote a prompt"),
    ("m.csv", b'image,prompt\na.png,ocr\nb.png,"never closed\n', [], "line 3 is not valid CSV"),
    ("m.csv", b"image,prompt\n", [], "lists no images"),
    ("m.csv", b"", [], "is empty: the first line names the columns"),
    ("m.jsonl", b'{"image": "a.png", "prompt": "ocr"}\n{"image": "b.png", \n', [], "line 2 is not JSON"),
    ("m.jsonl", b'["a.png", "ocr"]\n', [], "line 1 is a JSON list, not an object"),
    ("m.jsonl", b'{"image": "a.png", "prompt": 5}\n', [], "line 1: prompt is a int; it must be a string"),
    ("m.jsonl", b'{"image": "a.png", "promt": "ocr"}\n', [], "line 1: unknown key 'promt'"),
    ("m.jsonl", b'{"prompt": "ocr"}\n', [], "line 1 has no image key"),
    ("m.jsonl", b'{"image_b64": "%%%", "prompt": "ocr"}\n', [], "line 1: image_b64 is not base64"),
    ("m.jsonl", b'{"image": "\\ud800.png", "prompt": "ocr"}\n', [], "line 1: the image name holds a character"),
    ("m.jsonl", b'\n{"image": "a.png"}\n', [], "line 2 has no prompt: write one there, or give --prompt"),
    ("m.jsonl", b'{"image": "a.png", "prompt": "ocr"}\n{"image": "nope.png", "prompt": "ocr"}\n', [],
     "line 2: {folder}/nope.png does not exist; fix the path or remove the line"),
    ("m.jsonl", b'{"image": "a.png", "prompt": "ocr"}\n{"image": "./a.png", "prompt": "ocr"}\n', [],
     "line 2 repeats line 1 (the same image and prompt)"),
    ("m.jsonl", b'{"image": "sub/c.png", "prompt": "ocr"}\n', ["--inputs", "{folder}/*.png"],
     "line 1: {folder}/sub/c.png is not among the images of {folder}/*.png"),
    ("m.txt", b"a.png\tocr\n", [], "--prompts {folder}/m.txt: give a .csv or .jsonl file"),
]


@pytest.mark.parametrize("name, data, extra, message", BAD, ids=[f"{b[0]}:{b[3][:30]}" for b in BAD])
def test_a_bad_manifest_gets_one_line_naming_the_file_and_line(folder, tmp_path, capsys, name, data, extra, message):
    manifest = folder / name
    manifest.write_bytes(data)
    argv = ["batch", "--model", str(tmp_path / "no-model"), "--prompts", str(manifest), "--out",
            str(tmp_path / "r.jsonl"), *[a.format(folder=folder) for a in extra]]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert message.format(folder=folder) in err, err
    if message.startswith("line "):
        assert f"{manifest} line " in err, err


def test_a_missing_manifest_and_a_missing_prompt_are_refused(folder, tmp_path, capsys):
    base = ["batch", "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "r.jsonl")]
    assert main(base + ["--prompts", str(folder / "none.csv")]) == 1
    assert f"--prompts {folder / 'none.csv'} does not exist" in capsys.readouterr().err
    for argv in (["--inputs", str(folder)], ["--prompt", "ocr"]):  # no prompt at all; no images at all
        with pytest.raises(SystemExit) as e:
            main(base + argv)
        assert e.value.code == 2


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
