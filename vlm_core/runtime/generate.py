"""Prefill, decode and sampling, exposed as an iterator: the seam a CLI or a GUI thread consumes.

The model's forward returns logits and nothing else; this module owns the loop, the stop conditions, the cancel
hook and the timings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from ..model.paligemma import PaliGemma
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
    """logits float[V] -> token id."""
    if params.greedy:
        return int(torch.argmax(logits))
    scores = logits.float() / params.temperature
    if params.top_k and params.top_k < scores.numel():
        kth = torch.topk(scores, params.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        cumulative = torch.softmax(sorted_scores, dim=-1).cumsum(-1)
        # Drop a token once the mass before it already reaches top_p; the most likely token always stays.
        drop = (cumulative - torch.softmax(sorted_scores, dim=-1)) >= params.top_p
        scores = scores.scatter(0, order, sorted_scores.masked_fill(drop, float("-inf")))
    probs = torch.softmax(scores, dim=-1).cpu()  # sampled on the CPU so a seed gives the same text on any device
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.inference_mode()
def stream_tokens(model: PaliGemma, tokenizer: Tokenizer, prompt_ids: list[int], image_features: torch.Tensor,
                  params: SamplingParams, should_stop: Callable[[], bool] = lambda: False,
                  started_at: float | None = None) -> Iterator[TokenEvent | GenerationStats]:
    """Yield a TokenEvent per generated token (never the final <eos>), then one GenerationStats.

    `should_stop` is checked before every forward pass, so a cancel takes effect within one token.
    """
    t0 = started_at if started_at is not None else time.perf_counter()
    generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
    prefix_len = len(prompt_ids)
    cache = model.new_cache(prefix_len + params.max_new_tokens, prefix_len)
    decoder = StreamDecoder(tokenizer)
    ids = torch.tensor([prompt_ids], device=model.device)
    generated, t_first, reason = 0, None, STOP_MAX_TOKENS

    if should_stop():
        reason = STOP_CANCELLED
    else:
        logits = model(ids, 0, cache, image_features=image_features)
        while True:
            token = sample_next(logits[0, -1], params, generator)
            if token == tokenizer.eos_id and not params.ignore_eos:
                reason = STOP_EOS
                break
            generated += 1
            if t_first is None:
                t_first = time.perf_counter()
            yield TokenEvent(token, decoder.push(token))
            if generated >= params.max_new_tokens:
                break
            if should_stop():
                reason = STOP_CANCELLED
                break
            logits = model(torch.tensor([[token]], device=model.device), prefix_len + generated - 1, cache)
    if tail := decoder.flush():
        yield TokenEvent(None, tail)
    t_end = time.perf_counter()
    t_first = t_first or t_end
    decode_rate = (generated - 1) / (t_end - t_first) if generated > 1 and t_end > t_first else 0.0
    yield GenerationStats(prefix_len, generated, t_first - t0, decode_rate, t_end - t0, reason)
