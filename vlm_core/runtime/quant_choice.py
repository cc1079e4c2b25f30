"""Which weight format a load uses: `--quant none|int8|int4` as given, or `auto`: the first of none, int8, int4
whose weights fit the device's memory with headroom, with the reason in words (for bench and the status bar).

The speed side of the choice, measured (README "Quantized weights"): torch's int8/int4 kernels are vectorized for
bf16 inputs only. Where bf16 is native (CUDA, AVX512-BF16, AMX) int8 and int4 read half and a quarter of bf16's
bytes per token. On a CPU without it the model computes in float32 and the kernels get bf16 copies of their inputs:
measured on the 3B (2-core AVX2 EPYC), int8 and int4 take 0.38x and 0.41x float32's peak memory, decode 1.2x faster
and reach the first token 1.4-1.6x later (before prefills dequantized tiles): a memory saving more than a speed-up.
With native bf16 on the CPU (2-core Xeon with AMX, bf16 baseline): int8 decodes about 1.45x faster and reaches the
first token about 1.5x later, int4 about 2.1x faster and 2.5x later (prefill dequantizes every weight).
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
        return (f"the CPU has no native bfloat16 ({found}): {scheme} saves memory; decoding is about 1.2x "
                "float32's speed and the first token up to 1.6x slower")
    if device.type == "cpu":
        faster, later = ("1.45x", "1.5x") if scheme == "int8" else ("2.1x", "2.5x")
        return (f"{scheme} kernels with bfloat16 activations: decoding about {faster} bfloat16's speed on a 2-core "
                f"CPU, the first token about {later} later")
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
