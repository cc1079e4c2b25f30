"""`python -m vlm_core batch`: rows per image, bad images recorded, --resume after a real kill, CSV, inputs.

Also the torch-free pieces underneath (input listing, the writers, reading back a file cut off mid-record).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlm_core.cli import main
from vlm_core.runtime.batch_io import (InputError, ResultWriter, Row, list_inputs, objects_from_text, read_rows,
                                       write_rows)
from vlm_core.runtime.engine import Engine
from vlm_core.runtime.generate import SamplingParams

ROOT = Path(__file__).resolve().parents[1]


def make_folder(folder: Path, n: int, corrupt: int | None = None, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"img_{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (30 + i % 9, 40, 3), dtype=np.uint8)).save(p)
        if i == corrupt:
            p.write_bytes(p.read_bytes()[:200])  # cut off, as by an interrupted copy
        paths.append(p)
    return paths


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batch_writes_one_row_per_image_and_records_the_bad_one(toy_model_dir, tmp_path, capsys):
    paths = make_folder(tmp_path / "imgs", 7, corrupt=4)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")  # skipped: not an image extension
    out = tmp_path / "results.jsonl"
    rc = main(["batch", "--model", str(toy_model_dir), "--inputs", str(tmp_path / "imgs"), "--prompt", "caption en",
               "--out", str(out), "--batch-size", "3", "--max-new-tokens", "12", "--device", "cpu"])
    assert rc == 0
    rows = read_jsonl(out)
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    assert set(rows[0]) == {"path", "prompt", "text", "objects", "tokens", "seconds", "error", "stop_reason",
                            "path_b64"}
    assert rows[4]["error"].startswith(f"{paths[4]} is damaged or incomplete")
    assert rows[4]["text"] == "" and rows[4]["tokens"] == 0
    engine = Engine.load(toy_model_dir, device="cpu")
    for row, path in zip(rows, paths):
        if row["error"] is None:
            single = engine.generate(path, "caption en", SamplingParams(max_new_tokens=12))
            assert (row["text"], row["tokens"], row["stop_reason"]) == (single.text, len(single.token_ids),
                                                                        single.stats.stop_reason)
            assert row["prompt"] == "caption en"
            assert row["objects"] == objects_from_text(single.text, *Image.open(path).size)
    err = capsys.readouterr().err
    assert "img/s" in err and "1 unreadable" in err


def test_a_killed_run_resumes_without_redoing_finished_images(toy_model_dir, tmp_path):
    paths = make_folder(tmp_path / "imgs", 40, corrupt=2)
    out = tmp_path / "results.jsonl"
    cmd = [sys.executable, "-m", "vlm_core", "batch", "--model", str(toy_model_dir), "--inputs",
           str(tmp_path / "imgs"), "--prompt", "caption en", "--out", str(out), "--batch-size", "1",
           "--max-new-tokens", "40", "--device", "cpu"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while (not out.exists() or out.read_text().count("\n") < 5) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up, as with a power cut
    finally:
        proc.wait()
    before = out.read_text()
    with out.open("a") as f:
        f.write('{"path": "half a line')  # as if the kill had hit mid-write
    finished = before.splitlines()
    assert 5 <= len(finished) < 40

    rc = main(cmd[3:])  # same command, without --resume: refuses to overwrite
    assert rc == 1
    rc = main(cmd[3:] + ["--resume"])
    assert rc == 0
    rows = read_jsonl(out)
    assert [r["path"] for r in rows] == sorted(str(p) for p in paths)  # each image once, in order
    assert out.read_text().splitlines()[:len(finished)] == finished  # finished rows untouched, seconds included
    assert sum(r["error"] is not None for r in rows) == 1

    rc = main(cmd[3:] + ["--resume"])  # nothing left to do
    assert rc == 0 and read_jsonl(out) == rows


def test_resume_refuses_a_file_with_another_prompt(toy_model_dir, tmp_path, capsys):
    make_folder(tmp_path / "imgs", 2)
    out = tmp_path / "r.jsonl"
    base = ["batch", "--model", str(toy_model_dir), "--inputs", str(tmp_path / "imgs"), "--out", str(out),
            "--max-new-tokens", "4", "--device", "cpu", "--no-progress"]
    assert main(base + ["--prompt", "caption en"]) == 0
    assert main(base + ["--prompt", "ocr", "--resume"]) == 1
    assert "holds answers to 'caption en'" in capsys.readouterr().err


def test_csv_output_round_trips_and_resumes(toy_model_dir, tmp_path):
    paths = make_folder(tmp_path / "imgs", 5, corrupt=0)
    listing = tmp_path / "list.txt"
    listing.write_text("# the images\n" + "\n".join(f"imgs/{p.name}" for p in paths[:3]) + "\n\n")
    out = tmp_path / "r.csv"
    base = ["batch", "--model", str(toy_model_dir), "--prompt", "caption en", "--out", str(out),
            "--max-new-tokens", "6", "--device", "cpu", "--batch-size", "auto", "--no-progress"]
    assert main(base + ["--inputs", str(listing)]) == 0
    first = read_rows(out, "csv")
    assert [Path(r.path).name for r in first] == [p.name for p in paths[:3]]
    assert first[0].error and first[1].error is None and first[1].tokens > 0
    assert main(base + ["--inputs", str(tmp_path / "imgs" / "*.png"), "--resume", "--format", "csv"]) == 0
    rows = read_rows(out, "csv")
    assert rows[:3] == first
    assert [Path(r.path).name for r in rows] == [p.name for p in paths]


@pytest.mark.parametrize("argv, message", [
    (["--inputs", "/nowhere/at/all"], "does not exist"),
    (["--inputs", "/nowhere/*.png"], "no images match"),
])
def test_bad_inputs_get_a_message_not_a_traceback(toy_model_dir, tmp_path, capsys, argv, message):
    rc = main(["batch", "--model", str(toy_model_dir), "--prompt", "caption en", "--out", str(tmp_path / "r.jsonl"),
               *argv])
    assert rc == 1
    assert message in capsys.readouterr().err


def test_batch_size_must_be_a_positive_number_or_auto(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["batch", "--model", "m", "--inputs", ".", "--prompt", "p", "--out", "o", "--batch-size", "0"])
    assert e.value.code == 2


def test_list_inputs_folder_glob_list_and_single(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    for name in ("a/2.PNG", "a/1.jpg", "a/sub/3.webp", "a/.hidden.png", "a/readme.md"):
        (tmp_path / name).write_bytes(b"x")
    assert [Path(p).relative_to(tmp_path).as_posix() for p in list_inputs(tmp_path / "a")] == \
        ["a/1.jpg", "a/2.PNG", "a/sub/3.webp"]
    assert [Path(p).name for p in list_inputs(str(tmp_path / "a" / "**" / "*.webp"))] == ["3.webp"]
    assert list_inputs(tmp_path / "a" / "1.jpg") == [str(tmp_path / "a" / "1.jpg")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        list_inputs(tmp_path / "empty")


def test_reading_back_drops_a_record_cut_off_mid_write(tmp_path):
    rows = [Row("a.png", "ocr", 'line one\nline "two", with a comma', [], 5, 0.5, None, "eos"),
            Row("b.png", "ocr", error="b.png is damaged")]
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"r.{fmt}"
        write_rows(out, rows)
        assert read_rows(out, fmt) == rows
        whole = out.read_bytes()
        out.write_bytes(whole[:-7])  # the last record loses its end
        assert read_rows(out, fmt) == rows[:1]
        with ResultWriter(out, fmt, resume=True) as w:
            w.write(rows[1])
        assert read_rows(out, fmt) == rows


def test_objects_are_listed_as_generate_json_lists_them():
    from vlm_core.runtime.answers import objects_json
    from vlm_core.runtime.answers import parse_objects

    text = "<loc0000><loc0000><loc0511><loc1023> cat ; <loc0100><loc0200><loc0300><loc0400> red car"
    objects = objects_from_text(text, 200, 100)
    assert objects == objects_json(parse_objects(text, 200, 100))
    assert [o["label"] for o in objects] == ["cat", "red car"]
    assert objects[0]["box"] == [0, 0, 200, 49]
    assert objects_from_text("a cat on a mat", 200, 100) == []
