"""`python -m vlm_core generate`: answer a prompt about an image, streaming the text (or one JSON object)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .common import add_quant_arg, add_runtime_args

# A prefill longer than this shows its progress on stderr (a long prompt on a CPU can take minutes to the first
# token); VLM_PREFILL_NOTICE_S changes it (0: always).
PREFILL_NOTICE_S = 3.0


def add_parser(sub) -> None:
    g = sub.add_parser("generate", help="answer a prompt about an image, streaming the text")
    add_runtime_args(g)
    add_quant_arg(g)
    g.add_argument("--prompt", required=True, help='e.g. "caption en", "detect cat ; dog", "answer en what is this?"')
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--ignore-eos", action="store_true", help="keep going past <eos> up to --max-new-tokens")
    g.add_argument("--no-graphs", action="store_true", help="decode eagerly on CUDA (no CUDA graphs)")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")


def run(args, parser: argparse.ArgumentParser) -> int:
    from ..runtime.engine import Engine
    from ..runtime.generate import SamplingParams, TokenEvent
    from ..weights.hub import resolve_model

    try:
        params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                                top_p=args.top_p, seed=args.seed, ignore_eos=args.ignore_eos)
    except ValueError as e:
        parser.error(str(e))  # exits 2
    engine = Engine.load(resolve_model(args.model), device=args.device, dtype=args.dtype,
                         cuda_graphs=not args.no_graphs, quant=args.quant)
    image = engine.prepare_image(args.image)
    text, ids, stats = [], [], None
    for event in engine.stream(image, args.prompt, params, prefill_progress=_prefill_notice()):
        if isinstance(event, TokenEvent):
            text.append(event.text)
            if event.token_id is not None:
                ids.append(event.token_id)
            if not args.json:
                sys.stdout.write(event.text)
                sys.stdout.flush()
        else:
            stats = event
    if args.json:
        payload = {"text": "".join(text), "token_ids": ids, "prompt_tokens": stats.prompt_tokens,
                   "ttft_s": round(stats.ttft_s, 6), "decode_tokens_per_s": round(stats.decode_tokens_per_s, 3),
                   "stop_reason": stats.stop_reason}
        if "<loc" in payload["text"]:  # detect / segment: the objects, as `objects --json` lists them
            from ..runtime.answers import objects_json, parse_objects
            from ..runtime.image import original_size

            payload["objects"] = objects_json(parse_objects(payload["text"], *original_size(image.image)))
        print(json.dumps(payload, ensure_ascii=False))
    else:
        sys.stdout.write("\n")
        print(f"[{stats.generated_tokens} tokens, first after {stats.ttft_s:.2f} s, "
              f"{stats.decode_tokens_per_s:.1f} tokens/s, stopped: {stats.stop_reason}]", file=sys.stderr)
    return 0


def _prefill_notice():
    """A progress line on stderr for a prefill that has run PREFILL_NOTICE_S already; updated in place per layer,
    ended when the last layer is done."""
    after = float(os.environ.get("VLM_PREFILL_NOTICE_S", PREFILL_NOTICE_S))
    t0, shown = time.perf_counter(), {"any": False}

    def report(done: int, layers: int) -> None:
        elapsed = time.perf_counter() - t0
        if elapsed < after and not shown["any"]:
            return
        shown["any"] = True
        end = "\n" if done == layers else ""
        sys.stderr.write(f"\rreading the prompt: layer {done}/{layers} ({done / layers:.0%}), {elapsed:.1f} s{end}")
        sys.stderr.flush()

    return report
