"""PaliGemma as a Ray Data predictor: one model per actor, each Ray batch through the BatchRunner.

    import ray
    from vlm_core.scale.ray_predictor import PaliGemmaPredictor

    ds = ray.data.from_items([{"path": p} for p in paths])      # or ray.data.read_images(DIR, include_paths=True)
    rows = ds.map_batches(PaliGemmaPredictor, fn_constructor_kwargs={"model": DIR, "prompt": "caption en"},
                          batch_size=16, num_gpus=1, concurrency=4)  # 4 actors, one GPU each
    rows.write_json("out/")                                        # JSONL files; or .write_parquet("out/")

The rows are the CLI's rows, as a pyarrow Table (path, prompt, text, objects, tokens, seconds, error, stop_reason), with `objects` as a
JSON string so every block has the same Arrow schema (an empty list or a None label has no Arrow type of its own).
A path that cannot be read becomes a row with its error, as in the CLI; Ray sees no exception.

With paths, images are decoded exactly as the CLI decodes them (EXIF orientation, transparency, 16-bit). Arrays
from `ray.data.read_images` are taken as they are: Ray does not apply EXIF orientation, so for camera photos pass
paths. This module does not import ray: Ray imports it, in each worker.
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from ..runtime.batch_io import COLUMNS


class PaliGemmaPredictor:
    def __init__(self, model: str, prompt: str, max_new_tokens: int = 128, device: str = "auto",
                 dtype: str = "auto", device_batch_size: int | None = None):
        """device_batch_size None: each Ray batch runs as one device batch (halved on out-of-memory)."""
        from ..runtime.batch import BatchRunner
        from ..runtime.engine import Engine
        from ..runtime.generate import SamplingParams
        from ..weights.hub import resolve_model

        self.engine = Engine.load(resolve_model(model), device=device, dtype=dtype)
        self.runner = BatchRunner(self.engine, prompt, SamplingParams(max_new_tokens=max_new_tokens),
                                  batch_size=device_batch_size or 1)
        self._fixed = device_batch_size is not None

    def __call__(self, batch: dict[str, np.ndarray]):
        """A Ray batch with a `path` column (strings) and/or an `image` column (HxWxC uint8 arrays) -> a
        pyarrow Table of rows with a fixed schema (a block whose rows all lack an error would otherwise get a
        null-typed `error` column, and Parquet files of one dataset would disagree)."""
        import pyarrow as pa  # ray[data] depends on it
        paths = batch.get("path")
        if "image" in batch:
            images = batch["image"]
            names = [str(p) for p in paths] if paths is not None else [f"image-{i}" for i in range(len(images))]
            loaded = [self.runner.prepare(name, _to_pil(arr)) for name, arr in zip(names, images)]
        elif paths is not None:
            loaded = [self.runner.prepare(str(p), str(p)) for p in paths]
        else:
            raise ValueError(f"a batch needs a 'path' or an 'image' column; it has {sorted(batch)}")
        if not self._fixed:
            self.runner.batch_size = max(1, len(loaded))
        rows = self.runner.run_loaded(loaded)
        out = {col: [getattr(r, col) for r in rows] for col in COLUMNS}
        out["objects"] = [json.dumps(o, ensure_ascii=False) for o in out["objects"]]
        return pa.Table.from_pydict(out, schema=_schema(pa))


def _schema(pa):
    types = {"tokens": pa.int64(), "seconds": pa.float64()}
    return pa.schema([(col, types.get(col, pa.string())) for col in COLUMNS])


def _to_pil(arr: np.ndarray) -> Image.Image:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return Image.fromarray(arr)
