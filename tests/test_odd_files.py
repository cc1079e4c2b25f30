"""A folder of hostile files, for real: a valid image whose name is not UTF-8 (bytes from os.fsencode), a symlink
loop, a zero-byte .jpg. Each gets its row (an answer or its own error) in the CLI's JSONL and CSV, `--resume`
recognises them, and the app's folder run answers the odd name too (its bytes survive the trip through Qt)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.test_batch_cli import make_folder
from vlm_core.runtime.batch_io import ResultWriter, Row, list_inputs, read_rows

ROOT = Path(__file__).resolve().parents[1]
ODD = b"caf\xe9 \xff\xfe photo.png"  # Latin-1 e-acute and two bytes that are never UTF-8

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="file names as raw bytes are a Linux (POSIX) thing")


def hostile_folder(folder: Path) -> dict[str, str]:
    """Three good images, the odd name, a loop and an empty .jpg -> {role: path as os.listdir gives it}."""
    make_folder(folder, 3)
    odd = os.path.join(os.fsencode(folder), ODD)
    Image.new("RGB", (40, 30), (200, 30, 30)).save(odd, format="PNG")
    os.symlink("loop_b.jpg", folder / "loop_a.jpg")
    os.symlink("loop_a.jpg", folder / "loop_b.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    return {"odd": os.fsdecode(odd), "loop": str(folder / "loop_a.jpg"), "empty": str(folder / "empty.jpg")}


def run_batch(model_dir: Path, folder: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vlm_core", "batch", "--model", str(model_dir), "--inputs", str(folder),
           "--prompt", "caption en", "--out", str(out), "--max-new-tokens", "5", "--device", "cpu", "--no-progress",
           *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=300)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_batch_answers_an_odd_name_and_gives_loops_and_empty_files_their_rows(toy_model_dir, tmp_path, fmt):
    roles = hostile_folder(tmp_path / "imgs")
    out = tmp_path / f"r.{fmt}"
    proc = run_batch(toy_model_dir, tmp_path / "imgs", out)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    assert b"Traceback" not in proc.stderr
    out.read_bytes().decode("utf-8")  # the file is valid UTF-8 throughout

    rows = {r.path: r for r in read_rows(out, fmt)}
    assert set(rows) == set(list_inputs(tmp_path / "imgs"))  # every file, the loops included, exactly once
    assert len(rows) == 3 + 1 + 2 + 1
    odd = rows[roles["odd"]]
    assert odd.error is None and odd.tokens > 0  # answered: the very file, found again from its bytes
    assert os.fsencode(odd.path) == os.path.join(os.fsencode(tmp_path / "imgs"), ODD)
    assert "symlink loop" in rows[roles["loop"]].error
    assert "is empty" in rows[roles["empty"]].error and "not an image format" not in rows[roles["empty"]].error

    # The record as any reader sees it: readable text, and the exact bytes documented in path_b64.
    if fmt == "jsonl":
        record = next(json.loads(line) for line in out.read_text("utf-8").splitlines() if "photo.png" in line)
    else:
        import csv

        record = next(r for r in csv.DictReader(out.open(encoding="utf-8", newline="")) if "photo.png" in r["path"])
    assert record["path"].endswith("caf\ufffd \ufffd\ufffd photo.png")
    assert base64.b64decode(record["path_b64"]) == os.fsencode(roles["odd"])
    good = next(json.loads(line) for line in out.read_text("utf-8").splitlines() if "img_000" in line) \
        if fmt == "jsonl" else None
    assert good is None or good["path_b64"] is None  # a UTF-8 name needs no second spelling

    # --resume recognises every row, the odd one included: nothing to do, the file untouched.
    before = out.read_bytes()
    again = run_batch(toy_model_dir, tmp_path / "imgs", out, "--resume")
    assert again.returncode == 0, again.stderr.decode(errors="replace")[-2000:]
    assert b"nothing to do" in again.stderr and out.read_bytes() == before

    # Drop the odd row: --resume does that one image again and nothing else.
    kept = [r for r in read_rows(out, fmt) if r.path != roles["odd"]]
    with ResultWriter(out, fmt, resume=False) as w:
        for r in kept:
            w.write(r)
    third = run_batch(toy_model_dir, tmp_path / "imgs", out, "--resume")
    assert third.returncode == 0, third.stderr.decode(errors="replace")[-2000:]
    assert b"6 of 7 images are already" in third.stderr
    final = read_rows(out, fmt)
    assert final[:6] == kept and final[6].path == roles["odd"] and final[6].text == odd.text


def test_rows_round_trip_names_of_any_bytes(tmp_path):
    names = [os.fsdecode(b"/x/" + bytes([b]) + b".png") for b in range(128, 256)] + ["/x/plain.png", "/x/é.png"]
    rows = [Row(n, "ocr", text=f"answer about {n}", error=None if i % 2 else f"{n} is damaged")
            for i, n in enumerate(names)]
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"r.{fmt}"
        with ResultWriter(out, fmt, resume=False) as w:
            for r in rows:
                w.write(r)
        back = read_rows(out, fmt)
        assert [r.path for r in back] == names  # lossless: each name's bytes come back
        assert all(Row.from_dict(r.to_dict()) == r for r in back)


def test_the_app_folder_run_answers_an_odd_name(qtbot, tmp_path, toy_model_dir):
    from PySide6.QtCore import QSettings

    from desktop_app.batch_state import DONE
    from desktop_app.views.main_window import MainWindow
    from tests.test_app_batch import fill, open_dialog

    roles = hostile_folder(tmp_path / "imgs")
    store = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(model_dir=str(toy_model_dir), settings_store=store)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.engine.ready, timeout=120_000)
    dialog = open_dialog(window)
    fill(dialog, tmp_path / "imgs", tmp_path / "app.jsonl", 5)
    with qtbot.waitSignal(dialog.job.state_changed, timeout=120_000, check_params_cb=lambda s: s == DONE):
        dialog.start_button.click()
    rows = {r.path: r for r in read_rows(tmp_path / "app.jsonl", "jsonl")}
    assert len(rows) == 7
    assert rows[roles["odd"]].error is None and rows[roles["odd"]].tokens > 0  # not "does not exist"
    assert "symlink loop" in rows[roles["loop"]].error and "is empty" in rows[roles["empty"]].error
    window.close()
