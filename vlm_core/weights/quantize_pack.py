"""Repacking int4 weights from the cache's portable format (uint8[N, K/2], even k in the low nibble) into the
layout of the kernel that will run them.

CPU: torch's `_convert_weight_to_int4pack_for_cpu` takes int32[N, K] and interleaves rows in blocks whose size
depends on the vector ISA torch picked at run time (64 rows for AVX-512, 32 for AVX2 and the scalar build). It is a
scalar loop: 1.6 s for the 3B's gate/up on a 2-core EPYC, about two minutes for the whole model at every load. The
same permutation in tensor ops takes a few milliseconds, so `packer_for` tries each known layout against torch's
own converter on a probe once per process, uses the one that matches, and falls back to torch's converter when
none does (a future torch with a new layout is then slow, never wrong). A layer whose rows are not a whole number
of blocks also goes through torch's converter.

The int4 cache stores the layout of the CPU that built it (its metadata names it), so a CPU load of the same kind
skips the repack (2.7 s of a 4.5 s 3B int4 load on a 2-core Xeon); elsewhere `to_portable` undoes it exactly and
the layer is packed for its device as usual. Only layers `in_layout` are stored so; the rest stay portable.

CUDA: `_convert_weight_to_int4pack` takes the same uint8[N, K/2] with even k in the high nibble (tinygemm's order,
as gpt-fast and torchao build it). Not exercised here: this machine has no GPU.
"""

from __future__ import annotations

import functools
import logging

import torch

from ..model.quant import pack_int4, unpack_int4

log = logging.getLogger(__name__)


