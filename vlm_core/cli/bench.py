"""`python -m vlm_core bench`: ours and (with --compare) the reference, side by side, in one run.

Each implementation runs in its own child process so that its peak RSS is its own and neither warms the other's
caches. All get the same model folder, the same image and prompt ids, and generate exactly --new-tokens greedy
tokens (EOS ignored) after a warm-up of the same length (a static cache has one shape per length, so a shorter
warm-up would leave compilation inside the measurement). Measured: load time, peak RSS (and its excess over the
weight bytes, the loader's promise), TTFT, decode tokens/s, greedy tokens identical, and the ratios ours / reference.

Each run also measures the device's memory read bandwidth (a reduction over a buffer far larger than any cache) and
sets it against the bytes one decode step must read: the decoder's weights (the tied head counts once, as the
257k-entry matmul it is; the embedding lookup reads one row) plus the keys and values attended. bytes/token x
tokens/s / bandwidth is the share of the bandwidth limit reached; decode at batch 1 is memory-bound, so that share
is the honest measure of how much speed is left.

References: `transformers` (eager attention, dynamic cache) and, on CUDA, `transformers-static` (static cache,
which makes transformers torch.compile the forward with CUDA graphs: the stronger anchor). transformers is imported
only in the child that benchmarks it; it is a test/bench dependency, never the product's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ..errors import VlmError
from .common import QUANTS, add_runtime_args

REFERENCES = ("transformers", "transformers-static")


def add_parser(sub) -> None:
    b = sub.add_parser("bench", help="load time, peak RSS, TTFT and decode speed (optionally vs transformers)")
    add_runtime_args(b)
    b.add_argument("--prompt", default="caption en")
    b.add_argument("--new-tokens", type=int, default=64)
    b.add_argument("--compare", action="append", choices=REFERENCES, default=[],
                   help="a reference to run beside ours (repeatable); transformers-static needs CUDA")
    b.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    b.add_argument("--no-graphs", action="store_true", help="decode eagerly on CUDA (no CUDA graphs)")
    b.add_argument("--repeat", type=int, default=1,
                   help="measured runs per implementation, taking turns; each run and the spread are reported")
    b.add_argument("--quant", default="none", type=quant_list,
                   help="weight formats, comma-separated, each in its own child: e.g. none,int8,int4")


def quant_list(value: str) -> list[str]:
    schemes = [q.strip() for q in value.split(",") if q.strip()]
    if not schemes or any(q not in QUANTS for q in schemes):
        raise argparse.ArgumentTypeError(f"{value!r}: use none, int8 or int4, comma-separated")
    return list(dict.fromkeys(schemes))


def quant_impls(schemes: list[str]) -> list[str]:
    """Our implementation once per weight format: "ours" (unquantized), "ours:int8", "ours:int4"."""
    return ["ours" if q == "none" else f"ours:{q}" for q in schemes]


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


def read_bandwidth(device) -> float:
    """Bytes/s a full-device reduction reads from memory (best of several), over a buffer 16x the largest cache."""
    import torch

    dev = torch.device(device)
    n = (2 << 30 if dev.type == "cuda" else 512 << 20) // 4
    buf = torch.ones(n, dtype=torch.float32, device=dev)
    best = float("inf")
    for _ in range(8):
        _sync(dev)
        t0 = time.perf_counter()
        buf.sum()
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    del buf
    return n * 4 / best


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def decode_bytes(cfg, element_size: int, keys_attended: float) -> dict:
    """Bytes one decode step reads: decoder weights (head included once) and the keys/values attended."""
    t = cfg.text
    layer = (t.hidden_size * (t.num_attention_heads + 2 * t.num_key_value_heads) * t.head_dim  # q, k, v
             + t.num_attention_heads * t.head_dim * t.hidden_size  # o
             + 3 * t.hidden_size * t.intermediate_size  # gate, up, down
             + 4 * t.hidden_size)  # norms
    head = t.vocab_size * t.hidden_size * (1 if getattr(t, "tie_word_embeddings", True) else 2)
    weights = (t.num_hidden_layers * layer + head + t.hidden_size) * element_size
    kv = 2 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim * keys_attended * element_size
    return {"weights": weights, "kv": int(kv), "total": int(weights + kv)}


class _Ours:
    """One implementation in its child process: load (timed), warm up, then measured runs on request."""

    def __init__(self, model, image, prompt, device, dtype, new_tokens, graphs, quant="none"):
        import torch

        from ..runtime.engine import Engine
        from ..runtime.generate import SamplingParams

        torch.set_grad_enabled(False)
        self.bandwidth = read_bandwidth(_device(device))
        rss_before = _rss_bytes()
        t0 = time.perf_counter()
        self.engine = engine = Engine.load(model, device=device, dtype=dtype, cuda_graphs=graphs, quant=quant)
        _sync(engine.device)
        self.load_s = time.perf_counter() - t0
        self.load_peak = _peak_rss_bytes() - rss_before
        self.prepared, self.prompt = engine.prepare_image(image), prompt
        self.params = SamplingParams(max_new_tokens=new_tokens, ignore_eos=True)
        engine.generate(self.prepared, prompt, _warmup(self.params, engine.device))

    def run(self) -> dict:
        self.engine.clear_image_cache()  # so a measured run pays for its vision tower, like the reference
        r = self.engine.generate(self.prepared, self.prompt, self.params)
        return {"ttft_s": r.stats.ttft_s, "decode_tokens_per_s": r.stats.decode_tokens_per_s, "tokens": r.token_ids}

    def final(self) -> dict:
        from ..runtime.decode_step import bucket_for
        from ..runtime.generate import SamplingParams

        engine = self.engine
        second = engine.generate(self.prepared, "answer en what is in the image?", SamplingParams(max_new_tokens=4))
        prefix = len(engine.prompt_ids(self.prompt))
        moved = decode_bytes(engine.cfg, engine.model.dtype.itemsize,
                             bucket_for(prefix + self.params.max_new_tokens))  # the static step reads its bucket
        if engine.quant != "none":
            moved["total"] += quantized_weight_bytes(engine.model) - moved["weights"]
        return {"load_s": self.load_s, "load_peak_rss": self.load_peak, "weight_bytes": engine.weight_bytes(),
                "peak_rss": _peak_rss_bytes(), "peak_device_bytes": _peak_device_bytes(engine.device),
                "ttft_same_image_s": second.stats.ttft_s, "bytes_per_token": moved["total"],
                "bandwidth_bytes_per_s": self.bandwidth, "dtype": str(engine.dtype).removeprefix("torch."),
                "device_name": engine.device_description(), "choices": engine.choices, "graphs": engine.cuda_graphs}


def quantized_weight_bytes(model) -> int:
    """A quantized decoder's bytes per decode step: every weight of the text decoder, as stored (the int8
    embedding counts once, as the head's product reads it all)."""
    return sum(t.numel() * t.element_size() for t in (*model.text.parameters(), *model.text.buffers()))


