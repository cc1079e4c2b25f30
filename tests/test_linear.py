"""The float32 CPU matmul choice (model/linear.py, runtime/cpu_caps.onednn_fp32): oneDNN and F.linear agree to
float32 rounding on every shape the model uses, the choice follows the CPU vendor and VLM_CPU_MATMUL, a PyTorch
without a working oneDNN linear falls back to F.linear, and the whole model generates the same tokens either way."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlm_core.model import linear as linear_mod
from vlm_core.runtime import cpu_caps
from vlm_core.runtime.engine import Engine
from vlm_core.runtime.generate import SamplingParams

AMD = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2\n"
INTEL = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 avx512f\n"


@pytest.fixture
def restore_choice():
    before = linear_mod._onednn_fp32
    yield
    linear_mod._onednn_fp32 = before


@pytest.mark.parametrize("shape", [((1, 1, 40), (96, 40)), ((2, 37, 64), (24, 64)), ((1, 300, 48), (80, 48))])
@pytest.mark.parametrize("bias", [False, True])
def test_onednn_and_f_linear_agree(shape, bias, restore_choice):
    if not linear_mod.use_onednn_fp32(True):
        pytest.skip("no oneDNN linear in this PyTorch")
    gen = torch.Generator().manual_seed(1)
    x, w = torch.randn(shape[0], generator=gen), torch.randn(shape[1], generator=gen)
    b = torch.randn(shape[1][0], generator=gen) if bias else None
    with torch.inference_mode():
        got = linear_mod.linear(x, w, b)
        sliced = linear_mod.linear(x, w[: w.shape[0] // 2])  # a row slice of a fused weight, as last_only uses
    torch.testing.assert_close(got, F.linear(x, w, b), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sliced, F.linear(x, w[: w.shape[0] // 2]), atol=1e-5, rtol=1e-5)


def test_gradients_and_other_dtypes_keep_f_linear(restore_choice, monkeypatch):
    linear_mod.use_onednn_fp32(True)
    calls = []
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", lambda *a: calls.append(a), raising=False)
    x, w = torch.randn(2, 8, requires_grad=True), torch.randn(4, 8)
    linear_mod.linear(x, w).sum().backward()  # grad enabled: F.linear, so autograd works
    with torch.inference_mode():
        linear_mod.linear(x.detach().bfloat16(), w.bfloat16())
    assert calls == [] and x.grad is not None


def test_missing_onednn_falls_back_with_a_log_line(restore_choice, monkeypatch, caplog):
    def broken(*_):
        raise RuntimeError("mkldnn linear not compiled in")

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", broken, raising=False)
    caplog.set_level("INFO", logger=linear_mod.__name__)
    assert linear_mod.use_onednn_fp32(True) is False
    assert "stay on the default BLAS" in caplog.text
    x, w = torch.randn(3, 8), torch.randn(5, 8)
    with torch.inference_mode():
        torch.testing.assert_close(linear_mod.linear(x, w), F.linear(x, w))


def test_choice_follows_the_vendor_and_the_override():
    assert cpu_caps.onednn_fp32(AMD, env={})[0] is True
    assert cpu_caps.onednn_fp32(INTEL, env={})[0] is False
    assert cpu_caps.onednn_fp32(INTEL, env={"VLM_CPU_MATMUL": "oneDNN"}) == (True, "float32 matmuls in oneDNN "
                                                                             "(VLM_CPU_MATMUL)")
    assert cpu_caps.onednn_fp32(AMD, env={"VLM_CPU_MATMUL": "mkl"})[0] is False
    assert cpu_caps.onednn_fp32(AMD, env={"VLM_CPU_MATMUL": "bogus"})[0] is True  # unknown values: the default


@pytest.mark.parametrize("forced", ["onednn", "mkl"])
def test_engine_says_which_and_generates_the_same_tokens(toy_model_dir, photos, forced, monkeypatch,
                                                         restore_choice):
    monkeypatch.setenv("VLM_CPU_MATMUL", forced)
    engine = Engine.load(toy_model_dir, device="cpu", dtype="float32")
    assert ("oneDNN" if forced == "onednn" else "MKL") in engine.choices
    params = SamplingParams(max_new_tokens=24, ignore_eos=True)
    ids = engine.generate(photos[0], "caption en", params).token_ids
    monkeypatch.setenv("VLM_CPU_MATMUL", "mkl" if forced == "onednn" else "onednn")
    other = Engine.load(toy_model_dir, device="cpu", dtype="float32")
    assert other.generate(photos[0], "caption en", params).token_ids == ids