def _blocks64(v: torch.Tensor) -> torch.Tensor:  # AVX-512: rows d and d+32 share a byte, then d+16 and d+48
    n, k = v.shape
    b = v.view(n // 64, 4, 16, k)
    pairs = torch.stack((b[:, 0] | (b[:, 2] << 4), b[:, 1] | (b[:, 3] << 4)), dim=1)  # [NB, 2, 16, K]
    return pairs.permute(0, 3, 1, 2).reshape(n, k // 2)


def _blocks32(v: torch.Tensor) -> torch.Tensor:  # AVX2: rows d and d+16 share a byte
    n, k = v.shape
    b = v.view(n // 32, 2, 16, k)
    return (b[:, 0] | (b[:, 1] << 4)).permute(0, 2, 1).reshape(n, k // 2)


def _adjacent32(v: torch.Tensor) -> torch.Tensor:  # scalar build: rows 2i and 2i+1 share a byte
    n, k = v.shape
    b = v.view(n // 32, 16, 2, k)
    return (b[:, :, 0] | (b[:, :, 1] << 4)).permute(0, 2, 1).reshape(n, k // 2)


def _unblocks64(p: torch.Tensor) -> torch.Tensor:
    n, k = p.shape[0], p.shape[1] * 2
    pairs = p.view(n // 64, k, 2, 16).permute(0, 2, 3, 1)  # [NB, 2, 16, K]
    return torch.stack((pairs[:, 0] & 15, pairs[:, 1] & 15, pairs[:, 0] >> 4, pairs[:, 1] >> 4), dim=1).reshape(n, k)


def _unblocks32(p: torch.Tensor) -> torch.Tensor:
    n, k = p.shape[0], p.shape[1] * 2
    b = p.view(n // 32, k, 16).permute(0, 2, 1)  # [NB, 16, K]
    return torch.stack((b & 15, b >> 4), dim=1).reshape(n, k)


def _unadjacent32(p: torch.Tensor) -> torch.Tensor:
    n, k = p.shape[0], p.shape[1] * 2
    b = p.view(n // 32, k, 16).permute(0, 2, 1)  # [NB, 16, K]
    return torch.stack((b & 15, b >> 4), dim=2).reshape(n, k)


# Read as bytes [blocks, K, B/2], every layout holds each block of B rows transposed: byte [kk, j] carries column
# kk of two rows. AVX-512 and AVX2 put rows j and j + B/2 in the low and high nibble ("halves"); the scalar
# build rows 2j and 2j + 1 ("pairs"). So a tile can be unpacked straight into W.T, block by block, with
# contiguous reads: what a long product needs (Int4Linear), without the transposing `_un*` above.
def _transposed_halves(p: torch.Tensor, out: torch.Tensor) -> None:
    nb, k, half = out.shape[0], out.shape[1], out.shape[2] // 2
    pb = p.view(nb, k, half)
    torch.cat((pb & 15, pb >> 4), dim=-1, out=out)


def _transposed_pairs(p: torch.Tensor, out: torch.Tensor) -> None:
    nb, k, half = out.shape[0], out.shape[1], out.shape[2] // 2
    pb = p.view(nb, k, half)
    torch.stack((pb & 15, pb >> 4), dim=-1, out=out.view(nb, k, half, 2))


# name: (rows B per block, values uint8[N, K] -> kernel layout, its inverse on whole blocks of rows,
#        (whole blocks of the layout, uint8 out[blocks, K, B]) -> out[b, kk, j] = row b*B + j's column kk)
_LAYOUTS = {"avx512": (64, _blocks64, _unblocks64, _transposed_halves),
            "avx2": (32, _blocks32, _unblocks32, _transposed_halves),
            "scalar": (32, _adjacent32, _unadjacent32, _transposed_pairs)}


def _torch_cpu_pack(packed: torch.Tensor) -> torch.Tensor:
    return torch._convert_weight_to_int4pack_for_cpu(unpack_int4(packed).to(torch.int32), 1)


@functools.cache
def cpu_layout() -> str | None:
    """The name of the layout torch's CPU converter writes in this process, or None if no known one matches."""
    gen = torch.Generator().manual_seed(0)
    values = torch.randint(0, 16, (128, 64), dtype=torch.uint8, generator=gen)
    want = torch._convert_weight_to_int4pack_for_cpu(values.to(torch.int32), 1)
    for name, (block, fn, inverse, transposed) in _LAYOUTS.items():
        got = fn(values)
        if got.shape == want.shape and torch.equal(got, want) and torch.equal(inverse(got), values):
            out = torch.empty(values.shape[0] // block, values.shape[1], block, dtype=torch.uint8)
            transposed(got, out)
            if torch.equal(out.permute(0, 2, 1).reshape(values.shape), values):
                return name
    log.warning("torch's int4 CPU layout is not one this version knows: repacking with torch's (slow) converter")
    return None


def pack_cpu(packed: torch.Tensor) -> torch.Tensor:
    layout = cpu_layout()
    if layout is not None and packed.shape[0] % _LAYOUTS[layout][0] == 0:
        return to_layout(packed, layout)
    return _torch_cpu_pack(packed)


def cpu_unpacker(rows: int):
    """(block, fn) for a layer of `rows` output rows: `fn(packed_tile, out)` writes whole `block`s of rows of
    `pack_cpu`'s output, transposed, into out[blocks, K, block] (see _LAYOUTS); None where the layout is unknown
    or the layer went through torch's converter (a partial block). What a long CPU prefill dequantizes from
    (Int4Linear)."""
    layout = cpu_layout()
    if layout is None or rows % _LAYOUTS[layout][0]:
        return None
    block, _, _, transposed = _LAYOUTS[layout]
    return block, transposed


def pack_cuda(packed: torch.Tensor) -> torch.Tensor:
    k = packed.shape[1] * 2
    inner = next(t for t in (8, 4, 2) if k % (t * 16) == 0)
    return torch._convert_weight_to_int4pack(((packed & 15) << 4) | (packed >> 4), inner)


def packer_for(device: torch.device):
    return pack_cuda if device.type == "cuda" else pack_cpu


PORTABLE = "portable"  # the int4 cache's layout name for uint8[N, K/2], even k in the low nibble
LAYOUT_NAMES = tuple(_LAYOUTS)


def in_layout(layout: str, module) -> bool:
    """Whether an int4 layer is stored in the CPU kernel layout `layout` (else portable): the layers the kernel
    takes, with whole blocks of rows (the same rule when writing and reading the cache)."""
    return layout in _LAYOUTS and module.kernel_ok and module.out_features % _LAYOUTS[layout][0] == 0


def to_layout(portable: torch.Tensor, layout: str) -> torch.Tensor:
    return _LAYOUTS[layout][1](unpack_int4(portable))


def to_portable(packed: torch.Tensor, layout: str) -> torch.Tensor:
    return pack_int4(_LAYOUTS[layout][2](packed))


def unpacker_for(device: torch.device):
    """rows -> `cpu_unpacker(rows)` on the CPU; None elsewhere (other devices always run the kernel)."""
    return cpu_unpacker if device.type == "cpu" else None
