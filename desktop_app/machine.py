"""How much memory this machine has for a model, and whether a model fits: LM Studio's fits / tight / too large.

Torch-free and dependency-free: RAM from /proc/meminfo (Linux) or sysconf (other POSIX systems); GPU memory comes
from the engine worker once PyTorch has started (EngineWorker.devices), so the GUI never imports torch for it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

FITS, TIGHT, TOO_LARGE = "fits", "tight", "too large"
# Below this share of the memory the model leaves room for the OS, the app and other programs; above it, it may
# still run but swaps or pushes other programs out.
_COMFORTABLE = 0.8


def ram_bytes() -> int:
    """Total physical memory, 0 when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return _windows_ram()


def _windows_ram() -> int:
    if sys.platform != "win32":
        return 0
    import ctypes

    class MemoryStatus(ctypes.Structure):
        _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                    ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                    ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                    ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                    ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]

    status = MemoryStatus()
    status.dwLength = ctypes.sizeof(MemoryStatus)
    return status.ullTotalPhys if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)) else 0


def fit(needed: int, available: int) -> str:
    """fits: under 80% of the memory; tight: up to all of it; too large: more than there is. "" when unknown."""
    if available <= 0:
        return ""
    if needed <= _COMFORTABLE * available:
        return FITS
    return TIGHT if needed <= available else TOO_LARGE


def memory_target(devices: dict | None, device_setting: str) -> tuple[str, int]:
    """(what the model would run on, in words; its memory in bytes) for a device setting and a device report.
    Before the report arrives (PyTorch still starting), auto counts as the CPU's RAM."""
    gpu = (devices or {}).get("gpu") or {}
    if device_setting in ("auto", "cuda") and gpu.get("memory_bytes"):
        return gpu.get("name", "GPU"), int(gpu["memory_bytes"])
    if device_setting == "mps" or (device_setting == "auto" and "mps" in (devices or {}).get("present", ())):
        return "the Mac's unified memory", ram_bytes()  # MPS shares system memory
    return "RAM (CPU)", ram_bytes()


def memory_factor(devices: dict | None, where: str, dtype_setting: str) -> float:
    """What the precision costs relative to the catalogue's bfloat16 figures: 2 for float32, else 1. `auto` is
    what the worker reported for that device (CPUs with native bfloat16 use it; others use float32)."""
    device = "cpu" if where.startswith("RAM") else ("mps" if "unified" in where else "cuda")
    dtype = dtype_setting
    if dtype == "auto":
        dtype = ((devices or {}).get("auto_dtypes") or {}).get(device, "float32" if device == "cpu" else "bfloat16")
    return 2.0 if dtype == "float32" else 1.0