def _warmup(params, dev):
    """On CUDA the measured length itself (graphs and compiled code are per shape); elsewhere a few tokens."""
    from dataclasses import replace

    return params if dev.type == "cuda" else replace(params, max_new_tokens=min(params.max_new_tokens, 4))


def _peak_device_bytes(dev) -> int | None:
    import torch

    return torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None


def _device(name: str):
    from ..runtime.engine import resolve_device

    return resolve_device(name)


class _Transformers:
    def __init__(self, model, image, prompt, device, dtype, new_tokens, static):
        import torch
        from transformers import PaliGemmaForConditionalGeneration

        from ..runtime.engine import choose_dtype, configure_threads
        from ..runtime.tokenizer import Tokenizer

        torch.set_grad_enabled(False)
        self.dev = dev = _device(device)
        self.dt, _ = choose_dtype(dtype, dev)
        if dev.type == "cpu":
            configure_threads(dev)  # the same threads as ours
        if static and dev.type != "cuda":
            raise VlmError("--compare transformers-static needs CUDA: transformers compiles its static-cache "
                           "forward with CUDA graphs only there")
        rss_before = _rss_bytes()
        t0 = time.perf_counter()
        self.ref = PaliGemmaForConditionalGeneration.from_pretrained(
            model, dtype=self.dt, attn_implementation="eager").to(dev).eval()
        _sync(dev)
        self.load_s = time.perf_counter() - t0
        self.load_peak = _peak_rss_bytes() - rss_before
        # Same inputs as ours: our processor's pixels and ids (their equality with the reference's is tested).
        self.cfg = _config(model)
        prompt_ids = Tokenizer(f"{model}/tokenizer.model").prompt_ids(prompt, self.cfg.image_token_index,
                                                                      self.cfg.num_image_tokens)
        self.ids = torch.tensor([prompt_ids], device=dev)
        self.image, self.new_tokens, self.static = image, new_tokens, static
        self.extra = {"cache_implementation": "static"} if static else {}  # static + CUDA: transformers compiles
        self._generate(new_tokens if dev.type == "cuda" else min(new_tokens, 4))  # warm-up (compiles, if static)

    def _generate(self, n) -> dict:
        import torch
        from transformers.generation.streamers import BaseStreamer

        from ..runtime.image import load_image, preprocess

        class FirstToken(BaseStreamer):
            def __init__(self):
                self.calls, self.first = 0, None

            def put(self, value):
                self.calls += 1
                if self.calls == 2:  # the first call carries the prompt
                    self.first = time.perf_counter()

            def end(self):
                pass

        streamer, ids = FirstToken(), self.ids
        t_start = time.perf_counter()  # image decoding included, as in ours
        pixels = preprocess(load_image(self.image), self.cfg.image_size)[None].to(self.dev, self.dt)
        out = self.ref.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids),
                                token_type_ids=torch.zeros_like(ids), max_new_tokens=n, min_new_tokens=n,
                                do_sample=False, streamer=streamer, **self.extra)
        _sync(self.dev)
        t_end = time.perf_counter()
        tokens = out[0, ids.shape[1]:].tolist()
        decode = (len(tokens) - 1) / (t_end - streamer.first) if len(tokens) > 1 else 0.0
        return {"ttft_s": streamer.first - t_start, "decode_tokens_per_s": decode, "tokens": tokens}

    def run(self) -> dict:
        return self._generate(self.new_tokens)

    def final(self) -> dict:
        weight_bytes = sum(p.numel() * p.element_size() for p in self.ref.parameters())
        # A dynamic cache attends over the keys written so far, on average prefix + n/2; a static one over all.
        keys = self.ids.shape[1] + (self.new_tokens if self.static else self.new_tokens / 2)
        return {"load_s": self.load_s, "load_peak_rss": self.load_peak, "weight_bytes": weight_bytes,
                "peak_rss": _peak_rss_bytes(), "peak_device_bytes": _peak_device_bytes(self.dev),
                "bytes_per_token": decode_bytes(self.cfg, self.dt.itemsize, keys)["total"]}


