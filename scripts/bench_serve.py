"""Benchmark the local API server: throughput of 1, 4 and 8 concurrent clients against one at a time, and what the
server adds per request over the engine's own time, in one run.

    PYTHONPATH=. python scripts/bench_serve.py [--model DIR] [--requests 16] [--max-tokens 32] [--runs 3]

Without --model it writes the medium toy (`make-toy --size medium`) to a temporary folder. The server runs as a
real subprocess on 127.0.0.1 (`python -m vlm_core serve --max-batch 8`); clients are threads posting to
/v1/chat/completions, each request about its own small image (no vision-feature cache hits), greedy, a fixed
number of new tokens. Overhead: one client, one 1 MP PNG (base64 in JSON, Ollama's /api/generate), the client's
wall time per request minus the engine time the server reports for that same request (vision tower, prefill,
decode): HTTP, JSON, base64, decoding and resizing the PNG, queueing and the response. Prints best and median of --runs; on a shared CPU, prefer the best.
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


def throughput(http: httpx.Client, url: str, bodies: list[bytes], clients: int, want_tokens: int) -> float:
    """Requests per second with `clients` threads sharing the requests."""
    def one(b: bytes):
        r = http.post(url + "/v1/chat/completions", content=b, timeout=600,
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
    model = args.model
    if model is None:
        model = Path(tempfile.mkdtemp(prefix="bench-serve-")) / "medium"
        subprocess.run([sys.executable, "-m", "vlm_core", "make-toy", str(model), "--size", "medium"], check=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL)
    bodies = [body(png(i, 256), args.max_tokens) for i in range(args.requests)]
    big = png(99, 1000)  # 1 MP

    # The engine's own time for a request is what the server itself measured for it (Ollama's prompt_eval_duration +
    # eval_duration: the vision tower, prefill and decode); what the client waited beyond that is the server's
    # overhead (HTTP, JSON, base64, decoding and resizing the 1 MP PNG, queueing, the response). Measured on the
    # same request, so the machine's load cannot land on one side only.
    proc, url = start_server(model)
    # One client for the run: httpx.post() would build a new client (and its TLS context, ~50 ms) per request.
    http = httpx.Client(limits=httpx.Limits(max_connections=16))
    try:
        big_body = json.dumps({"model": "", "prompt": "caption en", "images": [base64.b64encode(big).decode()],
                               "stream": False, "options": {"num_predict": 1}}).encode()
        overhead = []
        for i in range(args.runs * 5 + 1):
            t0 = time.perf_counter()
            r = http.post(url + "/api/generate", content=big_body, timeout=600)
            wall = time.perf_counter() - t0
            r.raise_for_status()
            engine_s = (r.json()["prompt_eval_duration"] + r.json()["eval_duration"]) / 1e9
            if i:  # the first one also runs the vision tower (later ones hit its feature cache, as a chat does)
                overhead.append(wall - engine_s)
        throughput(http, url, bodies[:8], 8, args.max_tokens)  # warm every batch size's first use
        results = {n: [] for n in (1, 4, 8)}
        for _ in range(args.runs):
            for n in results:
                results[n].append(throughput(http, url, bodies, n, args.max_tokens))
    finally:
        http.close()
        proc.terminate()
        proc.wait(30)

    print(f"model {model.name}, {args.requests} requests of {args.max_tokens} new tokens, {os.cpu_count()} CPUs, "
          f"{args.runs} runs (best / median)")
    one = max(results[1])
    for n, runs in results.items():
        print(f"  {n} client{'s' if n > 1 else ' '}: {max(runs):6.2f} / {statistics.median(runs):6.2f} req/s  "
              f"{max(runs) / one:4.2f}x / {statistics.median(runs) / statistics.median(results[1]):4.2f}x "
              "one at a time")
    print(f"  server overhead per request, 1 MP PNG: {min(overhead) * 1000:.1f} / "
          f"{statistics.median(overhead) * 1000:.1f} ms")
    parts = breakdown(big_body, model)
    for name, ms in parts.items():
        print(f"    of which {name}: {min(ms):.1f} / {statistics.median(ms):.1f} ms")
    image_ms = min(parts["PNG decode"]) + min(parts["resize and normalize"])
    print(f"  server overhead without the image's decode and resize (which the window and `generate` pay too): "
          f"{min(overhead) * 1000 - image_ms:.1f} ms (best)")
    return 0


def breakdown(body: bytes, model: Path, runs: int = 7) -> dict[str, list[float]]:
    """The image's share of the overhead, timed in this process on the same request body: what the server does to
    it before the engine sees it (ms, per run)."""
    sys.path.insert(0, str(ROOT))
    from vlm_core.runtime.image import load_image, preprocess
    from vlm_core.serve.images import b64_bytes

    size = json.loads((model / "preprocessor_config.json").read_text())["size"]["height"]
    steps = {"JSON": lambda: json.loads(body), "base64": lambda: b64_bytes(json.loads(body)["images"][0], "images")}
    data = b64_bytes(json.loads(body)["images"][0], "images")
    steps["PNG decode"] = lambda: load_image(data, min_size=size)
    img = load_image(data, min_size=size)
    steps["resize and normalize"] = lambda: preprocess(img, size)
    out = {name: [] for name in steps}
    for _ in range(runs):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            out[name].append((time.perf_counter() - t0) * 1000)
    out["base64"] = [b - j for b, j in zip(out["base64"], out["JSON"])]  # its step parses the JSON too
    return out


if __name__ == "__main__":
    sys.exit(main())
