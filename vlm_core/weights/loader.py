"""Strict, lazy safetensors loading of PaliGemma 1 and 2 checkpoints.

The model is built on the meta device; each tensor is read straight from its file into a buffer of its own dtype,
cast and moved once, and assigned into the module. No mmap: mapped pages would count towards RSS until the shard is
closed, so the model would briefly be in memory twice.

Three key spellings exist in the wild and all map onto one set of names:
  Hub (transformers 4.4x): language_model.model.layers.N..., vision_tower.vision_model..., multi_modal_projector...
  transformers 4.5x:       model.language_model.layers.N..., model.vision_tower.vision_model...
  transformers 5.x:        model.language_model..., model.vision_tower.encoder... (no `vision_model`)
(transformers 5's save_pretrained writes back the spelling it loaded, or, for a model built from a config,
language_model.model... beside vision_tower.encoder...: the prefixes map independently, so every mix loads.)
A missing, unexpected or misshaped tensor is an error naming the file and the key; nothing is left at random init.
The output head is tied to the embedding unless head.read_head finds it separate; then it loads as text.lm_head.
"""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..model.config import PaliGemmaConfig
from ..errors import DeviceError, WeightsError
from .head import HEAD_KEYS, read_head
from .layout import INDEX_FILE, checkpoint_files
from ..model.gemma import FusedLinear
from ..model.paligemma import PaliGemma


# Checked in order; the first matching prefix wins (so the longer `vision_model` spelling comes first).
_PREFIX_MAP = [
    ("vision_tower.vision_model.embeddings.", "vision.embeddings."),
    ("vision_tower.vision_model.encoder.layers.", "vision.layers."),
    ("vision_tower.vision_model.post_layernorm.", "vision.post_layernorm."),
    ("vision_tower.embeddings.", "vision.embeddings."),
    ("vision_tower.encoder.layers.", "vision.layers."),
    ("vision_tower.post_layernorm.", "vision.post_layernorm."),
    ("multi_modal_projector.linear.", "projector."),
    ("language_model.model.", "text."),
    ("language_model.", "text."),
]
_HEAD = "text.lm_head.weight"

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
_MAX_HEADER = 100 * 1024 * 1024


def canonical_name(key: str) -> str:
    """The module name a checkpoint key loads into; KeyError if unknown."""
    if key in HEAD_KEYS:
        return _HEAD
    bare = key[len("model."):] if key.startswith("model.") else key
    for prefix, target in _PREFIX_MAP:
        if bare.startswith(prefix):
            return target + bare[len(prefix):]
    raise KeyError(key)


@dataclass(frozen=True)
class TensorEntry:
    file: Path
    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int  # absolute position of the first byte in the file
    nbytes: int


