"""Is a checkpoint's output head the embedding (tied) or a matrix of its own?

PaliGemma ties its head to the token embedding. The converted Hub checkpoints hold no head at all; transformers'
own saves may carry `lm_head.weight` as a copy of the embedding; a fine-tune saved with `tie_word_embeddings: false`
carries a head of its own. The rule is transformers 5's: the config says untied -> a separate head (which the
checkpoint must hold); the config says tied and the checkpoint holds a head -> tied if it equals the embedding byte
for byte, otherwise separate (the reference warns and keeps both; so do we).

Torch-free, and read from the safetensors headers plus, where a head is present, a streamed byte comparison: `info`
says which without loading a model, and the loader builds the right module before reading a tensor.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

from .layout import checkpoint_files

_log = logging.getLogger(__name__)

# The head under transformers' own name, and under the 4.4x converter's (language_model was a *ForCausalLM).
HEAD_KEYS = ("lm_head.weight", "language_model.lm_head.weight")
# The embedding, in the spellings the loader reads (with or without a leading "model.").
_EMBED_KEYS = ("language_model.model.embed_tokens.weight", "language_model.embed_tokens.weight")
_CHUNK = 16 * 2**20


@dataclass(frozen=True)
class HeadInfo:
    tied: bool
    description: str  # for `info`: which and why


@dataclass(frozen=True)
class _Tensor:
    file: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def read_head(model_dir: Path, config_tied: bool) -> HeadInfo:
    """Decide tied vs separate for the checkpoint in `model_dir` (WeightsError if its files are missing)."""
    files, _ = checkpoint_files(model_dir)
    head = embed = None
    for path in files:
        for key, tensor in _headers(path).items():
            if key in HEAD_KEYS:
                head = (key, tensor)
            elif key.removeprefix("model.") in _EMBED_KEYS:
                embed = tensor
    if not config_tied:
        found = f"'{head[0]}'" if head else "no lm_head.weight (the load will fail)"
        return HeadInfo(False, f"separate: config.json sets tie_word_embeddings false; the checkpoint holds {found}")
    if head is None:
        return HeadInfo(True, "tied to the token embedding")
    key, tensor = head
    if embed is not None and _same_bytes(tensor, embed):
        return HeadInfo(True, f"tied to the token embedding ('{key}' in the checkpoint is a copy of it)")
    _log.warning("%s: '%s' differs from the token embedding although config.json ties them; using it as a "
                 "separate head, as transformers does", model_dir, key)
    return HeadInfo(False, f"separate: '{key}' differs from the token embedding")


def _headers(path: Path) -> dict[str, _Tensor]:
    """The tensors one safetensors file lists. A file too damaged to parse lists nothing here: the loader's strict
    reader names the fault when it gets to it."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > path.stat().st_size - 8:
                return {}
            header = json.loads(f.read(n))
        out = {}
        for key, info in header.items():
            if key != "__metadata__":
                begin, end = info["data_offsets"]
                out[key] = _Tensor(path, info["dtype"], tuple(info["shape"]), 8 + n + begin, end - begin)
        return out
    except (OSError, struct.error, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _same_bytes(a: _Tensor, b: _Tensor) -> bool:
    if (a.dtype, a.shape, a.nbytes) != (b.dtype, b.shape, b.nbytes):
        return False
    with open(a.file, "rb") as fa, open(b.file, "rb") as fb:
        fa.seek(a.offset)
        fb.seek(b.offset)
        left = a.nbytes
        while left > 0:
            n = min(_CHUNK, left)
            ca, cb = fa.read(n), fb.read(n)
            if ca != cb or len(ca) != n:
                return False
            left -= n
    return True
