"""`python -m vlm_core bench`: ours and (with --compare transformers) the reference, side by side, in one run.

Each implementation runs in its own child process so that its peak RSS is its own and neither warms the other's
caches. Both get the same model folder, the same image tensor and prompt ids, and generate exactly --new-tokens
greedy tokens (EOS ignored) after one short warm-up. Printed: load time, peak RSS (and its excess over the weight
bytes, the loader's promise), TTFT, decode tokens/s, and the ratios ours / reference.

transformers is imported only in the child that benchmarks it; it is a test/bench dependency, never the product's.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

from .errors import VlmError


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # no /proc (macOS, Windows): report peaks from process start instead
        return 0


def _peak_rss_bytes() -> int:
    # VmHWM is this process's own high-water mark; ru_maxrss would start at the parent's RSS after fork().
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _measure_ours(model: str, image: str, prompt: str, device: str, dtype: str, new_tokens: int) -> dict:
    import torch

    from .runtime.engine import Engine
    from .runtime.generate import SamplingParams

    torch.set_grad_enabled(False)
    rss_before = _rss_bytes()
    t0 = time.perf_counter()
    engine = Engine.load(model, device=device, dtype=dtype)
    load_s = time.perf_counter() - t0
    load_peak = _peak_rss_bytes() - rss_before
    prepared = engine.prepare_image(image)
    engine.generate(prepared, prompt, SamplingParams(max_new_tokens=4, ignore_eos=True))  # warm-up
    engine.free_memory()  # so the measured run pays for its vision tower, like the reference
    result = engine.generate(prepared, prompt, SamplingParams(max_new_tokens=new_tokens, ignore_eos=True))
    return {"load_s": load_s, "load_peak_rss": load_peak, "weight_bytes": engine.weight_bytes(),
            "peak_rss": _peak_rss_bytes(), "ttft_s": result.stats.ttft_s,
            "decode_tokens_per_s": result.stats.decode_tokens_per_s, "tokens": result.token_ids}


def _measure_transformers(model: str, image: str, prompt: str, device: str, dtype: str, new_tokens: int) -> dict:
    import torch
    from transformers import PaliGemmaForConditionalGeneration
    from transformers.generation.streamers import BaseStreamer

    from .runtime.engine import resolve_device, resolve_dtype
    from .runtime.image import load_image, preprocess
    from .runtime.tokenizer import Tokenizer

    torch.set_grad_enabled(False)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    rss_before = _rss_bytes()
    t0 = time.perf_counter()
    ref = PaliGemmaForConditionalGeneration.from_pretrained(model, dtype=dt, attn_implementation="eager").to(dev).eval()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    load_peak = _peak_rss_bytes() - rss_before

    # Same inputs as ours: our processor's pixels and ids (their equality with the reference's is tested).
    cfg = _config(model)
    prompt_ids = Tokenizer(f"{model}/tokenizer.model").prompt_ids(prompt, cfg.image_token_index, cfg.num_image_tokens)
    ids = torch.tensor([prompt_ids], device=dev)

    class FirstToken(BaseStreamer):
        def __init__(self):
            self.calls, self.first = 0, None

        def put(self, value):
            self.calls += 1
            if self.calls == 2:  # the first call carries the prompt
                self.first = time.perf_counter()

        def end(self):
            pass

    def run(n, streamer=None):
        t_start = time.perf_counter()  # image decoding included, as in ours
        pixels = preprocess(load_image(image), cfg.image_size)[None].to(dev, dt)
        out = ref.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids),
                           token_type_ids=torch.zeros_like(ids), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, streamer=streamer)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return t_start, time.perf_counter(), out[0, ids.shape[1]:].tolist()

    run(4)
    streamer = FirstToken()
    t_start, t_end, tokens = run(new_tokens, streamer)
    decode = (len(tokens) - 1) / (t_end - streamer.first) if len(tokens) > 1 else 0.0
    weight_bytes = sum(p.numel() * p.element_size() for p in ref.parameters())
    return {"load_s": load_s, "load_peak_rss": load_peak, "weight_bytes": weight_bytes, "peak_rss": _peak_rss_bytes(),
            "ttft_s": streamer.first - t_start, "decode_tokens_per_s": decode, "tokens": tokens}


def _config(model: str):
    from .model.config import PaliGemmaConfig

    return PaliGemmaConfig.from_json_file(f"{model}/config.json")


def _child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-m", "vlm_core.bench", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise VlmError(f"benchmark child failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr else ''}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_bench(args) -> int:
    common = [args.model, args.image, args.prompt, args.device, args.dtype, str(args.new_tokens)]
    results = {"ours": _child(["ours", *common])}
    if args.compare == "transformers":
        results["transformers"] = _child(["transformers", *common])
    rows = [("load time (s)", "load_s", "{:.2f}"), ("peak RSS (MiB)", "peak_rss", "{:.0f}"),
            ("load RSS / weights", "load_ratio", "{:.2f}"), ("TTFT (s)", "ttft_s", "{:.3f}"),
            ("decode tokens/s", "decode_tokens_per_s", "{:.1f}")]
    for r in results.values():
        r["load_ratio"] = r["load_peak_rss"] / r["weight_bytes"]
    names = list(results)
    print(f"{'':22}" + "".join(f"{n:>16}" for n in names) + (f"{'ours/ref':>12}" if len(names) > 1 else ""))
    for label, key, fmt in rows:
        vals = [results[n][key] / (2**20 if key == "peak_rss" else 1) for n in names]
        line = f"{label:22}" + "".join(f"{fmt.format(v):>16}" for v in vals)
        if len(vals) > 1 and vals[1]:
            line += f"{vals[0] / vals[1]:>12.2f}"
        print(line)
    if len(names) > 1:
        same = results["ours"]["tokens"] == results["transformers"]["tokens"]
        print(f"greedy tokens identical: {same} ({len(results['ours']['tokens'])} tokens)")
    return 0


if __name__ == "__main__":
    impl, model, image, prompt, device, dtype, n = sys.argv[1:8]
    measure = _measure_ours if impl == "ours" else _measure_transformers
    print(json.dumps(measure(model, image, prompt, device, dtype, int(n))))
