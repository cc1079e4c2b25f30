"""What this CPU does fast, for the engine's CPU defaults: whether it has native bfloat16, and its physical cores.

bfloat16 halves the bytes a decode step reads, but only CPUs with bf16 instructions (x86: AVX512-BF16 or AMX;
Arm: the BF16 extension) compute it natively. Elsewhere PyTorch emulates it through float32 conversions and prefill
runs about 5x slower than in float32 (measured on an AVX2 machine: 84 s against 15 s for the 3B at 224 px), so the
engine's `auto` picks bfloat16 only where this module finds native support.

Threads: one per physical core. SMT siblings share a core's vector units, so matmul-bound work gains nothing from
them and loses to contention; in a container the affinity mask, not the host's core count, is what we may use.
"""

from __future__ import annotations

import os
import platform
import subprocess

import torch

_DEFAULT_THREADS = torch.get_num_threads()  # PyTorch's own default (physical cores on most builds), read at import


def _proc_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _field(cpuinfo: str, *keys: str) -> str:
    """The value of the first /proc/cpuinfo line whose key is one of `keys` ("" if none)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value.strip()
    return ""


def _flags(cpuinfo: str) -> set[str]:
    return set(_field(cpuinfo, "flags", "Features").split())  # x86, Arm


def native_bf16(cpuinfo: str | None = None) -> tuple[bool, str]:
    """(True if the CPU computes bfloat16 natively, what was found). With `cpuinfo` None this machine is probed
    (its CPU flags and torch's own CPU probe); given a /proc/cpuinfo text, only its flags are read."""
    probe = cpuinfo is None
    flags = _flags(_proc_cpuinfo() if probe else cpuinfo)
    if "amx_bf16" in flags or (probe and _torch_probe("_is_amx_tile_supported")):
        return True, "AMX"
    if "avx512_bf16" in flags or (probe and _torch_probe("_is_avx512_bf16_supported")):
        return True, "AVX512-BF16"
    if "bf16" in flags or (probe and _mac_has_bf16()):  # Arm's Features line says plain "bf16"
        return True, "Arm BF16"
    what = torch.backends.cpu.get_cpu_capability() if probe else ("AVX2" if "avx2" in flags else "this CPU")
    return False, f"{what} without bf16 instructions"


def _torch_probe(name: str) -> bool:
    fn = getattr(getattr(torch, "cpu", None), name, None)
    try:
        return bool(fn()) if fn is not None else False
    except RuntimeError:
        return False


def _mac_has_bf16() -> bool:
    if platform.system() != "Darwin":
        return False
    try:
        out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, timeout=2)
        return out.stdout.strip() == "1"
    except (OSError, subprocess.SubprocessError):
        return False


def physical_cores(cpuinfo: str | None = None, allowed: set[int] | None = None) -> int:
    """Physical cores among the CPUs this process may run on."""
    if allowed is None and hasattr(os, "sched_getaffinity"):
        allowed = os.sched_getaffinity(0)
    cpuinfo = _proc_cpuinfo() if cpuinfo is None else cpuinfo
    cores = set()
    processor = physical = None
    for line in cpuinfo.splitlines() + [""]:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            processor = int(value)
        elif key == "physical id":
            physical = value
        elif key == "core id" and processor is not None and (allowed is None or processor in allowed):
            cores.add((physical, value))
        elif not line.strip():
            processor = physical = None
    if cores:
        return len(cores)
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.physicalcpu"], capture_output=True, text=True, timeout=2)
            return max(1, int(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    # No topology (Windows, some VMs): PyTorch's default, bounded by what we may use.
    return max(1, min(_DEFAULT_THREADS, len(allowed) if allowed else _DEFAULT_THREADS))


def onednn_fp32(cpuinfo: str | None = None, env: dict[str, str] | None = None) -> tuple[bool, str]:
    """(True if float32 matmuls should go through oneDNN rather than MKL, why); model/linear.py has the
    measurements. MKL takes a generic path on AMD CPUs; on Intel it is Intel's own. VLM_CPU_MATMUL=onednn or mkl
    overrides the choice (to compare the two on a machine)."""
    forced = (os.environ if env is None else env).get("VLM_CPU_MATMUL", "").strip().lower()
    if forced in ("onednn", "mkl"):
        return forced == "onednn", f"float32 matmuls in {'oneDNN' if forced == 'onednn' else 'MKL'} (VLM_CPU_MATMUL)"
    if _vendor(_proc_cpuinfo() if cpuinfo is None else cpuinfo) == "AuthenticAMD":
        return True, "float32 matmuls in oneDNN (MKL's path for AMD CPUs is about 2x slower)"
    return False, "float32 matmuls in MKL"


def _vendor(cpuinfo: str) -> str:
    if vendor := _field(cpuinfo, "vendor_id"):
        return vendor
    if platform.system() == "Windows" and "AuthenticAMD" in platform.processor():  # "AMD64 Family 25 ..., AuthenticAMD"
        return "AuthenticAMD"
    return ""
