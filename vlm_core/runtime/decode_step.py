"""The static-shape decode step: a bucketed KV cache, the position as a device tensor, one token per call.

    decoder = StaticDecoder(model, bucket_for(prefix_len + max_new_tokens), batch=B)
    logits = decoder.prefill(ids, image_features)         # long[B, T], float[B, P, D] -> float[B, V]
    tokens = sample_tokens(logits, params, generator)     # long[B], picked on the device
    while ...:
        host = reader.read(reader.start(tokens))          # list[int]: the one host sync per token
        logits = decoder.step(tokens)                     # float[B, V]
        tokens = sample_tokens(logits, params, generator)

Axes: B batch rows, T prompt length, P image tokens, D width, V vocabulary, S the cache's (bucketed) length.

Every tensor a step touches has the same shape and address on every call: the cache is allocated once at a
bucketed length (a multiple of BUCKET tokens, so a handful of sizes cover every request), the next token and its
position live in device buffers (one position per row), the mask and RoPE are computed on the device from the
positions, and the cache is written with scatter_. That makes one step a CUDA graph (runtime/cuda_graphs.py), captured once per decoder and
replayed per token; on the CPU and MPS the same step runs eagerly. The prefill has a prompt-dependent length and
always runs eagerly, on the same cache.

Batch (B > 1): each row has its own position, so rows may hold prompts of different lengths. `prefill` starts every
row on one prefix (ids long[B, T], features float[B, P, D]); `prefill_rows` starts rows first..first+n-1 alone on
theirs (their own prefix length, no padding: the other rows' caches and positions are untouched), which is also how
a finished row takes a new request mid-batch. `step` takes one token per row and advances every row. Rows never see
each other. A finished row keeps being fed (any valid id, e.g. its last token); its outputs are simply not read,
and `release` lets its position stop at the cache's end instead of counting as an overflow.
Sampling: one generator for the batch draws every row's noise from one stream (reproducible, but row r then
differs from a batch-1 run with that seed); a list of per-row generators makes row r equal the batch-1 run.

Sampling runs on the device (`sample_tokens`): greedy is an argmax; temperature/top-k/top-p are the reference
definitions, and the draw is an exponential race, argmax(p / E) with E ~ Exp(1), which picks token i with
probability exactly p_i and needs no host sync (torch.multinomial on CUDA may). A seed therefore reproduces a text
on the same kind of device; a CUDA generator draws a different (identically distributed) stream than the CPU's.

A decoder is not thread-safe and serves one request at a time; `prefill` starts a request and may be called again
for the next one (what an earlier request left in the cache is masked until overwritten).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..model.paligemma import PaliGemma
from .cuda_graphs import capture_or_eager

BUCKET = 256  # tokens; at most 255 masked keys of extra attention per step, and few distinct captures


def bucket_for(length: int, granularity: int = BUCKET) -> int:
    """The cache length for a request that needs `length` positions (prefix + max_new_tokens)."""
    if length < 1:
        raise ValueError(f"a request needs at least one cache position, got {length}")
    return math.ceil(length / granularity) * granularity


class StaticDecoder:
    """A KV cache of `max_len` positions for `batch` rows and the one-token step over it.

    `graphs=True` captures the step as a CUDA graph now; if capture fails (or the device is not CUDA) the step runs
    eagerly and `graphed` says so. Call it under torch.inference_mode(), as the generation loop does.
    """

    def __init__(self, model: PaliGemma, max_len: int, batch: int = 1, graphs: bool = False):
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        self.model, self.batch, self.max_len = model, batch, max_len
        device = model.device
        self.cache = model.new_cache(max_len, 1, batch)
        self.tokens = torch.zeros(batch, 1, dtype=torch.long, device=device)  # the step's input: one id per row
        self.pos = torch.zeros(batch, dtype=torch.long, device=device)  # where each row's token is written
        # Host mirror of pos (never read back from the device) for the bounds check, and which rows it applies to.
        self._written = [0] * batch
        self._live = [False] * batch
        self._run, self.graphed = self._step_body, False
        if graphs:
            self._run, self.graphed = capture_or_eager(self._step_body, device)

    @property
    def nbytes(self) -> int:
        return self.cache.nbytes

    def _step_body(self) -> torch.Tensor:
        """The captured region: reads tokens and pos, writes the cache at pos, advances pos; float[B, V]."""
        logits = self.model(self.tokens, self.pos, self.cache)[:, -1]
        # A released row would run past the cache's end: it keeps rewriting its last slot (its own, unread) instead.
        self.pos.add_(1).clamp_(max=self.max_len - 1)
        return logits

    def prefill(self, ids: torch.Tensor, image_features: torch.Tensor | None) -> torch.Tensor:
        """ids long[B, T] (the whole prefix), image_features float[B, P, D] -> float[B, V] for the last position."""
        b, t = ids.shape
        if b != self.batch:
            raise ValueError(f"this decoder holds {self.batch} rows, got {b}")
        if t >= self.max_len:
            raise ValueError(f"a {t}-token prefix leaves no room to decode in a {self.max_len}-position cache")
        self.cache.begin(t)
        logits = self.model(ids, 0, self.cache, image_features=image_features)[:, -1]
        self.pos.fill_(t)
        self._written = [t] * b
        self._live = [True] * b
        return logits

    def prefill_rows(self, first: int, ids: torch.Tensor, image_features: torch.Tensor | None) -> torch.Tensor:
        """Start rows first..first+n-1 on their own prefix: ids long[n, T], image_features float[n, P, D] ->
        float[n, V]. The other rows keep their cache and position; what these rows held before is overwritten up to
        T and masked beyond it until overwritten, so a finished row can take the next request."""
        n, t = ids.shape
        if not (0 <= first and first + n <= self.batch):
            raise ValueError(f"rows {first}..{first + n - 1} are outside this {self.batch}-row decoder")
        if t >= self.max_len:
            raise ValueError(f"a {t}-token prefix leaves no room to decode in a {self.max_len}-position cache")
        logits = self.model(ids, 0, self.cache.rows(first, first + n, t), image_features=image_features)[:, -1]
        self.pos[first:first + n] = t
        for row in range(first, first + n):
            self._written[row], self._live[row] = t, True
        return logits

    def grown(self, batch: int) -> "StaticDecoder":
        """A decoder of `batch` (more) rows that holds this one's rows first, caches and positions copied: a running
        batch grows to take more requests without restarting the rows it has."""
        if batch < self.batch:
            raise ValueError(f"cannot grow a {self.batch}-row decoder to {batch} rows")
        new = StaticDecoder(self.model, self.max_len, batch, graphs=self.graphed)
        n = self.batch
        new.cache.k[:, :n].copy_(self.cache.k)
        new.cache.v[:, :n].copy_(self.cache.v)
        new.pos[:n].copy_(self.pos)
        new._written[:n], new._live[:n] = self._written, self._live
        return new

    def release(self, row: int) -> None:
        """Row `row` is finished: its position no longer counts against the cache's length."""
        self._live[row] = False

    def room(self, row: int) -> int:
        """How many more tokens row `row` can be fed before its cache is full."""
        return self.max_len - self._written[row]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens long[B] (one per row, on the device) -> float[B, V]: the logits after them.

        Under a CUDA graph the result is the graph's static output buffer: consume it (sample) before the next step.
        """
        if any(live and w >= self.max_len for live, w in zip(self._live, self._written)):
            raise ValueError(f"the cache is full ({self.max_len} positions)")
        self._written = [min(w + 1, self.max_len) for w in self._written]
        self.tokens.copy_(tokens.view(self.batch, 1))
        return self._run()


def make_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A generator on the device the sampling runs on, or None for the device's global one."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)


def sample_tokens(logits: torch.Tensor, params, generator: torch.Generator | Sequence[torch.Generator | None] | None
                  ) -> torch.Tensor:
    """logits float[B, V] -> long[B], on the logits' device, with no host sync.

    `params` is a SamplingParams. Greedy: argmax. Otherwise temperature, then the top-k cut, then the nucleus cut
    (a token is dropped once the mass before it reaches top_p; the most likely token always stays), then one draw.
    """
    if params.greedy:
        return torch.argmax(logits, dim=-1)
    scores = logits.float() / params.temperature
    vocab = scores.shape[-1]
    if params.top_k and params.top_k < vocab:
        kth = torch.topk(scores, params.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        sorted_probs = torch.softmax(sorted_scores, dim=-1)
        drop = (sorted_probs.cumsum(-1) - sorted_probs) >= params.top_p
        scores = scores.scatter(-1, order, sorted_scores.masked_fill(drop, float("-inf")))
    probs = torch.softmax(scores, dim=-1)
    if isinstance(generator, Sequence):
        if len(generator) != probs.shape[0]:
            raise ValueError(f"{len(generator)} generators for {probs.shape[0]} rows")
        noise = torch.stack([torch.empty_like(probs[0]).exponential_(generator=g) for g in generator])
    else:
        noise = torch.empty_like(probs).exponential_(generator=generator)
    # An exact 0 from the exponential would make 0/0 = NaN, which argmax ranks first: clamp it away.
    return torch.argmax(probs / noise.clamp_min_(torch.finfo(noise.dtype).tiny), dim=-1)


class TokenReader:
    """Device token ids -> host ints, with the one sync per token.

    On CUDA the ids are copied into pinned host memory with non_blocking and an event is recorded, so the host can
    queue step t+1 first and then wait for token t: detokenizing t overlaps computing t+1. Two buffers in turn: at
    most two reads are outstanding (t being waited for, t+1 queued). Elsewhere a read is a plain copy.
    """

    def __init__(self, batch: int, device: torch.device):
        self.overlaps = device.type == "cuda"
        if self.overlaps:
            self._buffers = [torch.empty(batch, dtype=torch.long, pin_memory=True) for _ in range(2)]
            self._events = [torch.cuda.Event() for _ in range(2)]
            self._turn = 0

    def start(self, tokens: torch.Tensor):
        """Begin copying tokens long[B] to the host; returns a handle for `read`."""
        if not self.overlaps:
            return tokens
        buffer, event = self._buffers[self._turn], self._events[self._turn]
        self._turn ^= 1
        buffer.copy_(tokens, non_blocking=True)
        event.record()
        return buffer, event

    def read(self, handle) -> list[int]:
        if not self.overlaps:
            return handle.tolist()
        buffer, event = handle
        event.synchronize()
        return buffer.tolist()
