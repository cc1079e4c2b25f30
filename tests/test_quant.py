"""The quantized layers (model/quant.py) against a float reference built from their own dequantized weights.

Where a product runs through torch's kernel it takes bf16 inputs and returns bf16-rounded outputs, so the reference
rounds the input the same way and the tolerance is bf16's output rounding; where it dequantizes, the reference is
exact to float32 summation order. Both paths are asserted on any x86 CPU; neither depends on this CPU's kernels
being the fast ones.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from vlm_core.model import quant
from vlm_core.model.quant import (Int4Linear, Int8Embedding, Int8Linear, dequantize_int4, dequantize_int8,
                                  group_size, quantize_int4, quantize_int8)
from vlm_core.weights.quantize_pack import (_LAYOUTS, _torch_cpu_pack, cpu_unpacker, pack_cpu, to_layout,
                                           to_portable)

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
        layer.prepare(pack_cpu, cpu_unpacker)
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
    few = rows * 2 <= quant._KERNEL_ROWS
    if cls is Int8Linear:
        kernel = few and k % quant._INT8_KERNEL_K == 0
    else:
        kernel = layer.packed is not None and (few or layer._unpack is None)
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


@pytest.mark.parametrize("name", list(_LAYOUTS))
def test_every_known_int4_layout_unpacks_to_its_values(name):
    # every layout, whichever one this CPU's torch writes: the tiles of a long product are read back through it
    block, pack, unpack, transposed = _LAYOUTS[name]
    values = torch.randint(0, 16, (3 * block, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    packed = pack(values)
    assert packed.shape == (3 * block, 128)
    assert torch.equal(unpack(packed), values)
    assert torch.equal(unpack(packed[block:2 * block]), values[block:2 * block])  # whole blocks unpack alone
    portable = values[:, 0::2] | (values[:, 1::2] << 4)  # what the cache stores in another layout undoes to
    assert torch.equal(to_layout(portable, name), packed) and torch.equal(to_portable(packed, name), portable)
    out = torch.empty(2, 256, block, dtype=torch.uint8)  # blocks 1 and 2, each transposed: what a long product reads
    transposed(packed[block:], out)
    assert torch.equal(out, values[block:].view(2, block, 256).transpose(1, 2))


@pytest.mark.parametrize("tile,scratch", [(1, 1 << 20), (3 * 64 * 256, 1)])  # one block a tile; 3 tiles of 1
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cls", [Int8Linear, Int4Linear])
def test_long_products_dequantize_tiles_of_the_packed_weight(cls, dtype, tile, scratch, monkeypatch):
    # a prefill-sized product: the weight is dequantized a few rows at a time (small tiles here, so the seams
    # between tiles and between the blocks inside one are crossed) and multiplied by the CPU's own matmul; the
    # result is the dequantized reference's
    monkeypatch.setattr(quant, "_TILE", tile)
    monkeypatch.setattr(quant, "_SCRATCH", scratch)
    layer, ref = _linear(cls, 256 * 3, 256)
    if cls is Int4Linear:
        assert layer._unpack is not None  # 256 rows: whole blocks under every known layout
    rows = quant._KERNEL_ROWS_BF16 + 1
    x = torch.randn(rows, 256, generator=torch.Generator().manual_seed(4)).to(dtype)
    with torch.inference_mode():
        got = layer(x)
    assert got.dtype == dtype
    want = x.float() @ ref.to(dtype).float().t()  # the weight rounded to the activation dtype, as the tiles are
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    else:
        _close_to_bf16_rounding(got.float(), want)


@pytest.mark.parametrize("d", [72, 128])  # the toy's width (dequantized on every CPU) and one the kernel takes
def test_int8_embedding_reads_only_its_rows_and_is_the_head(d):
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(300, d, generator=gen)
    emb = Int8Embedding(300, d)
    emb.qweight, emb.scale = quantize_int8(w)
    ref = dequantize_int8(emb.qweight, emb.scale)
    ids = torch.tensor([[5, 299, 0, 5]])
    torch.testing.assert_close(emb(ids), ref[ids], rtol=0, atol=0)
    h = torch.randn(1, 1, d, generator=gen)
    with torch.inference_mode():
        if d % quant._INT8_KERNEL_K == 0:  # the kernel: bf16 input, one rounding of the output
            _close_to_bf16_rounding(emb.project(h), h.bfloat16().float() @ ref.t())
        else:
            torch.testing.assert_close(emb.project(h), h @ ref.t(), rtol=1e-5, atol=1e-5)
        many = torch.randn(1, 30, d, generator=gen)
        torch.testing.assert_close(emb.project(many), many @ ref.t(), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_after_a_load_large_temporaries_reuse_the_heap_instead_of_faulting_in_fresh_pages():
    # a prefill frees and allocates temporaries of several MB per layer; glibc maps each one afresh (every page
    # faulted in and zeroed: 1.5-2 GB per int8 prefill on the 3B) unless keep_freed_memory() has run
    code = textwrap.dedent("""
        import resource, sys, torch
        from vlm_core.weights.heap import keep_freed_memory
        def faults():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(20):
                torch.empty(40 << 20, dtype=torch.uint8).fill_(1)  # 40 MB: above glibc's own highest threshold
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        fresh = faults()
        assert keep_freed_memory()
        faults()  # glibc settles its heap in the first few (seen: up to 9 faulted afresh, then none)
        print(fresh, faults())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    fresh, kept = int(out[0]), int(out[1])
    assert fresh > 20 * 40 * 256 // 2  # each 40 MB block faulted its ~10,000 pages in anew
    assert kept < fresh / 10
