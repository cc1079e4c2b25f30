"""How long a model takes to load: the bf16 checkpoint as it is, and the int8/int4 caches, cold and warm, against a
plain read of the same bytes.

    python scripts/bench_load.py MODEL_DIR [--runs 3]

MODEL_DIR is a bf16 checkpoint (e.g. `make-toy DIR --size 3b-224 --dtype bfloat16`); its int8 and int4 caches are
built first if missing (`quantize`). Each load runs in a fresh child process, so nothing is shared but the page cache.
"Cold" drops the page cache first (`/proc/sys/vm/drop_caches`, root only; without it the cold rows are skipped and
the script says so). Rows are interleaved run by run, so the machine's load falls on every row alike; the script
prints each row's median and best, and the ratios the issue asks about. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time, resource
from pathlib import Path
kind, folder = sys.argv[1], Path(sys.argv[2])
t0 = time.perf_counter()
if kind == "read":  # the bytes of every weight file into fresh memory, nothing else
    total = 0
    for p in sorted(folder.glob(sys.argv[3])):
        with open(p, "rb", buffering=0) as f:
            buf = bytearray(p.stat().st_size)
            f.readinto(buf)
            total += len(buf)
            del buf
else:
    import torch
    from vlm_core.weights.loader import load_model
    from vlm_core.weights.quantize import load_quantized
    t0 = time.perf_counter()  # torch's import is not the load
    if kind == "bf16":
        load_model(folder, dtype=torch.bfloat16)
    else:
        load_quantized(folder, torch.device("cpu"), torch.float32, kind)
print(json.dumps({"s": time.perf_counter() - t0, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def child(kind: str, folder: Path, pattern: str = "") -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(folder), pattern], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    for scheme in ("int8", "int4"):
        if not (args.model / "quantized" / f"{scheme}.safetensors").is_file():
            subprocess.run([sys.executable, "-m", "vlm_core", "quantize", "--model", str(args.model), "--quant",
                            scheme], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    cold = drop_caches()
    if not cold:
        print("cannot drop the page cache here (needs root): cold rows skipped", file=sys.stderr)
    rows = {}
    plans = [("read bf16 files", "read", args.model, "model*.safetensors"), ("load bf16", "bf16", args.model, ""),
             ("load int8 (cache)", "int8", args.model, ""), ("load int4 (cache)", "int4", args.model, "")]
    for _ in range(args.runs):
        for temp in (["cold", "warm"] if cold else ["warm"]):
            for name, kind, folder, pattern in plans:
                if temp == "cold":
                    drop_caches()
                else:
                    child(kind, folder, pattern)  # warm: this load's files are in the page cache
                rows.setdefault(f"{name}, {temp}", []).append(child(kind, folder, pattern))
    print(f"{'':28} {'median s':>9} {'best s':>8} {'peak RSS GB':>12}")
    med = {}
    for name, runs in rows.items():
        s = [r["s"] for r in runs]
        med[name] = statistics.median(s)
        print(f"{name:28} {med[name]:9.2f} {min(s):8.2f} {max(r['rss'] for r in runs) / 1e9:12.2f}")
    if cold:
        print(f"cold bf16 / cold int4 cache: {med['load bf16, cold'] / med['load int4 (cache), cold']:.2f}x "
              "(target >= 3x)")
    print(f"warm bf16 / warm plain read: {med['load bf16, warm'] / med['read bf16 files, warm']:.2f}x (target <= 1.3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