def _config(model: str):
    from ..model.config import PaliGemmaConfig

    return PaliGemmaConfig.from_json_file(f"{model}/config.json")


_TAG = "@@bench "  # protocol lines on a child's stdout; anything else a library prints there is ignored


class _Child:
    """A benchmark child process: it loads and warms up, then measures one run per `run()`."""

    def __init__(self, impl: str, common: list[str]):
        self.impl = impl
        self.proc = subprocess.Popen([sys.executable, "-m", "vlm_core.cli.bench", impl, *common], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def _reply(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(_TAG):
                return json.loads(line[len(_TAG):])
        err = self.proc.stderr.read().strip()
        last = err.splitlines()[-1].removeprefix("error: ") if err else f"exit code {self.proc.wait()}"
        raise VlmError(f"benchmark child '{self.impl}' failed: {last}")

    def _ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def ready(self) -> None:
        self._reply()

    def run(self) -> dict:
        # monotonic is one clock for every process on the machine: the spans show the runs really took turns
        start = time.monotonic()
        out = self._ask("run")
        return {**out, "span": [start, time.monotonic()]}

    def finish(self) -> dict:
        out = self._ask("done")
        self.proc.wait()
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _fits_side_by_side(model: str, count: int) -> bool:
    """Whether `count` loaded copies of the model fit in the memory available now (float32 at worst)."""
    from ..weights.layout import checkpoint_files

    try:
        files, _ = checkpoint_files(Path(model))
        need = sum(f.stat().st_size for f in files) * 2 * count * 1.3  # bf16 files may load as fp32
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        return need < avail
    except (OSError, StopIteration, VlmError):
        return False


def measure(impls: list[str], common: list[str], repeat: int, interleave: bool) -> dict:
    """{impl: numbers}. Interleaved, every child is loaded first and runs take turns (ours, ref, ours, ref...), so
    a burst of other work on the machine falls on all of them alike; else each child runs alone in turn. Each
    run's figures are kept ("runs"); the headline TTFT and decode rate are the best (other work only ever slows a
    run down), and summarize() adds the spread."""
    runs: dict[str, list[dict]] = {impl: [] for impl in impls}
    results, children = {}, {}
    try:
        if interleave:
            for impl in impls:
                children[impl] = _Child(impl, common)
                children[impl].ready()
            for _ in range(repeat):
                for impl, child in children.items():
                    runs[impl].append(child.run())
            for impl, child in children.items():
                results[impl] = child.finish()
        else:
            for impl in impls:
                children[impl] = child = _Child(impl, common)
                child.ready()
                runs[impl] = [child.run() for _ in range(repeat)]
                results[impl] = child.finish()
    finally:
        for child in children.values():
            child.stop()
    for impl, r in runs.items():
        results[impl].update(ttft_s=min(x["ttft_s"] for x in r),
                             decode_tokens_per_s=max(x["decode_tokens_per_s"] for x in r),
                             tokens=r[0]["tokens"], runs=[{k: v for k, v in x.items() if k != "tokens"} for x in r],
                             tokens_stable=all(x["tokens"] == r[0]["tokens"] for x in r))
    return results


_PER_RUN = ("ttft_s", "decode_tokens_per_s")  # measured every run; load and peak RSS once per child


def spread(values: list[float]) -> dict:
    """min, median and max: the median is the figure to quote, min..max how much the machine's noise moved it."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def run_ratios(ours: list[dict], ref: list[dict]) -> dict:
    """{figure: [ours / ref of run i, ...]}, run i of one side beside run i of the other (the same turn, so the
    same burst of load), for the figures measured every run."""
    return {k: [a[k] / b[k] if b[k] else None for a, b in zip(ours, ref)] for k in _PER_RUN}


_COMPARED = ("load_s", "peak_rss", "ttft_s", "decode_tokens_per_s")


def summarize(results: dict) -> dict:
    """The one JSON object: each implementation's numbers, the bandwidth, the ratios ours / reference."""
    first = next(iter(results))  # ours, in the first --quant format
    ours = results[first]
    bandwidth = ours["bandwidth_bytes_per_s"]
    out = {"device": ours["device_name"], "dtype": ours["dtype"], "choices": ours["choices"],
           "cuda_graphs": ours["graphs"], "read_bandwidth_GBps": bandwidth / 1e9, "ratios": {}}
    out["ratio_spread"] = {}
    for name, r in results.items():
        r["bandwidth_share"] = r["bytes_per_token"] * r["decode_tokens_per_s"] / bandwidth
        r["load_ratio"] = r["load_peak_rss"] / r["weight_bytes"]
        runs = r.get("runs") or [{k: r[k] for k in _PER_RUN}]
        r["spread"] = {k: spread([x[k] for x in runs]) for k in _PER_RUN}
        if name != first:
            r["tokens_identical"] = r["tokens"] == ours["tokens"]
            out["ratios"][name] = {k: ours[k] / r[k] if r[k] else None for k in _COMPARED}
            per_run = run_ratios(ours.get("runs") or [ours], runs)
            # load time and peak RSS are measured once per side: their spread is that one ratio
            out["ratio_spread"][name] = {
                **{k: spread([out["ratios"][name][k]]) for k in _COMPARED if k not in _PER_RUN
                   and out["ratios"][name][k] is not None},
                **{k: {**spread(v), "runs": v} for k, v in per_run.items() if None not in v}}
        out[name] = r
    return out


def run(args, parser: argparse.ArgumentParser) -> int:
    graphs = not getattr(args, "no_graphs", False)
    repeat = max(1, getattr(args, "repeat", 1))
    common = [args.model, args.image, args.prompt, args.device, args.dtype, str(args.new_tokens), str(int(graphs))]
    compare = args.compare if isinstance(args.compare, list) else [args.compare] if args.compare else []
    impls = [*quant_impls(getattr(args, "quant", None) or ["none"]), *dict.fromkeys(compare)]
    # Side by side on the CPU only (two models on one GPU would contend for it); "auto" counts as what it resolves to.
    interleave = (len(impls) > 1 and _device(args.device).type == "cpu"
                  and _fits_side_by_side(args.model, len(impls)))
    results = measure(impls, common, repeat, interleave)
    summary = summarize(results)
    summary["interleaved"] = interleave
    if getattr(args, "json", False):
        print(json.dumps(summary))
        return 0
    print(f"{summary['device']}, {summary['dtype']}: {summary['choices']}")
    rows = [("load time (s)", "load_s", "{:.2f}", 1), ("peak RSS (MiB)", "peak_rss", "{:.0f}", 2**20),
            ("load RSS / weights", "load_ratio", "{:.2f}", 1), ("TTFT (s)", "ttft_s", "{:.3f}", 1),
            ("decode tokens/s", "decode_tokens_per_s", "{:.1f}", 1),
            ("MB read per token", "bytes_per_token", "{:.0f}", 1e6),
            ("share of bandwidth", "bandwidth_share", "{:.0%}", 1)]
    names = list(results)
    ratio_names = ["ours/ref"] if len(names) == 2 else [f"ours/{n}" for n in names[1:]]
    print(f"{'':22}" + "".join(f"{n:>20}" for n in names) + "".join(f"{n:>22}" for n in ratio_names))
    for label, key, fmt, scale in rows:
        vals = [results[n][key] / scale for n in names]
        line = f"{label:22}" + "".join(f"{fmt.format(v):>20}" for v in vals)
        line += "".join(f"{vals[0] / v:>22.2f}" if v else f"{'':>22}" for v in vals[1:])
        print(line)
    _print_runs(summary, names)
    print(f"memory read bandwidth: {summary['read_bandwidth_GBps']:.1f} GB/s; second question about the same "
          f"image: TTFT {results[names[0]]['ttft_same_image_s']:.3f} s")
    for n in names[1:]:
        print(f"greedy tokens identical: {results[n]['tokens_identical']} ({len(results[names[0]]['tokens'])} "
              f"tokens, {n})")
    print_quant_ratios(results)
    return 0


def _print_runs(summary: dict, names: list[str]) -> None:
    """With --repeat: every run's TTFT and decode rate, in the order they ran, then the ratios' min/median/max."""
    runs = len(summary[names[0]]["runs"])
    if runs < 2:
        return
    order = "runs took turns" if summary.get("interleaved") else "each side ran alone"
    print(f"best of {runs} runs above ({order}); every run, TTFT s / decode tokens/s:")
    for i in range(runs):
        print(f"  run {i + 1:<16}" + "".join(
            f"{summary[n]['runs'][i]['ttft_s']:>11.3f} /{summary[n]['runs'][i]['decode_tokens_per_s']:>7.1f}"
            for n in names))
    for n in names:
        s = summary[n]["spread"]
        print(f"  {n}: TTFT {_fmt_spread(s['ttft_s'], '{:.3f}')} s, decode "
              f"{_fmt_spread(s['decode_tokens_per_s'], '{:.1f}')} tokens/s")
    for n in names[1:]:
        s = summary["ratio_spread"][n]  # a figure that was 0 on the reference's side (one token: no decode) has none
        parts = [f"{label} {_fmt_spread(s[key], '{:.2f}')}x" for label, key in
                 (("TTFT", "ttft_s"), ("decode", "decode_tokens_per_s")) if key in s]
        print(f"  ours/{n}, per run: " + ", ".join(parts))


def _fmt_spread(s: dict, fmt: str) -> str:
    return f"median {fmt.format(s['median'])} (min {fmt.format(s['min'])}, max {fmt.format(s['max'])})"


def print_quant_ratios(results: dict) -> None:
    """Each quantized run against our unquantized one, as speed-ups (>1: the quantized one is better)."""
    base = results.get("ours")
    for name, r in results.items():
        if base is None or not name.startswith("ours:"):
            continue
        decode = r["decode_tokens_per_s"] / base["decode_tokens_per_s"]
        print(f"{name.removeprefix('ours:')} / unquantized: decode {decode:.2f}x, "
              f"TTFT {r['ttft_s'] / base['ttft_s']:.2f}x, peak RSS {r['peak_rss'] / base['peak_rss']:.2f}x, "
              f"load {r['load_s'] / base['load_s']:.2f}x, weights {r['weight_bytes'] / base['weight_bytes']:.2f}x")


def _serve(impl: str, argv: list[str]) -> None:
    model, image, prompt, device, dtype, n, graphs = argv
    try:
        if impl.startswith("ours"):
            bench = _Ours(model, image, prompt, device, dtype, int(n), graphs == "1", impl.partition(":")[2] or "none")
        else:
            bench = _Transformers(model, image, prompt, device, dtype, int(n), static=impl == "transformers-static")
    except VlmError as e:
        sys.exit(f"error: {e}")
    print(_TAG + "{}", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "run":
            print(_TAG + json.dumps(bench.run()), flush=True)
        elif command == "done":
            print(_TAG + json.dumps(bench.final()), flush=True)
            return


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2:])
