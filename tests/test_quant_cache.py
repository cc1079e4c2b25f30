"""Quantize-on-load, the packed cache (build, reuse, invalidation, truncated or foreign files rebuilt with a log
line), the one-line errors of --quant, `quantize`, `info`'s sizes per scheme and auto's choice by memory."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from vlm_core.errors import DeviceError
from vlm_core.model.config import PRESETS, PaliGemmaConfig, VisionConfig
from vlm_core.model.quant import Int4Linear, Int8Embedding, Int8Linear, dequantize_int8, quantize_int8
from vlm_core.runtime.engine import Engine
from vlm_core.runtime.generate import SamplingParams
from vlm_core.runtime.quant_choice import choose_quant
from vlm_core.weights.loader import load_model
from vlm_core.weights.quantize import check_quant
from vlm_core.weights import quantize_cache
from vlm_core.weights.quantize_cache import cache_path
from vlm_core.weights.quantize_pack import LAYOUT_NAMES, PORTABLE, cpu_layout, in_layout, to_layout, to_portable

PARAMS = SamplingParams(max_new_tokens=6, ignore_eos=True)


@pytest.fixture
def model_dir(make_checkpoint, tmp_path):
    """A private copy of a bf16 toy (each test writes its own cache)."""
    src = make_checkpoint(dtype=torch.bfloat16)
    dst = tmp_path / "model"
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_every_decoder_linear_and_the_embedding_are_quantized_and_match_the_source(model_dir):
    engine = Engine.load(model_dir, device="cpu", dtype="float32", quant="int8")
    text = engine.model.text
    assert isinstance(text.embed_tokens, Int8Embedding)
    for layer in text.layers:
        for m in (layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj):
            assert isinstance(m, Int8Linear)
    assert engine.model.projector.weight.dtype == torch.float32  # SigLIP and the projector stay float
    ref = load_model(model_dir, "cpu", torch.float32)
    fused = ref.text.layers[0].self_attn.qkv_proj.weight  # q, k, v stacked: each row quantized on its own
    q, scale = quantize_int8(fused)
    assert torch.equal(text.layers[0].self_attn.qkv_proj.qweight, q)
    torch.testing.assert_close(dequantize_int8(q, scale), fused, atol=float(scale.max()) / 2 + 1e-6, rtol=0)
    int4 = Engine.load(model_dir, device="cpu", dtype="float32", quant="int4")
    assert isinstance(int4.model.text.layers[0].mlp.down_proj, Int4Linear)
    assert isinstance(int4.model.text.embed_tokens, Int8Embedding)  # the head is int8 under int4 too
    full = Engine.load(model_dir, device="cpu", dtype="float32")
    assert int4.weight_bytes() < engine.weight_bytes() < full.weight_bytes()


def test_cache_is_built_then_reused_then_rebuilt_when_the_source_changes(model_dir, caplog):
    caplog.set_level(logging.INFO, logger="vlm_core.weights.quantize")
    Engine.load(model_dir, device="cpu", dtype="float32", quant="int4")
    path = cache_path(model_dir, "int4")
    assert path.is_file()
    built = path.stat().st_mtime_ns
    caplog.clear()
    Engine.load(model_dir, device="cpu", dtype="float32", quant="int4")
    assert path.stat().st_mtime_ns == built and any("loaded int4 weights from" in r.message for r in caplog.records)

    shard = sorted(model_dir.glob("model-*.safetensors"))[0]
    os.utime(shard, ns=(built + 10**9, built + 10**9))  # a re-download: same name, new file
    caplog.clear()
    Engine.load(model_dir, device="cpu", dtype="float32", quant="int4")
    assert path.stat().st_mtime_ns != built
    assert [r.message for r in caplog.records if "rebuilding" in r.message] == [
        f"rebuilding the int4 cache {path}: the model's files changed since it was built"]


def test_cached_and_fresh_loads_answer_alike(model_dir, photos):
    answers = [Engine.load(model_dir, device="cpu", dtype="float32", quant="int8").generate(photos[0], "caption en",
                                                                                            PARAMS) for _ in range(2)]
    fresh, cached = answers
    assert fresh.token_ids == cached.token_ids


@pytest.mark.parametrize("damage", ["truncated", "foreign", "garbage", "other-scheme"])
def test_a_damaged_or_foreign_cache_is_rebuilt_with_a_log_line(model_dir, caplog, damage):
    path = cache_path(model_dir, "int8")
    Engine.load(model_dir, device="cpu", dtype="float32", quant="int8")
    good = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "foreign":
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    elif damage == "garbage":
        path.write_bytes(b"\xff" * 100)
    else:
        Engine.load(model_dir, device="cpu", dtype="float32", quant="int4")
        path.write_bytes(cache_path(model_dir, "int4").read_bytes())
    caplog.set_level(logging.INFO, logger="vlm_core.weights.quantize")
    Engine.load(model_dir, device="cpu", dtype="float32", quant="int8")
    assert len([r for r in caplog.records if r.message.startswith(f"rebuilding the int8 cache {path}: ")]) == 1
    assert path.read_bytes() == good  # rebuilt, the same bytes as the first build
    assert not list(path.parent.glob("*.partial"))


def test_a_read_only_folder_runs_quantized_without_a_cache(model_dir, caplog, monkeypatch):
    (model_dir / "quantized").write_text("a file where the folder would go")
    caplog.set_level(logging.WARNING, logger="vlm_core.weights.quantize")
    engine = Engine.load(model_dir, device="cpu", dtype="float32", quant="int8")
    assert engine.quant == "int8" and any("could not write" in r.message for r in caplog.records)


@pytest.mark.parametrize("device,dtype,hint", [
    ("cpu", torch.float16, "use --dtype bfloat16, float32 or auto"),
    ("mps", torch.float32, "use --quant none, or --device cpu"),
    ("cuda", torch.float32, "use --dtype bfloat16 or auto"),
])
def test_quant_that_cannot_run_says_what_to_use(device, dtype, hint):
    with pytest.raises(DeviceError) as e:
        check_quant("int8", torch.device(device), dtype)
    assert str(e.value).endswith(hint) and "\n" not in str(e.value)
    check_quant("none", torch.device(device), dtype)


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-m", "vlm_core", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def test_cli_quant_errors_are_one_line_and_quantize_builds_the_cache(model_dir, photos, tmp_path):
    bad = _cli("generate", "--model", str(model_dir), "--image", str(photos[0]), "--prompt", "caption en",
               "--device", "cpu", "--dtype", "float16", "--quant", "int4", cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0
    assert bad.stderr.startswith("error: int4 weights run with bfloat16 or float32 activations")
    built = _cli("quantize", "--model", str(model_dir), "--quant", "int4", cwd=tmp_path)
    assert built.returncode == 0 and built.stdout.startswith("built ") and cache_path(model_dir, "int4").is_file()
    again = _cli("quantize", "--model", str(model_dir), "--quant", "int4", cwd=tmp_path)
    assert again.stdout.startswith("already up to date: ")
    out = _cli("generate", "--model", str(model_dir), "--image", str(photos[0]), "--prompt", "caption en",
               "--device", "cpu", "--quant", "int4", "--max-new-tokens", "3", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["token_ids"]) >= 1


def test_info_json_lists_sizes_per_scheme(model_dir, tmp_path):
    out = _cli("info", "--model", str(model_dir), "--json", cwd=tmp_path)
    sizes = json.loads(out.stdout)["quant_bytes"]
    for dtype in ("bfloat16", "float32"):
        assert sizes[dtype]["int4"] < sizes[dtype]["int8"] < sizes[dtype]["none"]
    assert sizes["bfloat16"]["none"] == json.loads(out.stdout)["weight_bytes"]["bfloat16"]


def test_auto_picks_the_best_scheme_that_fits():
    cfg = PaliGemmaConfig(text=PRESETS["10b"], vision=VisionConfig(image_size=224))
    gib = 2 ** 30
    cuda = torch.device("cuda")  # only its type is read when the memory is given
    assert choose_quant("auto", cuda, torch.bfloat16, cfg, memory=80 * gib)[0] == "none"
    assert choose_quant("auto", cuda, torch.bfloat16, cfg, memory=16 * gib)[0] == "int8"
    scheme, why = choose_quant("auto", cuda, torch.bfloat16, cfg, memory=12 * gib)
    assert scheme == "int4" and "would not fit 12 GiB of GPU" in why
    why = choose_quant("auto", cuda, torch.bfloat16, cfg, memory=4 * gib)[1]
    assert why.startswith("int4 weights (5.8 GiB), the smallest")
    assert choose_quant("int8", cuda, torch.bfloat16, cfg, memory=4 * gib)[0] == "int8"  # as chosen


# Widths the int4 kernel takes (groups of 128, rows in whole blocks of 64): the default toy's 72/96/160 never reach it.
KERNEL_TEXT = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2, "num_key_value_heads": 1,
               "head_dim": 64}


def test_an_int4_cache_holds_this_cpus_kernel_layout_and_every_layout_answers_alike(make_checkpoint, tmp_path,
                                                                                      photos):
    src = make_checkpoint(dtype=torch.bfloat16, text=KERNEL_TEXT)
    folder = tmp_path / "model"
    folder.mkdir()
    for f in src.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    built = Engine.load(folder, device="cpu", dtype="float32", quant="int4")
    layers = [m for m in built.model.modules() if isinstance(m, Int4Linear)]
    assert layers and all(m.packed is not None for m in layers)  # every layer runs the kernel
    want = built.generate(photos[0], "caption en", PARAMS).token_ids
    path = cache_path(folder, "int4")
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    layout = header["__metadata__"]["int4_layout"]
    assert layout == (cpu_layout() or PORTABLE)
    assert Engine.load(folder, device="cpu", dtype="float32", quant="int4").generate(
        photos[0], "caption en", PARAMS).token_ids == want  # this CPU's layout, read back with no repack

    # the same cache as another machine (or an older version) wrote it: undone exactly, then packed for this CPU
    metadata = dict(header["__metadata__"])
    tensors = quantize_cache.read(path, metadata, {k: tuple(v["shape"]) for k, v in header.items()
                                                    if k != "__metadata__"})
    names = {f"{n}.qweight": m for n, m in built.model.named_modules() if isinstance(m, Int4Linear)}
    for other in [*(n for n in LAYOUT_NAMES if n != layout), PORTABLE]:
        rewritten = dict(tensors)
        for name, m in names.items():
            portable = to_portable(tensors[name], layout) if in_layout(layout, m) else tensors[name]
            rewritten[name] = to_layout(portable, other) if in_layout(other, m) else portable
        quantize_cache.write(path, rewritten, {**metadata, "int4_layout": other})
        assert Engine.load(folder, device="cpu", dtype="float32", quant="int4").generate(
            photos[0], "caption en", PARAMS).token_ids == want, other


def test_the_speed_note_says_what_each_scheme_does_on_this_kind_of_device():
    from vlm_core.runtime.quant_choice import speed_note

    cpu = torch.device("cpu")
    assert speed_note("none", cpu, torch.bfloat16) == ""
    assert "saves memory" in speed_note("int8", cpu, torch.float32)  # no native bf16: a memory saving
    assert "2.1x" in speed_note("int4", cpu, torch.bfloat16) and "later" in speed_note("int4", cpu, torch.bfloat16)
    assert "1.45x" in speed_note("int8", cpu, torch.bfloat16)
    assert speed_note("int4", torch.device("cuda"), torch.bfloat16) == "int4 kernels with bfloat16 activations"
