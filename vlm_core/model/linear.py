"""Every product with a weight matrix goes through `linear`: F.linear, or on the CPU in float32, where the engine
chose it, oneDNN's matmul.

Why a second kernel: for float32, F.linear calls MKL, and MKL takes a generic path on AMD CPUs. Measured side by
side on a 2-core AMD EPYC (Zen 5, AVX-512), the 3B's decoder shapes:
  one row (a decode step, memory-bound):   MKL 15 GB/s of weights read, oneDNN 31 GB/s (gate/up, 18432 x 2304);
  4101 rows (an 896 px prefill):           MKL 165 GFLOP/s, oneDNN 330 GFLOP/s (every projection);
and with oneDNN held to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2, what an AVX2-only AMD CPU gets) still 1.8-2.4x at one row and
1.04-1.18x at 4101. bfloat16 already goes to oneDNN through F.linear (same kernel, identical bits), so only float32
changes. On Intel CPUs MKL is Intel's own and stays the default. Results differ from MKL's by float32 rounding
(summation order, ~1e-6 relative), as any two BLAS libraries do; the parity tests hold on both.

`torch.ops.mkldnn._linear_pointwise` is the op PyTorch's own CPU compiler emits for a linear layer. It is not
public API, so `use_onednn_fp32` probes it once against F.linear and keeps F.linear if it is missing or wrong.
It has no autograd formula; this model runs without gradients, and with them enabled F.linear is used.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

_onednn_fp32 = False  # process-wide, like torch.set_num_threads: set by the engine from the CPU it runs on


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias), through oneDNN for float32 on the CPU when `use_onednn_fp32(True)` took."""
    if _onednn_fp32 and x.dtype == torch.float32 and x.device.type == "cpu" and not torch.is_grad_enabled():
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def use_onednn_fp32(wanted: bool) -> bool:
    """Route float32 CPU products through oneDNN (`wanted`) or MKL. Returns whether oneDNN is in use: False when
    it was not wanted, or this PyTorch has no working oneDNN linear (then one log line says why)."""
    global _onednn_fp32
    _onednn_fp32 = wanted and _onednn_works()
    return _onednn_fp32


def _onednn_works() -> bool:
    if not torch.backends.mkldnn.is_available():
        log.info("oneDNN is not in this PyTorch build: float32 matmuls stay on the default BLAS")
        return False
    try:
        with torch.no_grad():
            gen = torch.Generator().manual_seed(0)
            x, w, b = (torch.randn(shape, generator=gen) for shape in ((2, 3, 40), (24, 40), (24,)))
            got = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
            ok = got.shape == (2, 3, 24) and torch.allclose(got, F.linear(x, w, b), atol=1e-4, rtol=1e-4)
    except (AttributeError, RuntimeError) as e:  # op missing or refusing these inputs
        log.info("oneDNN linear unavailable (%s): float32 matmuls stay on the default BLAS", e)
        return False
    if not ok:
        log.warning("oneDNN linear disagrees with F.linear here: float32 matmuls stay on the default BLAS")
    return ok


class Linear(nn.Linear):
    """nn.Linear (same parameters, names and state dict) whose product is `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)

    def rows(self, x: torch.Tensor, begin: int, end: int | None = None) -> torch.Tensor:
        """The product with output rows begin:end only (row slices of the weight are views: nothing is copied)."""
        return linear(x, self.weight[begin:end], None if self.bias is None else self.bias[begin:end])
