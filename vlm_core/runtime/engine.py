"""The engine: one loaded model, its tokenizer, and a cache of vision features, behind a small API.

    engine = Engine.load("path/to/paligemma2-3b-mix-224")
    for event in engine.stream("cat.jpg", "caption en"):
        ...  # TokenEvent per token, then GenerationStats

Not thread-safe: one request at a time (the desktop app's worker thread owns the engine).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..model.config import PaliGemmaConfig
from ..model.linear import use_onednn_fp32
from ..errors import ConfigError, ContextError, DeviceError
from . import cpu_caps
from .decode_step import StaticDecoder, bucket_for
from .generate import GenerationStats, SamplingParams, TokenEvent, stream_tokens
from .image import ImageSource, load_image, preprocess
from .tokenizer import TOKENIZER_FILE, Tokenizer
from ..weights.loader import free_device_memory, load_model
from ..weights.heap import keep_freed_memory
from ..weights.quantize import check_quant, load_quantized
from .quant_choice import choose_quant

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_FEATURE_CACHE_SIZE = 8  # images; 8 x 4096 x 4608 x 2 bytes = 300 MB at worst (28B, 896 px)
_DECODERS_KEPT = 2  # static caches (and their CUDA graphs) kept per engine: the 3B at 224 px, bf16: ~55 MB each
_TYPICAL_REQUEST = 32 + 128  # prompt tokens + max new tokens: the bucket captured at load, besides the image
_TRAINED_POSITIONS = 8192  # Gemma 1 and 2 (PaliGemma's decoders) were trained on 8,192 positions


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
    return choose_dtype(name, device)[0]


def choose_dtype(name: str, device: torch.device) -> tuple[torch.dtype, str]:
    """(dtype, why) for a --dtype / Settings value on `device`; `why` is shown in bench and the status bar."""
    if name == "auto":
        if device.type == "cuda":
            if torch.cuda.is_bf16_supported():
                return torch.bfloat16, "bfloat16: the GPU computes it natively, and the checkpoints ship in it"
            return torch.float32, "float32: this GPU has no bfloat16, and Gemma 2 overflows in float16"
        if device.type == "cpu":
            native, found = cpu_caps.native_bf16()
            if native:
                return torch.bfloat16, f"bfloat16: the CPU computes it natively ({found}); half the bytes per token"
            return torch.float32, (f"float32: the CPU has no native bfloat16 ({found}); emulated bfloat16 "
                                   "would be about 5x slower")
        return torch.float32, f"float32: the default on {device.type.upper()}"
    if name not in _DTYPES:
        raise DeviceError(f"unknown dtype {name!r}: use auto, float32, bfloat16 or float16")
    return _DTYPES[name], f"{name}: as chosen"


def configure_threads(device: torch.device, threads: int | None = None) -> str:
    """Set PyTorch's CPU threads (one per physical core unless `threads` says otherwise); returns why."""
    if threads is None:
        threads, why = cpu_caps.physical_cores(), "one per physical core"
    else:
        why = "as chosen"
    torch.set_num_threads(threads)
    return f"{threads} CPU thread{'s' if threads != 1 else ''} ({why})"


@dataclass(frozen=True)
class PreparedImage:
    image: Image.Image  # upright RGB; a JPEG over the pixel limit decoded reduced (image.original_size)
    pixels: torch.Tensor  # float32[3, S, S]
    key: str  # content hash of the pixels: the vision-feature cache key


@dataclass(frozen=True)
class GenerationResult:
    text: str
    token_ids: list[int]
    stats: GenerationStats


