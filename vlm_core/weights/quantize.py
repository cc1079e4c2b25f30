"""Loading a model with int8 or int4 decoder weights (model/quant.py): from the packed cache when it matches its
source, else by quantizing the bf16 checkpoint one tensor at a time and writing the cache for next time.

Peak memory while quantizing: the final packed model and a few MB: each tensor is read a few rows at a time into one
small buffer and quantized into its slice of the packed buffers. The float parts (SigLIP, projector, norms) go into
the cache in the checkpoint's own dtype and are cast to the activation dtype after loading, one at a time, so the
cache does not depend on the dtype chosen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from ..errors import DeviceError
from ..model.config import PaliGemmaConfig
from ..model.paligemma import PaliGemma
from ..model.quant import Int4Linear, Int8Embedding, Int8Linear, quantize_int4, quantize_int8, swap_in
from . import quantize_cache
from .head import read_head
from .heap import release_free_memory
from .layout import checkpoint_files
from .loader import TensorEntry, _read_into, _skip_init, fused_parts, plan_load
from .quantize_pack import (LAYOUT_NAMES, PORTABLE, cpu_layout, in_layout, packer_for, to_layout, to_portable,
                            unpacker_for)

log = logging.getLogger(__name__)
# Elements quantized at a time (whole rows): 4 MB of float32 temporaries. Above glibc's mmap threshold (32 MB) every
# temporary is a fresh mapping the kernel must zero page by page and unmap again; this size stays on the reused heap.
# Measured on the 3B's gate/up (9216 x 2304, 2-core EPYC): whole tensor 225 ms (316 ms of it system time), in
# chunks of this size 61 ms.
_CHUNK_ELEMENTS = 1 << 20


def check_quant(scheme: str, device: torch.device, dtype: torch.dtype) -> None:
    """A one-line DeviceError where `scheme` cannot run on `device` in `dtype`, saying what to use instead."""
    if scheme == "none":
        return
    if scheme not in ("int8", "int4"):
        raise DeviceError(f"unknown quantization {scheme!r}: use none, int8 or int4")
    if dtype == torch.float16:
        raise DeviceError(f"{scheme} weights run with bfloat16 or float32 activations, not float16: "
                          "use --dtype bfloat16, float32 or auto")
    if device.type == "mps":
        raise DeviceError(f"{scheme} weights have no kernel on MPS in this PyTorch: use --quant none, or --device cpu")
    if device.type == "cuda" and dtype != torch.bfloat16:
        raise DeviceError(f"{scheme} weights on CUDA need bfloat16 activations (torch's int8/int4 GPU kernels "
                          "take no other): use --dtype bfloat16 or auto")


def load_quantized(model_dir: Path, device: torch.device, dtype: torch.dtype, scheme: str,
                   cfg: PaliGemmaConfig | None = None,
                   progress: Callable[[int, int], None] | None = None) -> PaliGemma:
    check_quant(scheme, device, dtype)
    model, state, _, layout = packed_state(Path(model_dir), scheme, cfg, progress)
    try:
        for name, t in state.items():
            if t.is_floating_point() and not _is_quant_buffer(model, name):
                state[name] = t.to(device=device, dtype=dtype)  # replaced one at a time: one copy extra at most
            else:
                state[name] = t.to(device)
    except torch.OutOfMemoryError:
        state.clear()
        raise DeviceError(f"not enough memory on {device} for this model in {scheme}: choose int4, a smaller "
                          "model, or the CPU") from None
    model.load_state_dict(state, strict=True, assign=True)
    state.clear()  # the model holds the tensors now; each portable int4 copy must be freed once repacked
    pack, unpacker = packer_for(device), unpacker_for(device)
    native = device.type == "cpu" and layout == cpu_layout()
    for m in model.modules():
        if isinstance(m, Int4Linear):
            if in_layout(layout, m):
                if native:  # stored as this CPU's kernel wants it: no repack
                    m.prepare(lambda packed: packed, unpacker)
                    continue
                m.qweight = to_portable(m.qweight, layout)  # another CPU's layout, or a GPU: undo it exactly
            m.prepare(pack, unpacker)
            release_free_memory()  # the holes the repack's temporaries left (heap.py)
        elif isinstance(m, Int8Embedding):
            m.dtype = dtype  # what its lookups return
    return model.eval().requires_grad_(False)


def packed_state(model_dir: Path, scheme: str, cfg: PaliGemmaConfig | None = None,
                 progress: Callable[[int, int], None] | None = None) -> tuple[PaliGemma, dict, bool, str]:
    """(the meta model with quantized modules swapped in, its state dict on the CPU, whether the cache was
    (re)built, the layout its int4 weights are in): from the cache if it matches its source, else quantized from
    the checkpoint and cached. A new int4 cache holds this CPU's kernel layout where one is known (quantize_pack)."""
    cfg = cfg or PaliGemmaConfig.from_json_file(model_dir / "config.json")
    if not read_head(model_dir, cfg.text.tie_word_embeddings).tied:
        cfg = replace(cfg, text=replace(cfg.text, tie_word_embeddings=False))
    with torch.device("meta"), _skip_init():
        model = PaliGemma(cfg)
    plan = plan_load(model_dir, model)  # checks the checkpoint against the float model first
    fused = fused_parts(model)
    with torch.device("meta"):
        swap_in(model, scheme, torch.float32)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    files, _ = checkpoint_files(model_dir)
    metadata = {"format": quantize_cache.FORMAT, "scheme": scheme,
                "source": quantize_cache.source_identity([*files, model_dir / "config.json"])}
    path = quantize_cache.cache_path(model_dir, scheme)
    try:
        found: dict = {}
        state = quantize_cache.read(path, metadata, shapes, progress, found)
        layout = found.get("int4_layout", PORTABLE)
        if layout != PORTABLE and layout not in LAYOUT_NAMES:
            raise quantize_cache.CacheMismatch(f"its int4 layout {layout!r} is not one this version knows")
        log.info("loaded %s weights from %s", scheme, path)
        return model, state, False, layout
    except quantize_cache.CacheMismatch as why:
        if path.exists():
            log.warning("rebuilding the %s cache %s: %s", scheme, path, why)
    state = quantize(model, plan, fused, progress)
    layout = (cpu_layout() or PORTABLE) if scheme == "int4" else PORTABLE
    if layout != PORTABLE:
        for name, m in model.named_modules():
            if isinstance(m, Int4Linear) and in_layout(layout, m):
                state[f"{name}.qweight"] = to_layout(state[f"{name}.qweight"], layout)
    try:
        t0 = time.perf_counter()
        quantize_cache.write(path, state, {**metadata, "int4_layout": layout})
        log.info("wrote %s (%.1f s)", path, time.perf_counter() - t0)
    except OSError as e:  # a read-only models folder: run quantized anyway, without a cache
        log.warning("could not write the %s cache %s (%s); the next load quantizes again", scheme, path, e)
    return model, state, True, layout


