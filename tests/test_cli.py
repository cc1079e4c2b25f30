"""The CLI as a person runs it: a real subprocess, real files, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vlm_core.runtime.engine import Engine
from vlm_core.runtime.generate import SamplingParams


def run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "vlm_core", *args], capture_output=True, text=True, timeout=timeout)


def test_generate_streams_the_same_text_as_the_engine(toy_model_dir, photos):
    out = run("generate", "--model", str(toy_model_dir), "--image", str(photos[0]), "--prompt", "caption en",
              "--max-new-tokens", "20", "--ignore-eos", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    expected = Engine.load(toy_model_dir, device="cpu").generate(
        photos[0], "caption en", SamplingParams(max_new_tokens=20, ignore_eos=True))
    assert out.stdout == expected.text + "\n"
    assert "20 tokens" in out.stderr and "Traceback" not in out.stderr


def test_generate_json(toy_model_dir, photos):
    out = run("generate", "--model", str(toy_model_dir), "--image", str(photos[1]), "--prompt", "detect cat",
              "--max-new-tokens", "9", "--json", "--temperature", "0.8", "--top-k", "40", "--top-p", "0.9",
              "--seed", "3", "--dtype", "float32")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    keys = {"text", "token_ids", "prompt_tokens", "ttft_s", "decode_tokens_per_s", "stop_reason"}
    assert set(result) == keys | ({"objects"} if "<loc" in result["text"] else set())  # objects: test_vae_store.py
    engine = Engine.load(toy_model_dir, device="cpu")
    assert result["prompt_tokens"] == len(engine.prompt_ids("detect cat")) == 16 + 1 + len(engine.tokenizer.encode("detect cat\n"))
    assert len(result["token_ids"]) <= 9 and result["stop_reason"] in ("eos", "max_new_tokens")


@pytest.mark.parametrize("args, code, message", [
    (["--image", "{photo}", "--model", "{nowhere}"], 1, "does not exist"),
    (["--image", "{model}/config.json", "--model", "{model}"], 1, "not an image format"),
    (["--image", "{photo}", "--model", "{model}", "--max-new-tokens", "0"], 2, "max_new_tokens must be at least 1"),
    (["--image", "{photo}", "--model", "{model}", "--dtype", "float8"], 2, "invalid choice"),
])
def test_errors_are_one_clear_line(toy_model_dir, photos, tmp_path, args, code, message):
    args = [a.format(photo=photos[0], model=toy_model_dir, nowhere=tmp_path / "nowhere") for a in args]
    out = run("generate", "--prompt", "caption en", *args)
    assert out.returncode == code
    assert message in out.stderr and "Traceback" not in out.stderr
    if code == 1:
        assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_missing_gpu_says_so(toy_model_dir, photos):
    out = run("generate", "--model", str(toy_model_dir), "--image", str(photos[0]), "--prompt", "ocr",
              "--device", "cuda")
    assert out.returncode == 1 and "no CUDA GPU is available" in out.stderr and "--device cpu" in out.stderr


def test_debug_shows_the_traceback(toy_model_dir, tmp_path):
    out = run("--debug", "generate", "--model", str(tmp_path), "--image", "x.png", "--prompt", "caption en")
    assert out.returncode == 1 and "Traceback" in out.stderr


def test_bench_runs_ours(toy_model_dir, photos):
    out = run("bench", "--model", str(toy_model_dir), "--image", str(photos[0]), "--new-tokens", "8", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    assert "decode tokens/s" in out.stdout and "peak RSS" in out.stdout


def test_bench_compares_with_transformers(toy_model_dir, photos):
    pytest.importorskip("transformers")
    out = run("bench", "--model", str(toy_model_dir), "--image", str(photos[0]), "--new-tokens", "8",
              "--device", "cpu", "--compare", "transformers")
    assert out.returncode == 0, out.stderr
    assert "ours/ref" in out.stdout and "greedy tokens identical: True" in out.stdout


def test_make_toy(tmp_path):
    out = run("make-toy", str(tmp_path / "toy"), "--spelling", "transformers5", "--shards", "1")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "toy" / "model.safetensors").is_file() and (tmp_path / "toy" / "tokenizer.model").is_file()
