#!/usr/bin/env bash
# One prepared command for a machine with an NVIDIA GPU (under 8 minutes on an H100):
#   1. a PaliGemma 2 3B-shaped random-weight checkpoint at 224 px (or MODEL, a real one, if given)
#   2. bf16 parity on CUDA against transformers (>= 95% greedy tokens identical), CUDA-graph decode identical to
#      eager, recovery from out-of-memory                                     (scripts/gpu_check.py parity)
#   3. bench against transformers eager and transformers static cache + torch.compile  (python -m vlm_core bench)
#   4. one summary table (markdown, for the README) and exit code 0 only if every target is met
#
#   scripts/gpu_check.sh [MODEL_DIR]          env: PYTHON (a Python with CUDA torch + transformers; default .venv),
#                                                  GPU_CHECK_DIR (work folder, default /tmp/gpu_check)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="${GPU_CHECK_DIR:-/tmp/gpu_check}"
mkdir -p "$WORK"
if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
elif [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, transformers; assert torch.cuda.is_available()" 2>/dev/null; then
    PY=.venv/bin/python
else
    . scripts/_env.sh "[test]"   # makes .venv with PyPI's torch (CUDA on Linux) and transformers
    PY=python
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible to this torch'; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
start=$(date +%s)
stamp() { echo "[gpu_check +$(( $(date +%s) - start ))s] $*"; }

MODEL="${1:-}"
if [ -z "$MODEL" ]; then
    MODEL="$WORK/paligemma2-3b-224-random"
    if [ ! -f "$MODEL/config.json" ]; then
        stamp "writing a 3B-shaped random checkpoint (bfloat16, 6 GB) to $MODEL"
        "$PY" -m vlm_core make-toy "$MODEL" --size 3b-224 --dtype bfloat16 --shards 4 >/dev/null
    fi
fi
IMAGE="$ROOT/resources/self_test.png"

stamp "parity, graphs vs eager, out-of-memory recovery"
"$PY" scripts/gpu_check.py parity "$MODEL" "$IMAGE" "$WORK/parity.json" > "$WORK/parity.log"

stamp "bench: ours, transformers eager, transformers static + torch.compile (128 tokens)"
"$PY" -m vlm_core bench --model "$MODEL" --image "$IMAGE" --device cuda --dtype bfloat16 --new-tokens 128 \
    --compare transformers --compare transformers-static --json > "$WORK/bench.json"

stamp "done"
"$PY" scripts/gpu_check.py summary "$WORK" | tee "$WORK/summary.md"
