"""bench's arithmetic and its --json output, and the CPU defaults it reports (dtype by native bf16, threads by
physical cores)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest
import torch

from vlm_core.cli.bench import _print_runs, decode_bytes, read_bandwidth, spread, summarize
from vlm_core.model.config import PaliGemmaConfig
from vlm_core.runtime import cpu_caps
from vlm_core.runtime.engine import Engine, choose_dtype


def test_bytes_per_token_of_the_3b_match_the_published_figure():
    """PaliGemma 2 3B in bf16 reads 5.23 GB per decoded token, 1.18 GB of it the tied 257k-entry head."""
    cfg = PaliGemmaConfig()
    moved = decode_bytes(cfg, 2, keys_attended=0)
    assert moved["weights"] == pytest.approx(5.236e9, rel=2e-3)
    assert moved["kv"] == 0
    head = cfg.text.vocab_size * cfg.text.hidden_size * 2
    assert head == pytest.approx(1.185e9, rel=1e-3)
    # keys and values: 26 layers x 4 kv heads x 256 x 2 (k and v) x 2 bytes = 106 kB per attended position
    assert decode_bytes(cfg, 2, keys_attended=512)["kv"] == 26 * 4 * 256 * 2 * 2 * 512


def test_summary_ratios_and_bandwidth_share():
    ours = {"load_s": 2.0, "peak_rss": 100, "ttft_s": 0.5, "decode_tokens_per_s": 30.0, "tokens": [1, 2, 3],
            "bytes_per_token": 1e9, "bandwidth_bytes_per_s": 60e9, "load_peak_rss": 90, "weight_bytes": 90,
            "device_name": "CPU", "dtype": "float32", "choices": "float32: as chosen", "graphs": False}
    ref = {"load_s": 4.0, "peak_rss": 200, "ttft_s": 1.0, "decode_tokens_per_s": 10.0, "tokens": [1, 2, 4],
           "bytes_per_token": 1.2e9, "load_peak_rss": 20, "weight_bytes": 100}
    out = summarize({"ours": dict(ours), "transformers": dict(ref)})
    assert out["ratios"]["transformers"] == {"load_s": 0.5, "peak_rss": 0.5, "ttft_s": 0.5, "decode_tokens_per_s": 3.0}
    assert out["ours"]["bandwidth_share"] == pytest.approx(0.5)  # 1 GB x 30 tok/s of 60 GB/s
    assert out["transformers"]["bandwidth_share"] == pytest.approx(0.2)
    assert out["transformers"]["tokens_identical"] is False
    assert out["read_bandwidth_GBps"] == pytest.approx(60.0)


def test_repeated_runs_give_each_sides_spread_and_the_per_run_ratios(capsys):
    """Run i of ours is set against run i of the reference (the same turn); the median is the figure to quote."""
    ours = {"load_s": 2.0, "peak_rss": 100, "ttft_s": 0.4, "decode_tokens_per_s": 30.0, "tokens": [1],
            "bytes_per_token": 1e9, "bandwidth_bytes_per_s": 60e9, "load_peak_rss": 90, "weight_bytes": 90,
            "device_name": "CPU", "dtype": "float32", "choices": "", "graphs": False,
            "runs": [{"ttft_s": 0.5, "decode_tokens_per_s": 30.0}, {"ttft_s": 0.4, "decode_tokens_per_s": 20.0},
                     {"ttft_s": 0.6, "decode_tokens_per_s": 24.0}]}
    ref = {"load_s": 4.0, "peak_rss": 200, "ttft_s": 1.0, "decode_tokens_per_s": 10.0, "tokens": [1],
           "bytes_per_token": 1e9, "load_peak_rss": 20, "weight_bytes": 100,
           "runs": [{"ttft_s": 1.0, "decode_tokens_per_s": 10.0}, {"ttft_s": 2.0, "decode_tokens_per_s": 5.0},
                    {"ttft_s": 1.0, "decode_tokens_per_s": 12.0}]}
    out = summarize({"ours": ours, "transformers": ref})
    assert out["ours"]["spread"]["ttft_s"] == {"min": 0.4, "median": 0.5, "max": 0.6}
    assert out["transformers"]["spread"]["decode_tokens_per_s"] == {"min": 5.0, "median": 10.0, "max": 12.0}
    ratios = out["ratio_spread"]["transformers"]
    assert ratios["ttft_s"] == {"min": 0.2, "median": 0.5, "max": 0.6, "runs": [0.5, 0.2, 0.6]}
    assert ratios["decode_tokens_per_s"] == {"min": 2.0, "median": 3.0, "max": 4.0, "runs": [3.0, 4.0, 2.0]}
    assert ratios["load_s"] == {"min": 0.5, "median": 0.5, "max": 0.5}  # measured once per side
    assert spread([3.0, 1.0, 2.0, 10.0]) == {"min": 1.0, "median": 2.5, "max": 10.0}

    out["interleaved"] = True
    _print_runs(out, ["ours", "transformers"])
    text = capsys.readouterr().out.splitlines()
    assert text[0] == "best of 3 runs above (runs took turns); every run, TTFT s / decode tokens/s:"
    assert text[2].split() == ["run", "2", "0.400", "/", "20.0", "2.000", "/", "5.0"]
    assert text[-1] == ("  ours/transformers, per run: TTFT median 0.50 (min 0.20, max 0.60)x, "
                        "decode median 3.00 (min 2.00, max 4.00)x")


def test_repeat_reports_every_run_taking_turns_and_the_spread(toy_model_dir, photos):
    pytest.importorskip("transformers")
    out = subprocess.run([sys.executable, "-m", "vlm_core", "bench", "--model", str(toy_model_dir), "--image",
                          str(photos[0]), "--new-tokens", "4", "--device", "cpu", "--dtype", "float32", "--compare",
                          "transformers", "--repeat", "3", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    ours, ref = result["ours"]["runs"], result["transformers"]["runs"]
    assert len(ours) == len(ref) == 3 and result["interleaved"] is True
    for i in range(3):  # ours, ref, ours, ref...: each run starts after the other side's previous one ended
        assert ours[i]["span"][1] <= ref[i]["span"][0]
        assert i == 2 or ref[i]["span"][1] <= ours[i + 1]["span"][0]
    for key in ("ttft_s", "decode_tokens_per_s"):
        per_run = [a[key] / b[key] for a, b in zip(ours, ref)]
        got = result["ratio_spread"]["transformers"][key]
        assert got["runs"] == pytest.approx(per_run)
        assert got["min"] <= got["median"] <= got["max"] and got["median"] == pytest.approx(statistics.median(per_run))
        for side in ("ours", "transformers"):
            values = [r[key] for r in result[side]["runs"]]
            assert result[side]["spread"][key] == pytest.approx(spread(values))
    # the headline stays the best run: other work only ever slows a run down
    assert result["ours"]["ttft_s"] == min(r["ttft_s"] for r in ours)
    assert result["ours"]["tokens_stable"] and result["transformers"]["tokens_stable"]



def test_read_bandwidth_is_measured():
    assert read_bandwidth("cpu") > 1e8  # any machine reads more than 100 MB/s


def test_bench_json_is_one_object_with_ours_the_reference_and_ratios(toy_model_dir, photos):
    pytest.importorskip("transformers")
    out = subprocess.run([sys.executable, "-m", "vlm_core", "bench", "--model", str(toy_model_dir), "--image",
                          str(photos[0]), "--new-tokens", "6", "--device", "cpu", "--dtype", "float32",
                          "--compare", "transformers", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for name in ("ours", "transformers"):
        assert {"load_s", "peak_rss", "ttft_s", "decode_tokens_per_s", "bytes_per_token",
                "bandwidth_share"} <= set(result[name])
    assert result["transformers"]["tokens_identical"] is True
    assert set(result["ratios"]["transformers"]) == {"load_s", "peak_rss", "ttft_s", "decode_tokens_per_s"}
    assert result["read_bandwidth_GBps"] > 0 and "thread" in result["choices"]


def test_static_reference_needs_cuda(toy_model_dir, photos):
    out = subprocess.run([sys.executable, "-m", "vlm_core", "bench", "--model", str(toy_model_dir), "--image",
                          str(photos[0]), "--new-tokens", "2", "--device", "cpu", "--compare", "transformers-static"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "transformers-static needs CUDA" in out.stderr and "Traceback" not in out.stderr


AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma f16c\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ZEN4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_native_bf16_from_cpu_flags():
    assert cpu_caps.native_bf16(AVX2_ONLY) == (False, "AVX2 without bf16 instructions")
    assert cpu_caps.native_bf16(SAPPHIRE) == (True, "AMX")
    assert cpu_caps.native_bf16(ZEN4) == (True, "AVX512-BF16")
    assert cpu_caps.native_bf16(GRAVITON3) == (True, "Arm BF16")


def _cpuinfo(cores: int, smt: int) -> str:
    blocks = []
    for core in range(cores):
        for thread in range(smt):
            blocks.append(f"processor\t: {core + thread * cores}\nphysical id\t: 0\ncore id\t: {core}\n")
    return "\n".join(blocks)


def test_physical_cores_count_smt_siblings_once_and_respect_affinity():
    assert cpu_caps.physical_cores(_cpuinfo(4, 2), allowed=set(range(8))) == 4
    assert cpu_caps.physical_cores(_cpuinfo(4, 2), allowed={0, 4}) == 1  # two siblings of core 0
    assert cpu_caps.physical_cores(_cpuinfo(4, 1), allowed={0, 1, 2}) == 3
    assert cpu_caps.physical_cores() >= 1


def test_auto_dtype_on_this_cpu_follows_its_bf16_support_and_says_why(toy_model_dir):
    native, found = cpu_caps.native_bf16()
    dtype, why = choose_dtype("auto", torch.device("cpu"))
    assert dtype == (torch.bfloat16 if native else torch.float32) and found in why
    assert choose_dtype("float32", torch.device("cpu")) == (torch.float32, "float32: as chosen")
    threads = torch.get_num_threads()
    try:
        engine = Engine.load(toy_model_dir, device="cpu", dtype="auto")
        assert engine.dtype == dtype
        assert engine.choices.startswith(why) and f"{cpu_caps.physical_cores()} CPU thread" in engine.choices
        assert torch.get_num_threads() == cpu_caps.physical_cores()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_cpu_runs_take_turns_whatever_the_device_was_called(toy_model_dir, photos, device, monkeypatch):
    """Interleaving is decided on the device the run resolves to: `--device auto` on a machine without a GPU is a
    CPU run and takes turns like `--device cpu` (a literal comparison once left it running each child alone)."""
    import argparse

    from vlm_core.cli import bench

    if device == "auto" and bench._device("auto").type != "cpu":
        pytest.skip("auto is a GPU here")
    seen = {}

    def measure(impls, common, repeat, interleave):
        seen["interleave"] = interleave
        raise SystemExit

    monkeypatch.setattr(bench, "measure", measure)
    args = argparse.Namespace(model=str(toy_model_dir), image=str(photos[0]), prompt="caption en", device=device,
                              dtype="float32", new_tokens=2, compare=["transformers"])
    with pytest.raises(SystemExit):
        bench.run(args, None)
    assert seen["interleave"] is True
