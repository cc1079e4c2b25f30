"""CUDA graphs for the static decode step: capture once, replay per token.

Eager PyTorch decoding a 2B-class model on a GPU spends most of a step launching ~1000 small kernels; a graph
launches them all with one call. `torch.cuda.CUDAGraph` needs no Triton or compiler, so this works on Windows and
inside the frozen app. The captured function must keep static shapes and addresses and never sync with the host:
the decode step in decode_step.py is written for that.

If capture fails (an op that cannot be captured, a driver that refuses, no CUDA at all) the step runs eagerly and
one line goes to the log; generation is unchanged, only slower.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

_WARMUP = 2  # eager runs on a side stream before capture: lazy inits (cuBLAS handles, workspaces) happen outside


def capture(body: Callable[[], torch.Tensor], device: torch.device) -> Callable[[], torch.Tensor]:
    """Capture `body` (no arguments; reads and writes only tensors that outlive the graph) and return a function
    that replays it and returns its output tensor (the same static buffer on every call).

    The warm-up runs `body` for real, so whatever state it advances (a position, cache slots) must be reset by the
    caller before use; the decode step's prefill does that.
    """
    if device.type != "cuda":
        raise RuntimeError(f"CUDA graphs need a CUDA device, not {device.type}")
    current = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        for _ in range(_WARMUP):
            body()
    current.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: another thread's unrelated CUDA call (the GUI never makes one, but a plugin might) cannot
    # invalidate this capture.
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        out = body()

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    replay.graph = graph  # keeps the graph (and its memory pool) alive as long as the replay function
    return replay


def capture_or_eager(body: Callable[[], torch.Tensor],
                     device: torch.device) -> tuple[Callable[[], torch.Tensor], bool]:
    """(replay, True) if `body` could be captured, else (body, False) after one warning in the log."""
    try:
        return capture(body, device), True
    except torch.OutOfMemoryError:
        raise  # not a capture problem: the caller frees memory and says so, and graphs stay on for next time
    except Exception as e:  # noqa: BLE001 - any other capture failure means the same thing: run eagerly
        log.warning("CUDA graph capture failed (%s: %s); decoding without graphs", type(e).__name__, e)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # let a half-done capture's work finish before the eager step runs
        return body, False