def _is_quant_buffer(model: torch.nn.Module, name: str) -> bool:
    owner = model.get_submodule(name.rpartition(".")[0])
    return isinstance(owner, (Int8Linear, Int4Linear, Int8Embedding))


def quantize(model: PaliGemma, plan: dict, fused: dict, progress=None) -> dict[str, torch.Tensor]:
    """Read every tensor of `plan` once and return the state dict of the swapped-in `model` (quantized buffers,
    float tensors in the checkpoint's dtype)."""
    t0 = time.perf_counter()
    state: dict[str, torch.Tensor] = {}
    target: dict[str, tuple[torch.nn.Module, str, int]] = {}  # checkpoint name -> (quant module, its name, row)
    for name, module in model.named_modules():
        if isinstance(module, (Int8Linear, Int4Linear, Int8Embedding)):
            for buf, t in module.named_buffers(recurse=False):
                state[f"{name}.{buf}"] = torch.empty(t.shape, dtype=t.dtype)
            row = 0
            for part, rows in fused.get(f"{name}.weight", [(f"{name}.weight", None)]):
                target[part] = (module, name, row)
                row += rows or 0
    by_file: dict[Path, list] = {}
    for name, entry in plan.items():
        by_file.setdefault(entry.file, []).append((name, entry))
    threads = torch.get_num_threads()
    try:
        # One thread: each chunk's ops last about a millisecond, and between them the other OpenMP threads spin; on a
        # busy machine that spinning took the CPU from the work (3B int8, 2 cores at load 5: 90 s with two threads,
        # 45 s with one, and 7 s of CPU time for the arithmetic).
        torch.set_num_threads(1)
        _read_and_quantize(state, target, by_file, plan, progress)
    finally:
        torch.set_num_threads(threads)
    log.info("quantized %d tensors in %.1f s", len(plan), time.perf_counter() - t0)
    return state


def _read_and_quantize(state: dict, target: dict, by_file: dict, plan: dict, progress) -> None:
    total, done = sum(e.nbytes for e in plan.values()), 0
    for file, items in by_file.items():
        with open(file, "rb", buffering=0) as f:
            for name, entry in sorted(items, key=lambda it: it[1].offset):
                if name in target:
                    module, mname, row = target[name]
                    _quantize_into(state, module, mname, row, f, entry)
                else:
                    state[name] = _read_into(f, entry)
                done += entry.nbytes
                if progress is not None:
                    progress(done, total)


def _quantize_into(state: dict, module, name: str, row: int, f, entry: TensorEntry) -> None:
    """Read `entry` a few rows at a time into one small buffer and quantize them into its rows of the packed
    buffers (from `row` on): the whole source tensor is never held (the 3B's embedding is 1.2 GB in bf16)."""
    rows, width = entry.shape
    step = max(1, _CHUNK_ELEMENTS // width)
    row_bytes = entry.nbytes // rows
    buf = torch.empty((min(step, rows), width), dtype=entry.dtype)
    for first in range(0, rows, step):
        n = min(step, rows - first)
        chunk = _read_into(f, replace(entry, shape=(n, width), offset=entry.offset + first * row_bytes,
                                      nbytes=n * row_bytes), buf[:n])
        i, end = row + first, row + first + n
        if isinstance(module, Int4Linear):
            q, scale, mid = quantize_int4(chunk, module.group)
            state[f"{name}.mid"][i:end] = mid
        else:
            q, scale = quantize_int8(chunk)
        state[f"{name}.qweight"][i:end] = q
        state[f"{name}.scale"][i:end] = scale
