"""Prefill, decode and sampling, exposed as an iterator: the seam a CLI or a GUI thread consumes.

The model's forward returns logits and nothing else; this module owns the loop, the stop conditions, the cancel
hook and the timings. The decode step itself (static cache, on-device sampling, CUDA graphs) is decode_step.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..model.paligemma import PaliGemma
from .decode_step import StaticDecoder, TokenReader, bucket_for, make_generator, sample_tokens
from .tokenizer import StreamDecoder, Tokenizer

STOP_EOS, STOP_MAX_TOKENS, STOP_CANCELLED = "eos", "max_new_tokens", "cancelled"


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 means greedy, the default: PaliGemma's task prompts are trained for it
    top_k: int = 0  # 0 = no top-k cut
    top_p: float = 1.0  # 1 = no nucleus cut
    seed: int | None = None
    ignore_eos: bool = False

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class TokenEvent:
    """One generated token and the text it completes. `token_id` is None only for a trailing fragment emitted at
    the end (an incomplete UTF-8 sequence cut off by max_new_tokens or a cancel)."""

    token_id: int | None
    text: str


@dataclass(frozen=True)
class GenerationStats:
    prompt_tokens: int
    generated_tokens: int
    ttft_s: float  # request start (image decode and vision tower included) to the first token
    decode_tokens_per_s: float  # tokens after the first, over the time after the first
    total_s: float
    stop_reason: str


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """logits float[V] -> token id: `sample_tokens` for one row, read back to the host."""
    return int(sample_tokens(logits[None], params, generator)[0])


@torch.inference_mode()
def stream_tokens(model: PaliGemma, tokenizer: Tokenizer, prompt_ids: list[int], image_features: torch.Tensor,
                  params: SamplingParams, should_stop: Callable[[], bool] = lambda: False,
                  started_at: float | None = None, decoder: StaticDecoder | None = None,
                  prefill_progress: Callable[[int, int], None] | None = None) -> Iterator[TokenEvent | GenerationStats]:
    """Yield a TokenEvent per generated token (never the final <eos>), then one GenerationStats.

    `prefill_progress(layers_done, layers)` is called as each decoder layer finishes the prefill, which is one
    forward pass and can take minutes for a long prompt on a CPU: the caller decides when that is worth showing.

    Decoding runs through the static step (`decoder`: a caller's, e.g. the engine's graphed one per cache bucket,
    or a new eager one). `should_stop` is checked before every forward pass is queued, so a cancel takes effect
    within one token. On CUDA, step t+1 is queued before token t is read back, so detokenizing and the caller's
    work on token t overlap the GPU computing t+1 (a step queued past <eos> or a cancel is discarded).
    """
    t0 = started_at if started_at is not None else time.perf_counter()
    prefix_len = len(prompt_ids)
    if decoder is None:
        decoder = StaticDecoder(model, bucket_for(prefix_len + params.max_new_tokens))
    elif decoder.max_len < prefix_len + params.max_new_tokens or decoder.batch != 1:
        raise ValueError(f"a {decoder.batch}-row decoder of {decoder.max_len} positions cannot hold "
                         f"{prefix_len} + {params.max_new_tokens} tokens")
    generator = make_generator(params.seed, model.device)
    reader = TokenReader(1, model.device)
    text = StreamDecoder(tokenizer)
    generated, t_first, reason = 0, None, STOP_MAX_TOKENS

    def advance(tokens: torch.Tensor) -> torch.Tensor:
        return sample_tokens(decoder.step(tokens), params, generator)

    if should_stop():
        reason = STOP_CANCELLED
    else:
        ids = torch.tensor([prompt_ids], device=model.device)
        with _layer_progress(model, prefill_progress):
            logits = decoder.prefill(ids, image_features)
        picked = sample_tokens(logits, params, generator)  # long[1], on the device
        pending = reader.start(picked)
        while True:
            ahead = None
            if reader.overlaps and generated + 1 < params.max_new_tokens and not should_stop():
                ahead = advance(picked)  # queued before token t is read: it only waits on the GPU
            (token,) = reader.read(pending)
            if token == tokenizer.eos_id and not params.ignore_eos:
                reason = STOP_EOS
                break
            generated += 1
            if t_first is None:
                t_first = time.perf_counter()
            yield TokenEvent(token, text.push(token))
            if generated >= params.max_new_tokens:
                break
            if should_stop():
                reason = STOP_CANCELLED
                break
            picked = ahead if ahead is not None else advance(picked)
            pending = reader.start(picked)
    if tail := text.flush():
        yield TokenEvent(None, tail)
    t_end = time.perf_counter()
    t_first = t_first or t_end
    decode_rate = (generated - 1) / (t_end - t_first) if generated > 1 and t_end > t_first else 0.0
    yield GenerationStats(prefix_len, generated, t_first - t0, decode_rate, t_end - t0, reason)


@contextmanager
def _layer_progress(model: PaliGemma, report: Callable[[int, int], None] | None):
    """Forward hooks on the decoder's layers for the length of one prefill (none when nobody listens)."""
    if report is None:
        yield
        return
    layers = model.text.layers
    handles = [layer.register_forward_hook(lambda *_, i=i: report(i + 1, len(layers)))
               for i, layer in enumerate(layers)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
