"""The packed-weights cache: one safetensors file per scheme in the model's folder, `quantized/int8.safetensors`.

Its metadata holds the format version, the scheme and the identity of the source it was built from (each source
file's name, size and modification time): a cache whose identity differs from the folder's current files, or that
is truncated, or not ours, is never used; the caller rebuilds it and logs why. Written to a temporary name and
renamed, so an interrupted write leaves no half file under the real name.

Torch-free except for the tensors themselves: read and written with plain file I/O (no mmap, for the loader's
reason: a mapped file counts towards RSS until closed, so the model would briefly be in memory twice).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch

FORMAT = "paligemma-desktop-quant-2"  # 2: int4 may be stored in a CPU kernel layout (metadata int4_layout)
FOLDER = "quantized"
_DTYPES = {"I8": torch.int8, "U8": torch.uint8, "BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
_NAMES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


class CacheMismatch(Exception):
    """This file cannot serve as the cache; the message says why (for the log line)."""


def cache_path(model_dir: Path, scheme: str) -> Path:
    return model_dir / FOLDER / f"{scheme}.safetensors"


def source_identity(files: list[Path]) -> str:
    """Names, sizes and mtimes of the files a cache derives from: any re-download or edit changes it."""
    parts = []
    for f in sorted(files, key=lambda p: p.name):
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts)


def write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors aligns the data to 8 bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for t in tensors.values():
                if t.numel():
                    f.write(memoryview(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read(path: Path, metadata: dict[str, str], shapes: dict[str, tuple[int, ...]], progress=None,
         found_metadata: dict | None = None) -> dict:
    """The cached tensors, if `path` is a complete cache with exactly this metadata and these tensor names and
    shapes; CacheMismatch otherwise. `progress(bytes_done, bytes_total)` after each tensor; `found_metadata`, if
    given, receives the file's whole metadata (keys beyond `metadata` too)."""
    try:
        size = path.stat().st_size
        with open(path, "rb", buffering=0) as f:
            head = f.read(8)
            if len(head) < 8:
                raise CacheMismatch("it is truncated")
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER, size - 8):
                raise CacheMismatch("it is truncated or not a safetensors file")
            header = json.loads(f.read(n))
            found = header.pop("__metadata__", None) or {}
            if found_metadata is not None:
                found_metadata.update(found)
            for key, want in metadata.items():
                if found.get(key) != want:
                    if key == "source":
                        raise CacheMismatch("the model's files changed since it was built")
                    raise CacheMismatch(f"its {key} is {found.get(key)!r}, not {want!r}")
            if {k: tuple(v["shape"]) for k, v in header.items()} != shapes:
                raise CacheMismatch("its tensors do not match this model's")
            end = max((v["data_offsets"][1] for v in header.values()), default=0)
            total = 8 + n + end
            if total > size:
                raise CacheMismatch(f"it is truncated ({size} of {total} bytes)")
            out, done = {}, 0
            for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
                t = torch.empty(info["shape"], dtype=_DTYPES[info["dtype"]])
                begin, stop = info["data_offsets"]
                if stop - begin != t.numel() * t.element_size():
                    raise CacheMismatch(f"tensor {name!r} has a corrupt header entry")
                f.seek(8 + n + begin)
                view, got = memoryview(t.view(-1).view(torch.uint8).numpy()), 0
                while got < len(view):
                    k = f.readinto(view[got:])
                    if not k:
                        raise CacheMismatch("it is truncated")
                    got += k
                out[name] = t
                done += got
                if progress is not None:
                    progress(done, end)
            return out
    except FileNotFoundError:
        raise CacheMismatch("there is none yet") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:  # json errors are ValueErrors
        raise CacheMismatch(f"it is unreadable ({e})") from None
