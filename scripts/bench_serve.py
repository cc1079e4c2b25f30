"""Benchmark the local API server: throughput of 1, 4 and 8 concurrent clients against one at a time, and what the
server adds per request over the engine's own time, in one run.

    PYTHONPATH=. python scripts/bench_serve.py [--model DIR] [--requests 16] [--max-tokens 32] [--runs 3]

Without --model it writes the medium toy (`make-toy --size medium`) to a temporary folder. The server runs as a
real subprocess on 127.0.0.1 (`python -m vlm_core serve --max-batch 8`); clients are threads posting to
/v1/chat/completions, each request about its own small image (no vision-feature cache hits), greedy, a fixed
number of new tokens. Overhead: one client, one 1 MP PNG (base64 in JSON), wall time per request minus
Engine.generate's time for the same prompt on the already-decoded image in this process (HTTP, JSON, base64,
decoding and resizing the PNG, scheduling). Prints best and median of --runs; on a shared CPU, prefer the best.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def png(seed: int, size: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    img = (np.stack([x, y, x + y], -1) * (255 / (2 * size)) + rng.normal(0, 12, (size, size, 3))).clip(0, 255)
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def body(image: bytes, max_tokens: int) -> bytes:
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    return json.dumps({"model": "", "max_tokens": max_tokens, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "caption en"}, {"type": "image_url", "image_url": {"url": url}}]}]}).encode()


def start_server(model: Path) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "vlm_core", "serve", "--model", str(model), "--port", "0",
                             "--device", "cpu", "--dtype", "float32", "--max-batch", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    m = re.search(r"http://[\d.]+:\d+", proc.stdout.readline())
    if m is None:
        proc.kill()
        sys.exit("the server did not start")
    return proc, m.group(0)


def throughput(url: str, bodies: list[bytes], clients: int, want_tokens: int) -> float:
    """Requests per second with `clients` threads sharing the requests."""
    def one(b: bytes):
        r = httpx.post(url + "/v1/chat/completions", content=b, timeout=600,
                       headers={"Content-Type": "application/json"})
        r.raise_for_status()
        assert r.json()["usage"]["completion_tokens"] == want_tokens, "a request ended early: tokens differ"

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, bodies))
    return len(bodies) / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from vlm_core.runtime.engine import Engine
    from vlm_core.runtime.generate import SamplingParams

    model = args.model
    if model is None:
        model = Path(tempfile.mkdtemp(prefix="bench-serve-")) / "medium"
        subprocess.run([sys.executable, "-m", "vlm_core", "make-toy", str(model), "--size", "medium"], check=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL)
    bodies = [body(png(i, 256), args.max_tokens) for i in range(args.requests)]
    big = png(99, 1000)  # 1 MP
    big_body = body(big, args.max_tokens)

    # The engine's own time, in this process, while the server is not running.
    engine = Engine.load(model, device="cpu", dtype="float32")
    prepared = engine.prepare_image(big)
    params = SamplingParams(max_new_tokens=args.max_tokens)
    engine.generate(prepared, "caption en", params)  # warm: vision features cached, as the server's will be
    engine_s = []
    for _ in range(args.runs * 3):
        t0 = time.perf_counter()
        engine.generate(prepared, "caption en", params)
        engine_s.append(time.perf_counter() - t0)
    del engine

    proc, url = start_server(model)
    try:
        throughput(url, bodies[:8], 8, args.max_tokens)  # warm every batch size's first use
        results = {n: [] for n in (1, 4, 8)}
        for _ in range(args.runs):
            for n in results:
                results[n].append(throughput(url, bodies, n, args.max_tokens))
        server_s = []
        httpx.post(url + "/v1/chat/completions", content=big_body, timeout=600,
                   headers={"Content-Type": "application/json"})
        for _ in range(args.runs * 3):
            t0 = time.perf_counter()
            httpx.post(url + "/v1/chat/completions", content=big_body, timeout=600,
                       headers={"Content-Type": "application/json"}).raise_for_status()
            server_s.append(time.perf_counter() - t0)
    finally:
        proc.terminate()
        proc.wait(30)

    print(f"model {model.name}, {args.requests} requests of {args.max_tokens} new tokens, {os.cpu_count()} CPUs, "
          f"{args.runs} runs (best / median)")
    one = max(results[1])
    for n, runs in results.items():
        print(f"  {n} client{'s' if n > 1 else ' '}: {max(runs):6.2f} / {statistics.median(runs):6.2f} req/s  "
              f"{max(runs) / one:4.2f}x / {statistics.median(runs) / statistics.median(results[1]):4.2f}x "
              "one at a time")
    over_best = (min(server_s) - min(engine_s)) * 1000
    over_med = (statistics.median(server_s) - statistics.median(engine_s)) * 1000
    print(f"  overhead per request, 1 MP PNG: {over_best:.1f} / {over_med:.1f} ms (server {min(server_s) * 1000:.0f}"
          f" ms, engine {min(engine_s) * 1000:.0f} ms best)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
