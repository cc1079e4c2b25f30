"""The quantized layers (model/quant.py) against a float reference built from their own dequantized weights.

Where a product runs through torch's kernel it takes bf16 inputs and returns bf16-rounded outputs, so the reference
rounds the input the same way and the tolerance is bf16's output rounding; where it dequantizes, the reference is
exact to float32 summation order. Both paths are asserted on any x86 CPU; neither depends on this CPU's kernels
being the fast ones.
"""

from __future__ import annotations

import pytest
import torch

from vlm_core.model import quant
from vlm_core.model.quant import (Int4Linear, Int8Embedding, Int8Linear, dequantize_int4, dequantize_int8,
                                  group_size, quantize_int4, quantize_int8)
from vlm_core.weights.quantize_pack import _torch_cpu_pack, pack_cpu

# (out, in): the toy's widths 72, 96 and 160 (groups 72, 96, 80: the kernel refuses them, so they dequantize),
# and shapes the int4 kernel takes (group 128 or 64, rows a multiple of 16, a partial 64-row block).
SHAPES = [(96, 72), (160, 96), (72, 160), (128, 256), (48, 128), (80, 256)]


def _close_to_bf16_rounding(got, want):
    torch.testing.assert_close(got, want, rtol=2 ** -7, atol=1e-3 * float(want.abs().max()))


@pytest.mark.parametrize("k,expected", [(72, 72), (96, 96), (160, 80), (2304, 128), (3584, 128), (4608, 128),
                                        (9216, 128), (100, 100), (258, 86)])
def test_group_is_the_largest_divisor_up_to_128(k, expected):
    assert group_size(k) == expected and k % group_size(k) == 0


@pytest.mark.parametrize("n,k", SHAPES)
def test_quantization_error_is_at_most_half_a_step(n, k):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(n * k))
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.bfloat16 and int(q.abs().max()) <= 127
    assert ((w - dequantize_int8(q, scale)).abs() <= scale.float()[:, None] / 2 + 1e-6).all()
    g = group_size(k)
    packed, s, mid = quantize_int4(w, g)
    assert packed.shape == (n, k // 2) and s.shape == mid.shape == (n, k // g)
    step = s.float().repeat_interleave(g, dim=1)
    assert ((w - dequantize_int4(packed, s, mid)).abs() <= step / 2 + 1e-5).all()


def _linear(cls, n, k, seed=0):
    layer = cls(k, n)
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed))
    if cls is Int8Linear:
        layer.qweight, layer.scale = quantize_int8(w)
        ref = dequantize_int8(layer.qweight, layer.scale)
    else:
        layer.qweight, layer.scale, layer.mid = quantize_int4(w, layer.group)
        ref = dequantize_int4(layer.qweight, layer.scale, layer.mid)
        layer.prepare(pack_cpu)
    return layer, ref


@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("cls", [Int8Linear, Int4Linear])
@pytest.mark.parametrize("rows", [1, 3, 40])  # decode-sized (the kernel) and prefill-sized (dequantized) products
def test_float32_products_match_the_dequantized_reference(cls, n, k, rows):
    layer, ref = _linear(cls, n, k)
    x = torch.randn(2, rows, k, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        got = layer(x)
    assert got.shape == (2, rows, n) and got.dtype == torch.float32
    kernel = (cls is Int8Linear and rows * 2 <= quant._KERNEL_ROWS) or (cls is Int4Linear and layer.packed is not None)
    if kernel:
        _close_to_bf16_rounding(got, x.bfloat16().float() @ ref.t())
    else:
        torch.testing.assert_close(got, x @ ref.t(), rtol=1e-5, atol=1e-4)
    # rows(): int8 multiplies by a row slice of its weight: the same products, but the matmul library (MKL or
    # oneDNN, whichever an earlier Engine.load chose) may block a slice differently, so float32 rounding differs
    torch.testing.assert_close(layer.rows(x, 8, 40), got[..., 8:40], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls", [Int8Linear, Int4Linear])
def test_bfloat16_activations_run_the_kernel(cls):
    layer, ref = _linear(cls, 128, 256)
    x = torch.randn(5, 256, generator=torch.Generator().manual_seed(2)).bfloat16()
    with torch.inference_mode():
        got = layer(x)
    assert got.dtype == torch.bfloat16
    _close_to_bf16_rounding(got.float(), x.float() @ ref.t())


def test_int4_kernel_shapes_are_repacked_and_the_portable_copy_dropped():
    layer, _ = _linear(Int4Linear, 128, 256)
    assert layer.packed is not None and layer.qweight.numel() == 0
    odd, _ = _linear(Int4Linear, 96, 72)  # group 72: no kernel, keeps the portable format
    assert odd.packed is None and odd.qweight.shape == (96, 36)


@pytest.mark.parametrize("n", [64, 128, 192, 48, 80])
def test_fast_cpu_repacking_equals_torchs_converter(n):
    values = torch.randint(0, 16, (n, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
    packed = values[:, 0::2] | (values[:, 1::2] << 4)
    assert torch.equal(pack_cpu(packed), _torch_cpu_pack(packed))


def test_int8_embedding_reads_only_its_rows_and_is_the_head():
    w = torch.randn(300, 72, generator=torch.Generator().manual_seed(3))
    emb = Int8Embedding(300, 72)
    emb.qweight, emb.scale = quantize_int8(w)
    ref = dequantize_int8(emb.qweight, emb.scale)
    ids = torch.tensor([[5, 299, 0, 5]])
    torch.testing.assert_close(emb(ids), ref[ids], rtol=0, atol=0)
    h = torch.randn(1, 1, 72)
    with torch.inference_mode():
        _close_to_bf16_rounding(emb.project(h), h.bfloat16().float() @ ref.t())
        many = torch.randn(1, 30, 72)
        torch.testing.assert_close(emb.project(many), many @ ref.t(), rtol=1e-5, atol=1e-5)
