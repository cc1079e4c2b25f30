"""`python -m vlm_core info --model DIR [--json]`: what a model folder holds, from config.json alone.

Weights are optional: the architecture, parameter count and memory come from config arithmetic (model/params.py),
so a folder with nothing but config.json answers, and a half-finished download says which shards are missing.
Where the weights are present, the safetensors headers say whether the output head is tied to the embedding.
Torch-free: it answers in a fraction of a second, on machines without PyTorch too.
"""

from __future__ import annotations

import argparse

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, WeightsError
from ..model.config import PaliGemmaConfig
from ..model.params import parameter_count, scheme_bytes
from ..weights.head import read_head
from ..weights.layout import INDEX_FILE, SINGLE_FILE

TEXT_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
               "query_pre_attn_scalar", "sliding_window", "attn_logit_softcapping", "final_logit_softcapping",
               "vocab_size")
VISION_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_DECODERS = {"paligemma2": "Gemma 2", "paligemma": "Gemma 1"}


def describe(model_dir: str | Path) -> dict[str, Any]:
    """Everything `info` prints, as one JSON-ready object."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ConfigError(f"model folder {model_dir} does not exist")
    cfg = PaliGemmaConfig.from_json_file(model_dir / "config.json")
    files = weight_files(model_dir)
    head_detail = None
    if files["complete"]:
        try:
            head = read_head(model_dir, cfg.text.tie_word_embeddings)
            head_detail = head.description
            if not head.tied:
                cfg = replace(cfg, text=replace(cfg.text, tie_word_embeddings=False))
        except WeightsError:
            pass
    tied = cfg.text.tie_word_embeddings
    if head_detail is None:
        head_detail = ("tied to the token embedding" if tied else "separate") + " (from config.json; weights not read)"
    parameters = parameter_count(cfg)
    return {
        "model_dir": str(model_dir),
        "family": cfg.family,
        "decoder": _DECODERS[cfg.family],
        "image_size": cfg.image_size,
        "num_image_tokens": cfg.num_image_tokens,
        "parameters": parameters,
        "head": "tied" if tied else "separate",
        "head_detail": head_detail,
        "text": {k: getattr(cfg.text, k) for k in TEXT_FIELDS},
        "vision": {k: getattr(cfg.vision, k) for k in VISION_FIELDS},
        "weight_bytes": {dtype: parameters * size for dtype, size in DTYPE_BYTES.items()},
        # int8/int4 decoder weights (model/quant.py), the rest in bfloat16 / float32, as each loads
        "quant_bytes": {dtype: scheme_bytes(cfg, DTYPE_BYTES[dtype]) for dtype in ("bfloat16", "float32")},
        "files": files,
        "tokenizer": (model_dir / "tokenizer.model").is_file(),
    }


def weight_files(model_dir: Path) -> dict[str, Any]:
    """{"present": [{"name", "bytes"}...], "missing": [names], "complete": bool, "note": str | None}."""
    present: list[dict[str, Any]] = []
    missing: list[str] = []
    note = None
    index = model_dir / INDEX_FILE
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            names, note = [], f"{INDEX_FILE} is corrupt: download the model again"
        present.append({"name": INDEX_FILE, "bytes": index.stat().st_size})
    elif (model_dir / SINGLE_FILE).is_file():
        names = [SINGLE_FILE]
    else:
        names = []
        shards = sorted(p.name for p in model_dir.glob("model-*-of-*.safetensors"))
        if shards:
            missing.append(INDEX_FILE)
            note = f"weight shards without {INDEX_FILE}: download the model again"
        else:
            note = "no weight files (config.json alone: the numbers above come from it)"
        names = shards
    for name in names:
        path = model_dir / name
        if path.is_file():
            present.append({"name": name, "bytes": path.stat().st_size})
        else:
            missing.append(name)
    complete = bool(names) and not missing and note is None
    return {"present": present, "missing": missing, "complete": complete, "note": note}


def format_text(info: dict[str, Any]) -> str:
    def size(n: int) -> str:
        for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if n >= scale:
                return f"{n / scale:.1f} {unit}"
        return f"{n} bytes"

    def value(v: Any) -> str:
        return "none" if v is None else str(v)

    p = info["parameters"]
    lines = [
        f"model folder       {info['model_dir']}",
        f"family             {info['family']} (SigLIP vision tower, linear projector, {info['decoder']} decoder)",
        f"image              {info['image_size']} x {info['image_size']} px, {info['num_image_tokens']} image tokens",
        f"parameters         {p:,} ({p / 1e9:.2f} B)" if p >= 1e8 else f"parameters         {p:,}",
        f"output head        {info['head_detail']}",
        "text decoder",
        *(f"  {k:<25}{value(v)}" for k, v in info["text"].items()),
        "vision tower",
        *(f"  {k:<25}{value(v)}" for k, v in info["vision"].items()),
        "weights need       " + " · ".join(f"{dtype} {size(n)}" for dtype, n in info["weight_bytes"].items()),
        "quantized          " + " · ".join(f"{q} {size(info['quant_bytes']['bfloat16'][q])}" for q in ("int8", "int4"))
        + " (the rest bfloat16)",
        "weight files",
        *(f"  present  {f['name']} ({size(f['bytes'])})" for f in info["files"]["present"]),
        *(f"  missing  {name}" for name in info["files"]["missing"]),
    ]
    if info["files"]["note"]:
        lines.append(f"  {info['files']['note']}")
    lines.append(f"tokenizer.model    {'present' if info['tokenizer'] else 'missing (needed to run the model)'}")
    return "\n".join(lines)


def add_parser(sub) -> None:
    i = sub.add_parser("info", help="what a model folder holds, from config.json alone (weights optional)")
    i.add_argument("--model", required=True, help="model folder, or a repo id already downloaded")
    i.add_argument("--json", action="store_true", help="print one JSON object")


def run(args, parser: argparse.ArgumentParser) -> int:
    from ..weights.hub import resolve_model

    info = describe(resolve_model(args.model))
    print(json.dumps(info, indent=2) if args.json else format_text(info))
    return 0