class Engine:
    quant = "none"  # the weight format Engine.load used: none, int8 or int4

    def __init__(self, model, tokenizer: Tokenizer, name: str, cuda_graphs: bool = False, why: str = ""):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.cfg: PaliGemmaConfig = model.cfg
        self._features: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._decoders: OrderedDict[int, StaticDecoder] = OrderedDict()  # by cache bucket
        self.cuda_graphs = cuda_graphs and model.device.type == "cuda"
        self.choices = why  # what load chose (dtype, threads) and why, for bench and the status bar
        self.max_positions = _TRAINED_POSITIONS  # the context: image tokens + prompt + new tokens, at most

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "auto", dtype: str = "auto",
             progress: Callable[[int, int], None] | None = None, cuda_graphs: bool = True,
             threads: int | None = None, quant: str = "none") -> "Engine":
        """Load a model folder; `progress(bytes_done, bytes_total)` is called as weights are read.

        On CUDA the decode step is captured as a CUDA graph per cache bucket (`cuda_graphs=False`, `--no-graphs`
        turns it off); the usual bucket is captured here, others on their first request. On the CPU, `threads`
        (default: one per physical core) sets PyTorch's thread count. `quant` none, int8, int4 or auto (the first
        that fits the device's memory: runtime/quant_choice.py) loads the decoder's weights quantized."""
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ConfigError(f"model folder {model_dir} does not exist: point to a folder holding a PaliGemma 2 "
                              "model (config.json, tokenizer.model, *.safetensors)")
        dev = resolve_device(device)
        dt, why = choose_dtype(dtype, dev)
        if dev.type == "cpu":
            why += "; " + configure_threads(dev, threads)
        # Config and tokenizer are cheap: fail on them before reading gigabytes of weights.
        cfg = PaliGemmaConfig.from_json_file(model_dir / "config.json")
        tokenizer = Tokenizer(model_dir / TOKENIZER_FILE)
        if tokenizer.vocab_size > cfg.text.vocab_size:
            raise ConfigError(f"{model_dir}: tokenizer.model has {tokenizer.vocab_size} tokens but config.json's "
                              f"vocabulary has {cfg.text.vocab_size}: they belong to different models")
        if dev.type == "cpu" and dt == torch.float32:
            wanted, matmuls = cpu_caps.onednn_fp32()
            if use_onednn_fp32(wanted) != wanted:
                matmuls = "float32 matmuls in MKL (no working oneDNN linear in this PyTorch)"
            why += "; " + matmuls
        scheme, qwhy = choose_quant(quant, dev, dt, cfg)
        check_quant(scheme, dev, dt)
        if scheme == "none":
            model = load_model(model_dir, dev, dt, cfg, progress)
        else:
            model = load_quantized(model_dir, dev, dt, scheme, cfg, progress)
        if quant != "none":
            why += "; " + qwhy
        if dev.type == "cpu":
            keep_freed_memory()  # after the load, which trims as it goes: a prefill's temporaries reuse the heap
        engine = cls(model, tokenizer, model_dir.name, cuda_graphs, why)
        engine.max_positions = _max_positions(model_dir / "config.json")
        engine.quant = scheme
        if engine.cuda_graphs:
            engine.decoder_for(cfg.num_image_tokens + _TYPICAL_REQUEST)  # capture now, not on the first question
            engine.choices += "; CUDA graphs " + ("on" if engine.cuda_graphs else "failed, decoding eagerly")
        return engine

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
        return sum(t.numel() * t.element_size() for t in (*self.model.parameters(), *self.model.buffers()))

    def memory_in_use(self) -> int:
        """Bytes this engine holds on its device (weights + caches), as the allocator sees it where it can."""
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return (self.weight_bytes() + sum(f.numel() * f.element_size() for f in self._features.values())
                + sum(d.nbytes for d in self._decoders.values()))

    @torch.inference_mode()
    def decoder_for(self, positions: int) -> StaticDecoder:
        """The static decoder whose cache bucket holds `positions` (prefix + max new tokens), made (and on CUDA
        captured) on first use; the last few are kept, so a second question reuses the first one's cache."""
        bucket = bucket_for(positions)
        if (decoder := self._decoders.get(bucket)) is None:
            decoder = StaticDecoder(self.model, bucket, graphs=self.cuda_graphs)
            if self.cuda_graphs and not decoder.graphed:
                self.cuda_graphs = False  # capture failed (logged once): every later bucket decodes eagerly too
            self._decoders[bucket] = decoder
            while len(self._decoders) > _DECODERS_KEPT:
                self._decoders.popitem(last=False)
        self._decoders.move_to_end(bucket)
        return decoder

    def prepare_image(self, source: ImageSource | PreparedImage) -> PreparedImage:
        if isinstance(source, PreparedImage):
            return source
        img = load_image(source, min_size=self.cfg.image_size)  # a huge JPEG decodes reduced, straight to ~2S
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
               should_stop: Callable[[], bool] = lambda: False,
               prefill_progress: Callable[[int, int], None] | None = None) -> Iterator[TokenEvent | GenerationStats]:
        """TokenEvents then GenerationStats; `prefill_progress(layers_done, layers)` follows a long prefill."""
        t0 = time.perf_counter()
        prompt_ids = self.prompt_ids(prompt)
        self.check_fits(len(prompt_ids), params.max_new_tokens)  # before any allocation or the vision tower
        prepared = self.prepare_image(image)
        try:
            features = self.image_features(prepared)
            decoder = self.decoder_for(len(prompt_ids) + params.max_new_tokens)
            yield from stream_tokens(self.model, self.tokenizer, prompt_ids, features, params,
                                     should_stop, started_at=t0, decoder=decoder,
                                     prefill_progress=prefill_progress)
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not is_out_of_memory(e):
                raise
            self.free_memory()
            raise DeviceError(f"{self.device_description()} ran out of memory for this request; the memory is freed. "
                              "Ask for fewer new tokens, or use a smaller model or the CPU") from None

    def check_fits(self, prompt_tokens: int, max_new_tokens: int) -> None:
        """Refuse, with the numbers, a request past the context: `prompt_tokens` counts the image tokens too."""
        image, limit = self.cfg.num_image_tokens, self.max_positions
        if prompt_tokens + max_new_tokens <= limit:
            return
        text = prompt_tokens - image
        if prompt_tokens >= limit:
            raise ContextError(f"The prompt does not fit the model's context: {image:,} image tokens + {text:,} "
                               f"prompt tokens = {prompt_tokens:,}, and the model has {limit:,} positions. "
                               "Shorten the prompt")
        raise ContextError(f"max new tokens {max_new_tokens:,} is past the model's context of {limit:,} positions "
                           f"({image:,} image + {text:,} prompt tokens): ask for at most "
                           f"{limit - prompt_tokens:,} new tokens")

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

    def clear_image_cache(self) -> None:
        """Forget the vision features (the next question about an image runs the vision tower again)."""
        self._features.clear()

    def free_memory(self) -> None:
        """Drop caches and return freed blocks to the device (after an out-of-memory error, or on request)."""
        self._features.clear()
        self._decoders.clear()
        free_device_memory()


def is_out_of_memory(e: BaseException) -> bool:
    """A device's out-of-memory error, or the CPU allocator's (a plain RuntimeError there)."""
    if isinstance(e, torch.OutOfMemoryError):
        return True
    text = str(e)
    return "not enough memory" in text or "can't allocate memory" in text or "out of memory" in text.lower()


def _max_positions(config_json: Path) -> int:
    """text_config.max_position_embeddings when the checkpoint states it, else what Gemma was trained on."""
    try:
        value = json.loads(config_json.read_text(encoding="utf-8")).get("text_config", {}).get(
            "max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        return _TRAINED_POSITIONS
    return value if isinstance(value, int) and value > 0 else _TRAINED_POSITIONS
