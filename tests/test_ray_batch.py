"""The Ray Data example on a local Ray instance with 2 CPU workers gives the CLI's rows for the same images, in both
modes, with the documented defaults (2 workers of 1 CPU) on 2 CPUs: a damaged file, a decompression bomb and a name
that is not UTF-8 each get their row, and --read-images does not wait for ever for a CPU. With --prompts (a prompt
per image) the rows equal the CLI's too, keyed by image and prompt.

Skipped when ray[data] (the `scale` extra) is not installed. One Ray start-up is ~20 s of each test's ~30 s.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_batch_cli import make_folder
from vlm_core.cli import main

pytest.importorskip("ray.data", reason="ray[data] is the optional 'scale' extra")
pq = pytest.importorskip("pyarrow.parquet")

ROOT = Path(__file__).resolve().parents[1]
COMPARED = ("path", "prompt", "text", "objects", "tokens", "error", "stop_reason", "path_b64")  # not seconds
ODD = b"\xe9t\xe9 \xff.png"  # Latin-1, and a byte that is never UTF-8


def hostile_extras(folder: Path) -> tuple[str, str]:
    """A decompression bomb (a 2 KB JPEG claiming 4.2 gigapixels) and a valid image whose name is not UTF-8."""
    from tests.test_big_photos import _claiming

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(buf, format="JPEG")
    bomb = folder / "bomb.jpg"
    bomb.write_bytes(_claiming(buf.getvalue(), 65000, 65000))
    odd = os.path.join(os.fsencode(folder), ODD)
    Image.new("RGB", (50, 40), (200, 120, 10)).save(odd, format="PNG")
    return str(bomb), os.fsdecode(odd)


def key(row: dict) -> str:
    """The file a row is about, exactly (path_b64 when the name is not UTF-8)."""
    return os.fsdecode(base64.b64decode(row["path_b64"])) if row["path_b64"] else row["path"]


def run_example(toy_model_dir: Path, folder: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "examples/ray_batch.py", "--model", str(toy_model_dir), "--inputs", str(folder),
         "--prompt", "caption en", "--out", str(out), "--num-cpus", "2", "--batch-size", "4",
         "--max-new-tokens", "10", "--device", "cpu", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=240)


def cli_rows(model_dir: Path, folder: Path, out: Path, max_new_tokens: int) -> dict[str, dict]:
    assert main(["batch", "--model", str(model_dir), "--inputs", str(folder), "--prompt", "caption en",
                 "--out", str(out), "--max-new-tokens", str(max_new_tokens), "--device", "cpu",
                 "--no-progress"]) == 0
    return {key(r): {k: r[k] for k in COMPARED} for r in map(json.loads, out.read_text().splitlines())}


@pytest.mark.parametrize("mode", ["paths", "read-images"])
def test_ray_example_with_the_default_two_workers_on_two_cpus_gives_the_cli_rows(toy_model_dir, tmp_path, mode):
    paths = make_folder(tmp_path / "imgs", 10, corrupt=5)
    bomb, odd = hostile_extras(tmp_path / "imgs")
    expected = cli_rows(toy_model_dir, tmp_path / "imgs", tmp_path / "cli.jsonl", 10)

    out = tmp_path / "ray_out"
    if mode == "paths":
        proc = run_example(toy_model_dir, tmp_path / "imgs", out, "--format", "parquet")
        table = pq.read_table(out).to_pylist() if proc.returncode == 0 else []
    else:  # the defaults: 2 workers of 1 CPU each, on a 2-CPU Ray: every CPU would go to the workers
        proc = run_example(toy_model_dir, tmp_path / "imgs", out, "--read-images")
        table = [json.loads(line) for f in sorted(out.glob("*.json*")) for line in f.read_text().splitlines()]
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = {key(r): {**{k: r[k] for k in COMPARED}, "objects": json.loads(r["objects"])} for r in table}
    assert len(table) == len(paths) + 2
    assert got == expected
    assert "damaged" in got[str(paths[5])]["error"] and "too large to open safely" in got[bomb]["error"]
    assert got[odd]["error"] is None and got[odd]["tokens"] > 0
    assert base64.b64decode(got[odd]["path_b64"]) == os.fsencode(odd)


def test_predictor_takes_ray_image_arrays_too(toy_model_dir, tmp_path):
    """What ray.data.read_images hands over (an `image` column of HxWx3 arrays, with `path`): the same rows."""
    from vlm_core.scale.ray_predictor import PaliGemmaPredictor

    paths = make_folder(tmp_path / "imgs", 5)
    expected = cli_rows(toy_model_dir, tmp_path / "imgs", tmp_path / "cli.jsonl", 8)
    predictor = PaliGemmaPredictor(str(toy_model_dir), "caption en", max_new_tokens=8, device="cpu")
    images = np.empty(len(paths), dtype=object)
    images[:] = [np.asarray(Image.open(p).convert("RGB")) for p in paths]  # ragged: sizes differ, as in Ray
    out = predictor({"image": images, "path": np.asarray([str(p) for p in paths], dtype=object)}).to_pylist()
    rows = [{**{k: r[k] for k in COMPARED}, "objects": json.loads(r["objects"])} for r in out]
    assert {r["path"]: r for r in rows} == expected
    with pytest.raises(ValueError, match="'path' or an 'image' column"):
        predictor({"pixels": images})


MANIFEST = "image,image_b64,prompt\nimg_000.png,,ocr\nimg_001.png,,detect cat ; dog\n,{odd},describe es\n" \
           "img_000.png,,caption es\nimg_002.png,,\nimg_003.png,,answer en what colour is the car on the left\n"


def manifest_rows(rows) -> dict[tuple[str, str], dict]:
    return {(key(r), r["prompt"]): {**{k: r[k] for k in COMPARED},
                                    "objects": json.loads(r["objects"]) if isinstance(r["objects"], str)
                                    else r["objects"]} for r in rows}


@pytest.mark.skipif(sys.platform != "linux", reason="file names as raw bytes are a Linux (POSIX) thing")
def test_ray_example_with_a_prompt_per_image_gives_the_cli_rows(toy_model_dir, tmp_path):
    """--prompts through --read-images (the prompt column passes decode_images) and the CLI's batch: the same rows,
    keyed by (image, prompt), an odd name and a line taking the default --prompt among them."""
    folder = tmp_path / "imgs"
    make_folder(folder, 4)
    odd = os.path.join(os.fsencode(folder), ODD)
    Image.new("RGB", (50, 40), (200, 120, 10)).save(odd, format="PNG")
    manifest = folder / "prompts.csv"
    manifest.write_text(MANIFEST.format(odd=base64.b64encode(ODD).decode()))
    args = ["--prompts", str(manifest), "--prompt", "caption en", "--max-new-tokens", "8", "--device", "cpu"]
    assert main(["batch", "--model", str(toy_model_dir), "--out", str(tmp_path / "cli.jsonl"), "--no-progress",
                 *args]) == 0
    expected = manifest_rows(map(json.loads, (tmp_path / "cli.jsonl").read_text().splitlines()))

    proc = subprocess.run([sys.executable, "examples/ray_batch.py", "--model", str(toy_model_dir), "--out",
                           str(tmp_path / "ray_out"), "--num-cpus", "2", "--batch-size", "4", "--read-images", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = [json.loads(line) for f in sorted((tmp_path / "ray_out").glob("*.json*"))
             for line in f.read_text().splitlines()]
    assert len(table) == 6 and manifest_rows(table) == expected
    assert expected[(os.fsdecode(odd), "describe es")]["tokens"] > 0
    assert expected[(str(folder / "img_002.png"), "caption en")]["error"] is None


def test_predictor_takes_a_prompt_column(toy_model_dir, tmp_path):
    """Paths with a `prompt` column (an empty one takes the predictor's prompt): each row is its one-at-a-time
    answer, in the order given; no Ray needed for the predictor itself."""
    from vlm_core.runtime.engine import Engine
    from vlm_core.runtime.generate import SamplingParams
    from vlm_core.scale.ray_predictor import PaliGemmaPredictor

    paths = [str(p) for p in make_folder(tmp_path / "imgs", 4)]
    prompts = ["ocr", "", "detect cat ; dog", "answer en what is this"]
    predictor = PaliGemmaPredictor(str(toy_model_dir), "caption en", max_new_tokens=6, device="cpu",
                                   prompts=[p for p in prompts if p])
    out = predictor({"path": np.asarray(paths, dtype=object), "prompt": np.asarray(prompts, dtype=object)})
    engine = Engine.load(toy_model_dir, device="cpu")
    for row, path, prompt in zip(out.to_pylist(), paths, prompts):
        single = engine.generate(path, prompt or "caption en", SamplingParams(max_new_tokens=6))
        assert (row["path"], row["prompt"], row["text"], row["tokens"]) == (
            path, prompt or "caption en", single.text, len(single.token_ids))
