"""Weight-only int8 and int4 for the Gemma decoder: the layers, the number formats, and the swap on a meta model.

Axes: N output features (rows), K input features, G groups along K, V vocabulary, D width.

Formats (what the cache stores; portable across machines and devices):
  int8  q int8[N, K], scale bf16[N]; w = q * scale, symmetric per output channel (q in -127..127).
  int4  q uint8[N, K/2] (even k in the low nibble), scale, mid bf16[N, G]; w = (q - 8) * scale + mid, a min/max
        range per group of K/G inputs. `mid` is the zero point in the form torch's int4 kernels take, so the kernel
        and the float reference dequantize the same bf16 numbers.
  Scales and zero points are rounded to bf16 before q is computed, so dequantize() is exactly what a kernel sees.

Group size: the largest divisor of K up to 128 (the toy widths 72, 96 and 160 get 72, 96 and 80; every real
PaliGemma width gets 128). torch's CPU and CUDA int4 kernels take groups of 32/64/128/256 and N a multiple of 16;
a layer outside that runs by dequantizing, never fails.

Which product runs (3B gate/up 18432 x 2304; see README "Quantized weights"):
  torch's x86 kernels are vectorized for bf16 activations only (2-core AVX2 AMD EPYC, one row: int8 5 ms with bf16
  inputs, 35 ms with float32; int4 24 ms vs 139 ms). So a decode-sized product (few rows) always feeds the kernel
  bf16, rounding a float32 model's input to bf16 for that one product and returning float32.
  The kernels are made for few rows: their time grows with every row, while the CPU's own matmul (MKL/oneDNN, AMX
  where there is one) barely notices. A prefill-sized product on the CPU therefore dequantizes the weight a tile
  of output rows at a time and runs the float matmul on each tile. Measured on a 2-core Xeon with AMX, bf16 input,
  260 rows (a 224-px prefill): int8 kernel 135 ms, tiles 54 ms; int4 kernel 134 ms, tiles 95 ms; 1024 rows (448
  px): tiles 101 and 135 ms; at one row the kernels win (int8 and int4 1.1 ms, bf16 weights 2.9 ms). On the
  AVX2 EPYC with float32 input, 280 rows: int8 tiles 0.95 s against 1.7 s through the kernel. The thresholds
  below sit under those crossovers. int4 tiles are unpacked from the kernel's own layout (weights/quantize_pack.py),
  so no second copy of the weights is kept. CUDA always runs the kernel.
The tied embedding/head is int8 per row: a lookup dequantizes only the rows it reads; the head is an int8 product.
SigLIP and the projector stay in the activation dtype (0.43 B of the 3B's 3.03 B parameters, read once per image,
not per token: quantizing them would save memory but no decode time).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear import linear

SCHEMES = ("none", "int8", "int4")
MAX_GROUP = 128
_KERNEL_GROUPS = (32, 64, 128, 256)
_KERNEL_ROWS = 16  # float32 CPU products with more rows than this dequantize instead (see the module docstring)
_KERNEL_ROWS_BF16 = 128  # the same for bf16 CPU products (crossovers measured at about 80 rows for int8, 120 int4)
_TILE = 1 << 22  # weights per tile of a long product: one matmul each (1M-16M measured; 4M best)
_SCRATCH = 1 << 20  # int4 weights dequantized at once inside a tile (4 MB of float32; 256K-4M measured, within 15%)
# torch 2.13's AVX-512 `_weight_int8pack_mm` reads the input width in vectors of 16 with no tail: another width
# gives wrong numbers or a segfault (K = 40, 72, 100 on a Xeon with AMX; AVX2 and the scalar build handle tails).
# Those widths (the toys' 72) dequantize instead, on every CPU, so no machine depends on its build's tail handling.
_INT8_KERNEL_K = 16


def _dequantize_rows(x2: torch.Tensor) -> bool:
    """Whether a product of `x2` [rows, K] dequantizes tiles instead of running the kernel."""
    if x2.device.type == "mps":
        return True
    if x2.device.type != "cpu":
        return False
    return x2.shape[0] > (_KERNEL_ROWS if x2.dtype == torch.float32 else _KERNEL_ROWS_BF16)


def group_size(k: int, most: int = MAX_GROUP) -> int:
    """The largest divisor of `k` that is at most `most`."""
    return next(g for g in range(min(k, most), 0, -1) if k % g == 0)


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float[N, K] -> (int8[N, K], bf16[N])."""
    w = w.float()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-10).to(torch.bfloat16)
    q = torch.round(w / scale.float()[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def quantize_int4(w: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float[N, K] -> (uint8[N, K/2], scale bf16[N, G], mid bf16[N, G]); K even, divisible by `group`."""
    n, k = w.shape
    wg = w.float().view(n, k // group, group)
    lo, hi = wg.amin(-1), wg.amax(-1)
    scale = ((hi - lo) / 15).clamp(min=1e-10).to(torch.bfloat16)
    mid = (lo + 8 * scale.float()).to(torch.bfloat16)
    q = torch.round((wg - mid.float()[..., None]) / scale.float()[..., None]).add_(8).clamp_(0, 15).to(torch.uint8)
    return pack_int4(q.view(n, k)), scale, mid


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """uint8[N, K] of values 0..15 -> uint8[N, K/2] (even k in the low nibble): the portable format."""
    return values[:, 0::2] | (values[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8[N, K/2] -> uint8[N, K] of values 0..15 (pack_int4's inverse)."""
    return torch.stack((packed & 15, packed >> 4), dim=-1).view(packed.shape[0], -1)


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    return (q.to(torch.float32) * scale.float()[:, None]).to(dtype)


def dequantize_int4(packed: torch.Tensor, scale: torch.Tensor, mid: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    q = unpack_int4(packed).to(torch.float32)
    n, g = scale.shape
    w = (q.view(n, g, -1) - 8) * scale.float()[..., None] + mid.float()[..., None]
    return w.view(n, -1).to(dtype)


def kernel_input_dtype(x: torch.Tensor) -> torch.dtype:
    """bf16 for a float32 input on the CPU (the only vectorized kernel input there); the input's own otherwise."""
    return torch.bfloat16 if x.device.type == "cpu" and x.dtype == torch.float32 else x.dtype


class _QuantLinear(nn.Module):
    """Shared shape bookkeeping; `parts` and `split` as FusedLinear has them, when this replaces one."""

    def __init__(self, in_features: int, out_features: int, parts: tuple = ()):
        super().__init__()
        self.in_features, self.out_features, self.parts = in_features, out_features, parts

    def split(self, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return y.split([size for _, size in self.parts], dim=-1)

    def rows(self, x: torch.Tensor, begin: int, end: int | None = None) -> torch.Tensor:
        """The product with output rows begin:end only (Linear.rows' contract)."""
        return self(x)[..., begin:end]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class Int8Linear(_QuantLinear):
    def __init__(self, in_features: int, out_features: int, parts: tuple = ()):
        super().__init__(in_features, out_features, parts)
        self.register_buffer("qweight", torch.empty(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.empty(out_features, dtype=torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return int8_product(x, self.qweight, self.scale)

    def rows(self, x: torch.Tensor, begin: int, end: int | None = None) -> torch.Tensor:
        return int8_product(x, self.qweight[begin:end], self.scale[begin:end])  # row slices: contiguous views


def int8_product(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float[..., K] @ (q * scale).T -> float[..., N] in x's dtype."""
    lead, k = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, k)
    if _dequantize_rows(x2) or k % _INT8_KERNEL_K:
        # Many rows (or a width the kernel cannot take): dequantize the int8 weight in output-row tiles. In
        # float32, scale the product, not the weight (per output channel it commutes with the matmul and saves a
        # pass over the tile). In half precision scale the tile in float32 first, so the product is rounded once,
        # as the kernel's is, instead of once by the matmul and again by the scaling.
        step = max(1, _TILE // k)
        if x.dtype == torch.float32:
            tiles = (linear(x2, q[i:i + step].float()) * scale[i:i + step].float()
                     for i in range(0, q.shape[0], step))
        else:  # int8 x bf16 promotes to bf16 computed in float32 and rounded once: the float path in one pass
            tiles = (linear(x2, q[i:i + step] * scale[i:i + step, None].to(x.dtype))
                     for i in range(0, q.shape[0], step))
        out = torch.cat(list(tiles), dim=-1)
    else:
        kd = kernel_input_dtype(x)
        out = torch._weight_int8pack_mm(x2.to(kd), q, scale.to(kd)).to(x.dtype)
    return out.view(*lead, q.shape[0])


class Int4Linear(_QuantLinear):
    """Holds the portable format (qweight, scale, mid) until `prepare()` repacks it for the device's kernel."""

    def __init__(self, in_features: int, out_features: int, parts: tuple = ()):
        super().__init__(in_features, out_features, parts)
        self.group = group_size(in_features)
        g = in_features // self.group
        self.register_buffer("qweight", torch.empty(out_features, in_features // 2, dtype=torch.uint8))
        self.register_buffer("scale", torch.empty(out_features, g, dtype=torch.bfloat16))
        self.register_buffer("mid", torch.empty(out_features, g, dtype=torch.bfloat16))
        # The kernel's layout and its scales-and-zeros [G, N, 2], once prepared: buffers (so weight_bytes counts
        # them) that the state dict leaves out, since the cache keeps the portable format.
        self.register_buffer("packed", None, persistent=False)
        self.register_buffer("scale_mid", None, persistent=False)
        self._unpack = None  # (rows per block, kernel layout -> values), for dequantized tiles on the CPU

    @property
    def kernel_ok(self) -> bool:
        return self.group in _KERNEL_GROUPS and self.out_features % 16 == 0 and self.in_features % 2 == 0

    def prepare(self, pack, unpacker=None) -> None:
        """Repack for the kernel with `pack(uint8[N, K/2]) -> kernel layout` and drop the portable copy; a shape
        the kernels refuse keeps the portable format and dequantizes. `unpacker(N)` gives the inverse of `pack`
        (block, fn) where one exists, so long products can dequantize tiles of the packed weight."""
        if not self.kernel_ok or self.qweight.device.type == "mps":
            return
        self._unpack = unpacker(self.out_features) if unpacker is not None else None
        self.packed = pack(self.qweight)
        self.scale_mid = torch.stack((self.scale.t(), self.mid.t()), dim=-1).contiguous()
        self.qweight = torch.empty(0, dtype=torch.uint8, device=self.qweight.device)  # freed; state is done

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, k = x.shape[:-1], x.shape[-1]
        x2 = x.reshape(-1, k)
        if self.packed is None:
            out = linear(x2, dequantize_int4(self.qweight, self.scale, self.mid, x.dtype))
        elif self._unpack is not None and _dequantize_rows(x2):
            out = self._tiled_product(x2)
        else:
            kd = kernel_input_dtype(x)
            mm = torch._weight_int4pack_mm_for_cpu if x.device.type == "cpu" else torch._weight_int4pack_mm
            out = mm(x2.to(kd), self.packed, self.group, self.scale_mid.to(kd)).to(x.dtype)
        return out.view(*lead, self.out_features)

    def _tiled_product(self, x2: torch.Tensor) -> torch.Tensor:
        """x2 @ W.T with W dequantized from the kernel's layout a tile of whole row blocks at a time, in float32
        exactly as dequantize_int4 does, then rounded to x's dtype for the matmul. The layout holds each block
        transposed, so a tile is built as W.T [K, rows], read in order (no transposing gathers), a few blocks
        at a time. On a 2-core Xeon, 3B gate/up, 265 rows: about 80 ms, against 134 ms through the kernel; the
        dequantizing passes over memory are the cost (int4 TTFT stays about 3x bf16's there, int8 1.6x)."""
        block, unpack_t = self._unpack
        k, g = self.in_features, self.in_features // self.group
        step = max(block, _TILE // k // block * block)
        per = max(1, _SCRATCH // (k * block))  # blocks dequantized at once
        outs = []
        for i in range(0, self.out_features, step):
            rows = min(step, self.out_features - i)
            nb = rows // block
            wt = torch.empty(k, nb, block, dtype=x2.dtype)  # W.T of the tile, [K, rows]
            for b in range(0, nb, per):
                n = min(per, nb - b)
                first = i + b * block
                u = torch.empty(n, k, block, dtype=torch.uint8)  # u[c, kk, j]: row first + c*block + j, column kk
                unpack_t(self.packed[first:first + n * block], u)
                v = u.view(torch.int8).sub_(8).float()  # q - 8 on bytes, then one contiguous conversion
                sm = self.scale_mid[:, first:first + n * block].float().view(g, n, block, 2).permute(1, 0, 2, 3)
                v4 = v.view(n, g, self.group, block)
                torch.addcmul(sm[:, :, None, :, 1], v4, sm[:, :, None, :, 0], out=v4)  # (q-8)*scale is exact
                wt[:, b:b + n].copy_(v.permute(1, 0, 2))
            outs.append(torch.mm(x2, wt.view(k, rows)))
        return torch.cat(outs, dim=-1)


class Int8Embedding(nn.Module):
    """The tied embedding and head in int8 per row: `forward(ids)` dequantizes only the rows it reads;
    `project(h)` is the head's product. `dtype` is the activation dtype the lookup returns."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.register_buffer("qweight", torch.empty(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("scale", torch.empty(num_embeddings, dtype=torch.bfloat16))
        self.dtype = dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.qweight).to(torch.float32)  # [B, T, D]
        return (rows * self.scale.float()[ids][..., None]).to(self.dtype)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        return int8_product(h, self.qweight, self.scale)


def quantized_names(model: nn.Module) -> dict[str, nn.Module]:
    """{module name: module} of what a quantized load replaces: every Linear of the text decoder (fused QKV and
    gate/up, o, down, and an untied head), and its embedding."""
    from .linear import Linear

    return {name: m for name, m in model.named_modules()
            if name.startswith("text.") and (isinstance(m, Linear) or name == "text.embed_tokens")}


def swap_in(model: nn.Module, scheme: str, dtype: torch.dtype) -> None:
    """Replace `quantized_names(model)` in place by empty int8/int4 modules (build the model on the meta device
    first; the loader then assigns their buffers). The embedding and head are int8 under both schemes."""
    if scheme not in SCHEMES[1:]:
        raise ValueError(f"Unknown quantization scheme: {scheme}")
    for name, old in quantized_names(model).items():
        if name == "text.embed_tokens":
            new = Int8Embedding(old.num_embeddings, old.embedding_dim, dtype)
        else:
            cls = Int8Linear if scheme == "int8" or name == "text.lm_head" else Int4Linear
            new = cls(old.in_features, old.out_features, getattr(old, "parts", ()))
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, new)
