"""`batch --prompts FILE`: a prompt per image. Rows of different prompts run in one batch and each answer equals its
one-at-a-time answer (greedy, float32); the rows carry their prompts; --resume skips exactly the (image, prompt)
rows already written, a name that is not UTF-8 included; a prompt past the context is refused up front, naming its
line. The manifest's own parsing and messages are test_manifest.py's."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import pytest

import vlm_core.runtime.batch as batch_module
from tests.test_batch_cli import make_folder
from vlm_core.cli import main
from vlm_core.runtime.batch_io import ResultWriter, objects_from_text, path_key, read_rows
from vlm_core.runtime.engine import Engine
from vlm_core.runtime.generate import SamplingParams

ODD = b"caf\xe9 \xff photo.png"  # Latin-1 e-acute and a byte that is never UTF-8
CSV_MANIFEST = """image,prompt
img_000.png,caption en
img_001.png,answer en what colour is the small car on the left of the road
img_002.png,ocr
img_000.png,detect cat ; dog ; person
img_003.png,describe es
img_004.png,
"""


def test_rows_of_different_prompts_batch_together_and_equal_their_one_at_a_time_answers(
        toy_model_dir, tmp_path, monkeypatch, capsys):
    paths = make_folder(tmp_path / "imgs", 5)
    manifest = tmp_path / "imgs" / "prompts.csv"
    manifest.write_text(CSV_MANIFEST)
    out = tmp_path / "r.jsonl"
    batches = []
    real = batch_module.generate_batch

    def spy(model, tokenizer, prompt_ids, *args, **kwargs):
        batches.append([len(ids) for ids in prompt_ids])
        return real(model, tokenizer, prompt_ids, *args, **kwargs)

    monkeypatch.setattr(batch_module, "generate_batch", spy)
    assert main(["batch", "--model", str(toy_model_dir), "--prompts", str(manifest), "--prompt", "caption es",
                 "--out", str(out), "--batch-size", "3", "--max-new-tokens", "10", "--device", "cpu",
                 "--dtype", "float32", "--no-progress"]) == 0

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    want = [(str(paths[0]), "caption en"),
            (str(paths[1]), "answer en what colour is the small car on the left of the road"),
            (str(paths[2]), "ocr"), (str(paths[0]), "detect cat ; dog ; person"), (str(paths[3]), "describe es"),
            (str(paths[4]), "caption es")]  # the empty prompt: --prompt's
    assert [(r["path"], r["prompt"]) for r in rows] == want
    assert sorted(len(b) for b in batches) == [3, 3] and all(len(set(b)) >= 2 for b in batches), batches
    engine = Engine.load(toy_model_dir, device="cpu", dtype="float32")
    params = SamplingParams(max_new_tokens=10)
    for row, (path, prompt) in zip(rows, want):
        single = engine.generate(path, prompt, params)
        assert (row["text"], row["tokens"], row["stop_reason"], row["error"]) == (
            single.text, len(single.token_ids), single.stats.stop_reason, None), prompt
        assert row["objects"] == objects_from_text(single.text, 40, 30 + paths.index(Path(path)) % 9)

    capsys.readouterr()
    assert main(["generate", "--model", str(toy_model_dir), "--image", str(paths[0]), "--prompt", want[3][1],
                 "--max-new-tokens", "10", "--device", "cpu", "--dtype", "float32", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert (rows[3]["text"], rows[3]["tokens"], rows[3]["stop_reason"], rows[3]["objects"]) == (
        cli["text"], len(cli["token_ids"]), cli["stop_reason"], cli.get("objects", []))


@pytest.mark.skipif(sys.platform != "linux", reason="file names as raw bytes are a Linux (POSIX) thing")
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_resume_skips_exactly_the_image_and_prompt_rows_already_written(toy_model_dir, tmp_path, capsys, fmt):
    folder = tmp_path / "imgs"
    make_folder(folder, 3)
    odd = os.path.join(os.fsencode(folder), ODD)
    with open(odd, "wb") as f:
        f.write((folder / "img_002.png").read_bytes())
    manifest = tmp_path / "prompts.jsonl"  # outside the folder: its relative images are read from --inputs
    lines = [{"image_b64": base64.b64encode(ODD).decode(), "prompt": "ocr"},
             {"image": "img_000.png", "prompt": "ocr"}, {"image": "img_000.png", "prompt": "caption es"}]
    manifest.write_text("".join(json.dumps(d) + "\n" for d in lines))
    out = tmp_path / f"r.{fmt}"
    cmd = ["batch", "--model", str(toy_model_dir), "--inputs", str(folder), "--prompts", str(manifest),
           "--prompt", "caption en", "--out", str(out), "--max-new-tokens", "4", "--device", "cpu", "--no-progress"]

    assert main(cmd) == 0
    rows = read_rows(out, fmt)
    odd_path = os.fsdecode(odd)
    assert [(Path(r.path).name, r.prompt) for r in rows] == [  # the folder's order ("caf" before "img")
        (Path(odd_path).name, "ocr"), ("img_000.png", "ocr"), ("img_000.png", "caption es"),
        ("img_001.png", "caption en"), ("img_002.png", "caption en")]
    assert rows[0].path == odd_path and rows[0].error is None and rows[0].tokens > 0
    assert out.read_bytes().count(base64.b64encode(odd)) == 1  # path_b64 on the odd row
    assert main(cmd + ["--resume"]) == 0
    assert "nothing to do: all 5 rows are in" in capsys.readouterr().err

    # Drop the odd row and one of img_000's two: --resume does those two, nothing else.
    kept = [r for r in rows if r.path != odd_path and r.prompt != "caption es"]
    with ResultWriter(out, fmt, resume=False) as w:
        for r in kept:
            w.write(r)
    assert main(cmd + ["--resume"]) == 0
    assert "resuming: 3 of 5 rows are already in" in capsys.readouterr().err
    final = read_rows(out, fmt)
    assert final[:3] == kept
    assert sorted((path_key(r.path), r.prompt) for r in final) == sorted((path_key(r.path), r.prompt) for r in rows)
    assert [(r.text, r.tokens) for r in final[3:]] == [(r.text, r.tokens) for r in rows if r not in kept]

    # A manifest that now asks another prompt: the file is not silently mixed.
    manifest.write_text(manifest.read_text().replace("caption es", "caption fr"))
    assert main(cmd + ["--resume"]) == 1
    assert "holds answers to 'caption es', which neither" in capsys.readouterr().err


def test_a_prompt_past_the_context_is_refused_naming_its_line(toy_model_dir, tmp_path, capsys):
    make_folder(tmp_path / "imgs", 2)
    manifest = tmp_path / "imgs" / "prompts.csv"
    manifest.write_text(f"image,prompt\nimg_000.png,ocr\nimg_001.png,answer en {'why ' * 9000}\n")
    assert main(["batch", "--model", str(toy_model_dir), "--prompts", str(manifest), "--out",
                 str(tmp_path / "r.jsonl"), "--device", "cpu", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {manifest} line 3: The prompt does not fit" in err, err
    assert not (tmp_path / "r.jsonl").exists()
