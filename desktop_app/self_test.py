"""`paligemma-desktop --self-test [MODEL]`: load a model, answer one prompt about a shipped picture, print the answer
and timings. The way to check an installed bundle on a machine without a screen; no Qt involved."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .assets import asset


def run_self_test(model: str | None, device: str = "auto", dtype: str = "auto") -> int:
    t_start = time.perf_counter()
    from vlm_core import VlmError
    from vlm_core.weights import hub
    from vlm_core.weights.catalog import DEFAULT_REPO
    from vlm_core.runtime.engine import Engine
    from vlm_core.runtime.generate import SamplingParams

    try:
        folder = hub.resolve_model(model) if model else hub.find_installed(DEFAULT_REPO)
        if folder is None:
            print(f"self-test: no model given and {DEFAULT_REPO} is not installed; pass a model folder or repo id",
                  file=sys.stderr)
            return 1
        t0 = time.perf_counter()
        engine = Engine.load(Path(folder), device=device, dtype=dtype)
        load_s = time.perf_counter() - t0
        result = engine.generate(asset("self_test.png"), "caption en", SamplingParams(max_new_tokens=24))
    except VlmError as e:
        print(f"self-test failed: {e}", file=sys.stderr)
        return 1
    s = result.stats
    print(f"model: {engine.name} on {engine.device_description()} ({str(engine.dtype).removeprefix('torch.')})")
    print(f"answer: {result.text!r}")
    print(f"load {load_s:.2f} s · first token {s.ttft_s:.3f} s · {s.generated_tokens} tokens · "
          f"{s.decode_tokens_per_s:.1f} tokens/s · stopped: {s.stop_reason} · total {time.perf_counter() - t_start:.2f} s")
    return 0
