"""The engine: one loaded model, its tokenizer, and a cache of vision features, behind a small API.

    engine = Engine.load("path/to/paligemma2-3b-mix-224")
    for event in engine.stream("cat.jpg", "caption en"):
        ...  # TokenEvent per token, then GenerationStats

Not thread-safe: one request at a time (the desktop app's worker thread owns the engine).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..model.config import PaliGemmaConfig
from ..errors import ConfigError, DeviceError
from .generate import GenerationStats, SamplingParams, TokenEvent, stream_tokens
from .image import ImageSource, load_image, preprocess
from .tokenizer import TOKENIZER_FILE, Tokenizer
from ..weights.loader import free_device_memory, load_model

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_FEATURE_CACHE_SIZE = 8  # images; 8 x 4096 x 4608 x 2 bytes = 300 MB at worst (28B, 896 px)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("CUDA was requested but no CUDA GPU is available to this PyTorch build; use --device cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("MPS was requested but is not available on this machine; use --device cpu")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise DeviceError(f"unknown device {name!r}: use auto, cpu, cuda or mps")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        # bf16 halves memory and is what the checkpoints ship in. On CPUs it is faster only with native bf16
        # (measured 1.3x on an AVX512-BF16 EPYC; CPUs without it emulate it slowly) and it changes greedy outputs
        # against fp32, so auto stays fp32 on the CPU; Settings and --dtype offer bfloat16.
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in _DTYPES:
        raise DeviceError(f"unknown dtype {name!r}: use auto, float32, bfloat16 or float16")
    return _DTYPES[name]


@dataclass(frozen=True)
class PreparedImage:
    image: Image.Image  # upright RGB, original size
    pixels: torch.Tensor  # float32[3, S, S]
    key: str  # content hash of the pixels: the vision-feature cache key


@dataclass(frozen=True)
class GenerationResult:
    text: str
    token_ids: list[int]
    stats: GenerationStats


class Engine:
    def __init__(self, model, tokenizer: Tokenizer, name: str):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.cfg: PaliGemmaConfig = model.cfg
        self._features: OrderedDict[str, torch.Tensor] = OrderedDict()

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "auto", dtype: str = "auto",
             progress: Callable[[int, int], None] | None = None) -> "Engine":
        """Load a model folder; `progress(bytes_done, bytes_total)` is called as weights are read."""
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ConfigError(f"model folder {model_dir} does not exist: point to a folder holding a PaliGemma 2 "
                              "model (config.json, tokenizer.model, *.safetensors)")
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        # Config and tokenizer are cheap: fail on them before reading gigabytes of weights.
        cfg = PaliGemmaConfig.from_json_file(model_dir / "config.json")
        tokenizer = Tokenizer(model_dir / TOKENIZER_FILE)
        if tokenizer.vocab_size > cfg.text.vocab_size:
            raise ConfigError(f"{model_dir}: tokenizer.model has {tokenizer.vocab_size} tokens but config.json's "
                              f"vocabulary has {cfg.text.vocab_size}: they belong to different models")
        model = load_model(model_dir, dev, dt, cfg, progress)
        return cls(model, tokenizer, model_dir.name)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def device_description(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return self.device.type.upper()

    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def memory_in_use(self) -> int:
        """Bytes this engine holds on its device (weights + caches), as the allocator sees it where it can."""
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return self.weight_bytes() + sum(f.numel() * f.element_size() for f in self._features.values())

    def prepare_image(self, source: ImageSource | PreparedImage) -> PreparedImage:
        if isinstance(source, PreparedImage):
            return source
        img = load_image(source)
        pixels = preprocess(img, self.cfg.image_size)
        return PreparedImage(img, pixels, hashlib.blake2b(pixels.numpy().tobytes(), digest_size=16).hexdigest())

    @torch.inference_mode()
    def image_features(self, image: PreparedImage) -> torch.Tensor:
        """float[1, P, D]; a second question about the same image skips the vision tower."""
        if (hit := self._features.get(image.key)) is not None:
            self._features.move_to_end(image.key)
            return hit
        features = self.model.encode_image(image.pixels[None])
        self._features[image.key] = features
        while len(self._features) > _FEATURE_CACHE_SIZE:
            self._features.popitem(last=False)
        return features

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer.prompt_ids(prompt, self.cfg.image_token_index, self.cfg.num_image_tokens)

    def stream(self, image: ImageSource | PreparedImage, prompt: str, params: SamplingParams = SamplingParams(),
               should_stop: Callable[[], bool] = lambda: False) -> Iterator[TokenEvent | GenerationStats]:
        t0 = time.perf_counter()
        prepared = self.prepare_image(image)
        try:
            features = self.image_features(prepared)
            yield from stream_tokens(self.model, self.tokenizer, self.prompt_ids(prompt), features, params,
                                     should_stop, started_at=t0)
        except torch.OutOfMemoryError:
            self.free_memory()
            raise DeviceError(f"{self.device_description()} ran out of memory for this request; the memory is freed. "
                              "Ask for fewer new tokens, or use a smaller model or the CPU") from None

    def generate(self, image, prompt: str, params: SamplingParams = SamplingParams(),
                 should_stop: Callable[[], bool] = lambda: False) -> GenerationResult:
        text, ids, stats = [], [], None
        for event in self.stream(image, prompt, params, should_stop):
            if isinstance(event, TokenEvent):
                text.append(event.text)
                if event.token_id is not None:
                    ids.append(event.token_id)
            else:
                stats = event
        return GenerationResult("".join(text), ids, stats)

    def free_memory(self) -> None:
        """Drop caches and return freed blocks to the device (after an out-of-memory error, or on request)."""
        self._features.clear()
        free_device_memory()