def read_header(path: Path) -> list[TensorEntry]:
    """Parse one safetensors header and prove the file is long enough to hold every tensor it lists."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise WeightsError(f"{path} is truncated ({size} bytes): delete it and download the model again")
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER, size - 8):
                raise WeightsError(f"{path} is truncated or not a safetensors file: delete it and download again")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise WeightsError(f"{path} is missing: download the model again") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WeightsError(f"{path} has a corrupt header: delete it and download the model again") from None

    entries, needed = [], 8 + n
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except KeyError:
            raise WeightsError(f"{path}: tensor '{key}' has dtype {info.get('dtype')!r}; "
                               "PaliGemma weights are floating point") from None
        except (TypeError, ValueError):
            raise WeightsError(f"{path}: tensor '{key}' has a corrupt header entry") from None
        numel = 1
        for d in shape:
            numel *= d
        if end - begin != numel * dtype.itemsize or begin < 0:
            raise WeightsError(f"{path}: tensor '{key}' has a corrupt header entry")
        entries.append(TensorEntry(path, key, dtype, shape, 8 + n + begin, end - begin))
        needed = max(needed, 8 + n + end)
    if needed > size:
        raise WeightsError(f"{path} is truncated ({size} of {needed} bytes): the download was interrupted; "
                           "delete it and download the model again")
    return entries


def fused_parts(model: torch.nn.Module) -> dict[str, list[tuple[str, int]]]:
    """{fused parameter: [(checkpoint-side parameter name, rows), ...]} for every FusedLinear in `model`: q/k/v and
    gate/up are one tensor each in the model and separate tensors, under their own names, in every checkpoint."""
    fused = {}
    for name, module in model.named_modules():
        if isinstance(module, FusedLinear):
            parent = name.rsplit(".", 1)[0]
            fused[f"{name}.weight"] = [(f"{parent}.{part}.weight", rows) for part, rows in module.parts]
    return fused


def checkpoint_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """The tensors a checkpoint holds for `model`, by canonical name: its state dict with fused parameters split."""
    fused = fused_parts(model)
    shapes = {}
    for name, p in model.state_dict().items():
        if name in fused:
            shapes.update({part: (rows, *p.shape[1:]) for part, rows in fused[name]})
        else:
            shapes[name] = tuple(p.shape)
    return shapes


def plan_load(model_dir: Path, model: PaliGemma) -> dict[str, TensorEntry]:
    """Map every checkpoint-side parameter of `model` (checkpoint_shapes) to the file entry that fills it, checking
    names and shapes first."""
    files, weight_map = checkpoint_files(model_dir)
    expected = checkpoint_shapes(model)
    plan: dict[str, TensorEntry] = {}
    for path in files:
        for entry in read_header(path):
            if weight_map and weight_map.get(entry.key) != path.name:
                raise WeightsError(f"{path}: tensor '{entry.key}' is not listed for this shard in {INDEX_FILE}; "
                                   "the download is inconsistent: download the model again")
            try:
                name = canonical_name(entry.key)
            except KeyError:
                raise WeightsError(f"{path}: unexpected tensor '{entry.key}': this is not a PaliGemma "
                                   "checkpoint, or a newer format than this version reads") from None
            if name == _HEAD and name not in expected:
                continue  # the model is tied, so read_head found this head equal to the embedding
            if name not in expected:
                raise WeightsError(f"{path}: unexpected tensor '{entry.key}' (no such parameter in a model with "
                                   "this config.json): the config and the weights do not belong together")
            if name in plan:
                raise WeightsError(f"{path}: tensor '{entry.key}' also appears in {plan[name].file.name} "
                                   f"as '{plan[name].key}'")
            if entry.shape != expected[name]:
                raise WeightsError(f"{path}: tensor '{entry.key}' has shape {list(entry.shape)}, config.json "
                                   f"implies {list(expected[name])}: the config and the weights do not match")
            plan[name] = entry
    if missing := [n for n in expected if n not in plan]:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise WeightsError(f"{model_dir}: the checkpoint has no tensor for '{missing[0]}'{more}; "
                           "it is incomplete: download the model again")
    return plan


def _read_into(f, entry: TensorEntry, buf: torch.Tensor | None = None) -> torch.Tensor:
    """Read one tensor into `buf` (a contiguous CPU tensor of its dtype and shape) or a new buffer."""
    buf = torch.empty(entry.shape, dtype=entry.dtype) if buf is None else buf
    if entry.nbytes:
        view = memoryview(buf.view(-1).view(torch.uint8).numpy())
        f.seek(entry.offset)
        done = 0
        while done < entry.nbytes:  # a single read() stops short of 2 GiB on Linux
            got = f.readinto(view[done:])
            if not got:
                raise WeightsError(f"{entry.file} ended while reading '{entry.key}': it is truncated; "
                                   "delete it and download the model again")
            done += got
    return buf


def load_model(model_dir: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               cfg: PaliGemmaConfig | None = None,
               progress: Callable[[int, int], None] | None = None) -> PaliGemma:
    model_dir = Path(model_dir)
    cfg = cfg or PaliGemmaConfig.from_json_file(model_dir / "config.json")
    if not read_head(model_dir, cfg.text.tie_word_embeddings).tied:
        cfg = replace(cfg, text=replace(cfg.text, tie_word_embeddings=False))
    with torch.device("meta"), _skip_init():
        model = PaliGemma(cfg)
    plan = plan_load(model_dir, model)

    # A fused parameter is allocated once, at its final dtype and device; each part is read and copied into its
    # slice, so at most one part's buffer exists beside it: the model is still never in memory twice.
    state: dict[str, torch.Tensor] = {}
    slices: dict[str, torch.Tensor] = {}
    total, done = sum(e.nbytes for e in plan.values()), 0
    try:
        for fused_name, parts in fused_parts(model).items():
            state[fused_name] = torch.empty(model.get_parameter(fused_name).shape, dtype=dtype, device=device)
            for (part, rows), piece in zip(parts, state[fused_name].split([rows for _, rows in parts])):
                slices[part] = piece
        by_file: dict[Path, list[tuple[str, TensorEntry]]] = {}
        for name, entry in plan.items():
            by_file.setdefault(entry.file, []).append((name, entry))
        for path, items in by_file.items():
            with open(path, "rb", buffering=0) as f:
                for name, entry in sorted(items, key=lambda it: it[1].offset):  # sequential reads
                    if (piece := slices.get(name)) is not None:
                        if piece.device.type == "cpu" and piece.dtype == entry.dtype:
                            _read_into(f, entry, piece)  # a row block of the fused tensor: read in place
                        else:
                            piece.copy_(_read_into(f, entry))  # casts and moves in one copy
                    else:
                        state[name] = _read_into(f, entry).to(device=device, dtype=dtype)
                    done += entry.nbytes
                    if progress is not None:
                        progress(done, total)
    except torch.OutOfMemoryError:
        state.clear()
        slices.clear()
        free_device_memory()
        need = sum(e.nbytes // e.dtype.itemsize for e in plan.values()) * dtype.itemsize
        raise DeviceError(f"not enough memory on {device} to load this model ({need / 2**30:.1f} GiB in "
                          f"{str(dtype).removeprefix('torch.')}): choose a smaller model, bfloat16, or the CPU") from None
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


@contextlib.contextmanager
def _skip_init():
    """Random init is wasted on meta tensors that are about to be replaced, and the first meta `normal_` call
    imports torch's Python reference kernels (about a second). The same trick as transformers' no_init_weights."""
    names = ("normal_", "uniform_", "kaiming_uniform_", "zeros_", "ones_", "trunc_normal_")
    saved = {n: getattr(torch.nn.init, n) for n in names}
    try:
        for n in names:
            setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, fn in saved.items():
            setattr(torch.nn.init, n, fn)


def free_device_memory() -> None:
    """Collect dropped tensors and give the allocator's cached blocks back to the device."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
