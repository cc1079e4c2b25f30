"""Which files make a checkpoint: the sharded index and its shards, or a single model.safetensors.

Torch-free on purpose: the loader uses it to find what to read, and the model store (which the GUI imports) uses it
to decide whether a cached download is complete.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import WeightsError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def checkpoint_files(model_dir: Path) -> tuple[list[Path], dict[str, str]]:
    """The safetensors files of a checkpoint and the index's key -> shard map (empty for a single file)."""
    index = model_dir / INDEX_FILE
    if index.exists():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            raise WeightsError(f"{index} is corrupt: download the model again") from None
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            if not (model_dir / shard).is_file():
                raise WeightsError(f"{model_dir / shard} is missing (listed in {INDEX_FILE}): download the model again")
        return [model_dir / s for s in shards], weight_map
    if (model_dir / SINGLE_FILE).is_file():
        return [model_dir / SINGLE_FILE], {}
    if list(model_dir.glob("model-*-of-*.safetensors")):
        raise WeightsError(f"{model_dir} has weight shards but no {INDEX_FILE}: download the model again")
    raise WeightsError(f"{model_dir} holds no model weights (model.safetensors or {INDEX_FILE}); "
                       "point --model at a PaliGemma 2 folder or download one")
