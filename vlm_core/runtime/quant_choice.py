"""Which weight format a load uses: `--quant none|int8|int4` as given, or `auto`: the first of none, int8, int4
whose weights fit the device's memory with headroom, with the reason in words (for bench and the status bar).

The speed side of the choice, measured (README "Quantized weights"): torch's int8/int4 kernels are vectorized for
bf16 inputs only. Where bf16 is native (CUDA, AVX512-BF16, AMX) int8 and int4 read half and a quarter of bf16's
bytes per token. On a CPU without it the model computes in float32 and the kernels get bf16 copies of their inputs:
int8 still halves the bytes and decodes faster than float32 weights, int4 saves memory but decodes slower.
"""

from __future__ import annotations

import os

import torch

from ..model.config import PaliGemmaConfig
from ..model.params import scheme_bytes
from . import cpu_caps

SCHEMES = ("none", "int8", "int4")
HEADROOM = 0.7  # weights may take this share of the device's memory: the rest is caches, activations, other programs


def device_memory(device: torch.device) -> int:
    """Total memory of `device` in bytes (the CPU: physical RAM), 0 where unknown."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def speed_note(scheme: str, device: torch.device, dtype: torch.dtype) -> str:
    if scheme == "none":
        return ""
    if device.type == "cpu" and dtype == torch.float32:
        _, found = cpu_caps.native_bf16()
        if scheme == "int8":
            return (f"the CPU has no native bfloat16 ({found}): int8 products take bf16 copies of their inputs, "
                    "decode is faster than float32 weights, prefill a little slower")
        return (f"the CPU has no native bfloat16 ({found}): int4 saves memory but decodes about 2x slower "
                "than float32 weights")
    return f"{scheme} kernels with bfloat16 activations"


def choose_quant(name: str, device: torch.device, dtype: torch.dtype, cfg: PaliGemmaConfig,
                 memory: int | None = None) -> tuple[str, str]:
    """(scheme, why) for a --quant / Settings value; `memory` overrides the device's total (tests)."""
    if name not in ("auto", *SCHEMES):
        raise ValueError(f"Unknown quantization: {name}")
    float_bytes = torch.empty((), dtype=dtype).element_size()
    sizes = scheme_bytes(cfg, float_bytes)
    gib = 2 ** 30
    if name != "auto":
        why = f"{name} weights ({sizes[name] / gib:.1f} GiB): as chosen"
    else:
        memory = device_memory(device) if memory is None else memory
        budget = memory * HEADROOM
        name = next((s for s in SCHEMES if sizes[s] <= budget), "int4") if memory else "none"
        where = f"{memory / gib:.0f} GiB of {'GPU' if device.type == 'cuda' else 'RAM'}"
        if name == "none":
            why = f"unquantized weights ({sizes['none'] / gib:.1f} GiB) fit {where}"
        elif sizes[name] <= budget:
            why = (f"{name} weights ({sizes[name] / gib:.1f} GiB): unquantized ({sizes['none'] / gib:.1f} GiB) "
                   f"would not fit {where} with headroom")
        else:
            why = f"int4 weights ({sizes['int4'] / gib:.1f} GiB), the smallest; even they may not fit {where}"
    note = speed_note(name, device, dtype)
    return name, why + (f"; {note}" if note else "")
