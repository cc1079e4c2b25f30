"""Requests past the model's limits, for real, in a real `python -m vlm_core` process: one line that names the limit,
never a traceback. The context (image tokens + prompt + new tokens) is checked before anything is allocated; an
allocation the machine refuses (an address-space limit set with setrlimit, as a small machine would) is one line."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def generate(model_dir: Path, image: Path, *args: str, limit_bytes: int | None = None, prompt: str = "caption en"):
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    cmd = [sys.executable, "-m", "vlm_core", "generate", "--model", str(model_dir), "--image", str(image),
           "--prompt", prompt, "--device", "cpu", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          preexec_fn=cap if limit_bytes else None)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


def test_max_new_tokens_past_the_context_is_one_line_naming_the_limit(toy_model_dir, photos):
    out = generate(toy_model_dir, photos[0], "--max-new-tokens", "100000000")
    assert out.returncode == 1
    line = one_line(out.stderr)
    assert line.startswith("error: max new tokens 100,000,000 is past the model's context of 8,192 positions")
    assert "(16 image + " in line and "ask for at most 8," in line


def test_a_prompt_that_does_not_fit_is_refused_with_the_numbers(toy_model_dir, photos):
    out = generate(toy_model_dir, photos[0], "--max-new-tokens", "4", prompt="caption en " + "word " * 9000)
    assert out.returncode == 1
    line = one_line(out.stderr)
    assert line.startswith("error: The prompt does not fit the model's context: 16 image tokens + ")
    assert "and the model has 8,192 positions" in line


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is how the test makes a small machine")
def test_an_allocation_the_machine_refuses_is_one_line(toy_model_dir, photos, tmp_path):
    """A checkpoint whose context is huge (max_position_embeddings), and a cache that needs ~30 GB: the OS refuses
    the allocation under a 6 GB address-space limit, and the user reads one line."""
    model = tmp_path / "long-context"
    shutil.copytree(toy_model_dir, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["text_config"]["max_position_embeddings"] = 1 << 30
    (model / "config.json").write_text(json.dumps(cfg))
    out = generate(model, photos[0], "--max-new-tokens", "20000000", limit_bytes=6 << 30)
    assert out.returncode == 1
    line = one_line(out.stderr)
    assert line.startswith("error: the CPU ran out of memory for this request") or "ran out of memory" in line


def test_a_long_prefill_shows_its_progress(toy_model_dir, photos, monkeypatch):
    """The engine reports each decoder layer of the prefill, in order; the CLI turns that into a line on stderr
    once the prefill has run long enough (the threshold set to 0 here, so the toy's short prefill counts)."""
    from vlm_core.runtime.engine import Engine
    from vlm_core.runtime.generate import SamplingParams

    engine = Engine.load(toy_model_dir, device="cpu")
    seen = []
    result = list(engine.stream(photos[0], "caption en", SamplingParams(max_new_tokens=3),
                                prefill_progress=lambda done, total: seen.append((done, total))))
    layers = engine.cfg.text.num_hidden_layers
    assert seen == [(i, layers) for i in range(1, layers + 1)]  # the prefill only: decode steps report nothing
    assert result

    monkeypatch.setenv("VLM_PREFILL_NOTICE_S", "0")
    out = generate(toy_model_dir, photos[0], "--max-new-tokens", "3")
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"reading the prompt: layer {layers}/{layers} (100%)" in out.stderr
    monkeypatch.setenv("VLM_PREFILL_NOTICE_S", "60")
    quiet = generate(toy_model_dir, photos[0], "--max-new-tokens", "3")
    assert "reading the prompt" not in quiet.stderr  # a quick prefill says nothing


def test_batch_refuses_a_length_past_the_context_in_one_line(toy_model_dir, photos, tmp_path):
    out = subprocess.run([sys.executable, "-m", "vlm_core", "batch", "--model", str(toy_model_dir), "--inputs",
                          str(photos[0]), "--prompt", "caption en", "--out", str(tmp_path / "r.jsonl"),
                          "--max-new-tokens", "100000000", "--device", "cpu", "--no-progress"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert lines == [lines[0]] and "past the model's context of 8,192 positions" in lines[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
