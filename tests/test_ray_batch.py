"""The Ray Data example on a local Ray instance with 2 CPU workers gives the CLI's rows for the same images.

Skipped when ray[data] (the `scale` extra) is not installed. One Ray start-up is ~20 s of this test's ~30 s.
"""

from __future__ import annotations

import json
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
COMPARED = ("path", "prompt", "text", "objects", "tokens", "error", "stop_reason")  # not seconds: a timing


def cli_rows(model_dir: Path, folder: Path, out: Path, max_new_tokens: int) -> dict[str, dict]:
    assert main(["batch", "--model", str(model_dir), "--inputs", str(folder), "--prompt", "caption en",
                 "--out", str(out), "--max-new-tokens", str(max_new_tokens), "--device", "cpu",
                 "--no-progress"]) == 0
    return {r["path"]: {k: r[k] for k in COMPARED} for r in map(json.loads, out.read_text().splitlines())}


def test_ray_example_with_two_workers_gives_the_cli_rows(toy_model_dir, tmp_path):
    paths = make_folder(tmp_path / "imgs", 12, corrupt=5)
    expected = cli_rows(toy_model_dir, tmp_path / "imgs", tmp_path / "cli.jsonl", 10)

    out = tmp_path / "ray_out"
    proc = subprocess.run(
        [sys.executable, "examples/ray_batch.py", "--model", str(toy_model_dir), "--inputs", str(tmp_path / "imgs"),
         "--prompt", "caption en", "--out", str(out), "--format", "parquet", "--workers", "2", "--num-cpus", "2",
         "--batch-size", "4", "--max-new-tokens", "10", "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pq.read_table(out).to_pylist()
    got = {r["path"]: {**{k: r[k] for k in COMPARED}, "objects": json.loads(r["objects"])} for r in table}
    assert len(table) == len(paths)
    assert got == expected
    assert got[str(paths[5])]["error"]


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
