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

Which product runs (measured on a 2-core AVX2 AMD EPYC, 3B gate/up 18432 x 2304; see README "Quantized weights"):
  torch's x86 kernels are vectorized for bf16 activations only (int8 at one row: 5 ms with bf16 inputs, 35 ms with
  float32; int4: 24 ms vs 139 ms). So a decode-sized product (few rows) always feeds the kernel bf16, rounding a
  float32 model's input to bf16 for that one product and returning float32. A prefill-sized float32 product
  (many rows) instead converts the int8 weight to float32 in output-row chunks and runs the float32 matmul
  (280 rows: 0.95 s, against 1.7 s through the bf16 kernel on a CPU that emulates bf16). int4 always uses the
  kernel where its shape allows. On a CPU or GPU with native bf16 the model runs in bf16 and every product is the
  kernel's.
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
_KERNEL_ROWS = 16  # float32 products with more rows than this dequantize instead (see the module docstring)
_CHUNK = 1 << 24  # dequantize at most this many weights at a time: bounds the float32 scratch to 64 MB


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
    q = q.view(n, k)
    return q[:, 0::2] | (q[:, 1::2] << 4), scale, mid


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8[N, K/2] -> uint8[N, K] of values 0..15."""
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
    if x.device.type == "mps" or (x.dtype == torch.float32 and x2.shape[0] > _KERNEL_ROWS):
        # Many rows: convert the int8 weight in output-row chunks and scale the product, not the weight
        # (scaling per output channel commutes with the matmul; it saves a pass over the chunk).
        step = max(1, _CHUNK // k)
        out = torch.cat([linear(x2, q[i:i + step].to(x.dtype)) * scale[i:i + step].to(x.dtype)
                         for i in range(0, q.shape[0], step)], dim=-1)
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

    @property
    def kernel_ok(self) -> bool:
        return self.group in _KERNEL_GROUPS and self.out_features % 16 == 0 and self.in_features % 2 == 0

    def prepare(self, pack) -> None:
        """Repack for the kernel with `pack(uint8[N, K/2]) -> kernel layout` and drop the portable copy; a shape
        the kernels refuse keeps the portable format and dequantizes."""
        if not self.kernel_ok or self.qweight.device.type == "mps":
            return
        self.packed = pack(self.qweight)
        self.scale_mid = torch.stack((self.scale.t(), self.mid.t()), dim=-1).contiguous()
        self.qweight = torch.empty(0, dtype=torch.uint8, device=self.qweight.device)  # freed; state is done

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, k = x.shape[:-1], x.shape[-1]
        x2 = x.reshape(-1, k)
        if self.packed is None:
            out = linear(x2, dequantize_int4(self.qweight, self.scale, self.mid, x.dtype))
        else:
            kd = kernel_input_dtype(x)
            mm = torch._weight_int4pack_mm_for_cpu if x.device.type == "cpu" else torch._weight_int4pack_mm
            out = mm(x2.to(kd), self.packed, self.group, self.scale_mid.to(kd)).to(x.dtype)
        return out.view(*lead, self.out_features)


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
