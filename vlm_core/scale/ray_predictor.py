"""PaliGemma as a Ray Data predictor: one model per actor, each Ray batch through the BatchRunner.

    import ray
    from vlm_core.scale.ray_predictor import PaliGemmaPredictor, decode_images

    ds = ray.data.from_items([{"path": os.fsencode(p)} for p in paths])   # names as bytes: any the OS allows
    ds = ds.map_batches(decode_images, batch_size=8, num_cpus=0.5)         # optional: decode in CPU tasks
    rows = ds.map_batches(PaliGemmaPredictor, fn_constructor_kwargs={"model": DIR, "prompt": "caption en"},
                          batch_size=16, num_gpus=1, concurrency=4)        # 4 actors, one GPU each
    rows.write_json("out/")                                                # JSONL files; or .write_parquet("out/")

The rows are the CLI's rows, as a pyarrow Table (path, prompt, text, objects, tokens, seconds, error, stop_reason,
path_b64), with `objects` as a JSON string so every block has the same Arrow schema (an empty list or a None label
has no Arrow type of its own). Paths may come as str or as bytes (a name that is not UTF-8 cannot be an Arrow
string: pass os.fsencode(path)); `path` is then text and `path_b64` the exact bytes, as in the CLI's files.
A path that cannot be read, or an image `decode_images` could not decode, becomes a row with its error, as in the
CLI; Ray sees no exception, so one bad file never fails the job. A `prompt` column gives each row its own prompt
(rows of different prompts share a device batch); an empty or missing one takes the predictor's `prompt`.

With paths, or through `decode_images`, images are decoded exactly as the CLI decodes them (EXIF orientation,
transparency, 16-bit, the decompression-bomb checks). Arrays from `ray.data.read_images` are taken as they are: Ray
does not apply EXIF orientation, and one file it cannot decode fails the whole job. This module does not import
ray: Ray imports it, in each worker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..errors import VlmError
from ..runtime.batch_io import COLUMNS

_NO_IMAGE = np.zeros((1, 1, 3), dtype=np.uint8)  # stands in for an image that has an error instead


class PaliGemmaPredictor:
    def __init__(self, model: str, prompt: str | None = None, max_new_tokens: int = 128, device: str = "auto",
                 dtype: str = "auto", device_batch_size: int | None = None, prompts: Sequence[str] = ()):
        """`prompt`: the rows' prompt (None when every row has its own in a `prompt` column); `prompts`: the
        prompts that column holds, checked against the context when the actor starts (see BatchRunner).
        device_batch_size None: each Ray batch runs as one device batch (halved on out-of-memory)."""
        from ..runtime.batch import BatchRunner
        from ..runtime.engine import Engine
        from ..runtime.generate import SamplingParams
        from ..weights.hub import resolve_model

        self.engine = Engine.load(resolve_model(model), device=device, dtype=dtype)
        self.runner = BatchRunner(self.engine, prompt, SamplingParams(max_new_tokens=max_new_tokens),
                                  batch_size=device_batch_size or 1, prompts=prompts)
        self._fixed = device_batch_size is not None

    def __call__(self, batch: dict[str, np.ndarray]):
        """A Ray batch with a `path` column (str or bytes) and/or an `image` column (HxWxC uint8 arrays; with
        `decode_images`, an `error` column too), and optionally a `prompt` column -> a pyarrow Table of rows with a
        fixed schema (a block whose rows all lack an error would otherwise get a null-typed `error` column, and
        Parquet files of one dataset would disagree)."""
        import pyarrow as pa  # ray[data] depends on it
        from ..runtime.batch import Loaded

        paths = batch.get("path")
        if "image" in batch:
            images = batch["image"]
            names = [_name(p) for p in paths] if paths is not None else [f"image-{i}" for i in range(len(images))]
            errors = batch.get("error", [""] * len(images))
            prompts = _prompts(batch, len(images))
            loaded = [Loaded(name, None, str(err), q) if err else self.runner.prepare(name, _to_pil(arr), q)
                      for name, arr, err, q in zip(names, images, errors, prompts)]
        elif paths is not None:
            loaded = [self.runner.prepare(_name(p), _name(p), q) for p, q in zip(paths, _prompts(batch, len(paths)))]
        else:
            raise ValueError(f"a batch needs a 'path' or an 'image' column; it has {sorted(batch)}")
        if not self._fixed:
            self.runner.batch_size = max(1, len(loaded))
        records = [r.to_dict() for r in self.runner.run_loaded(loaded)]
        out = {col: [d[col] for d in records] for col in COLUMNS}
        out["objects"] = [json.dumps(o, ensure_ascii=False) for o in out["objects"]]
        return pa.Table.from_pydict(out, schema=_schema(pa))


def decode_images(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A Ray Data stage before the predictor: a `path` column -> path, image (upright 8-bit RGB arrays, ragged)
    and error ("" or why the file could not be decoded: too large, damaged, empty...); a `prompt` column passes
    through. Runs in plain CPU tasks, so decoding overlaps the model; a bad file becomes an error, never a failed
    task."""
    from ..runtime.image import load_image

    images, errors = [], []
    for p in batch["path"]:
        try:
            images.append(np.asarray(load_image(_name(p))))
            errors.append("")
        except VlmError as e:
            images.append(_NO_IMAGE)
            errors.append(str(e).encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    column = np.empty(len(images), dtype=object)
    column[:] = images
    out = {"path": batch["path"], "image": column, "error": np.asarray(errors, dtype=object)}
    if "prompt" in batch:
        out["prompt"] = batch["prompt"]
    return out


def _prompts(batch: dict, n: int) -> list[str | None]:
    """Each row's own prompt, or None for the predictor's."""
    if "prompt" not in batch:
        return [None] * n
    return [str(q) if q is not None and str(q) else None for q in batch["prompt"]]


def _name(p) -> str:
    return os.fsdecode(p) if isinstance(p, (bytes, np.bytes_)) else str(p)


def _schema(pa):
    types = {"tokens": pa.int64(), "seconds": pa.float64()}
    return pa.schema([(col, types.get(col, pa.string())) for col in COLUMNS])


def _to_pil(arr: np.ndarray) -> Image.Image:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return Image.fromarray(arr)
