"""Batched generation: B images, each with its own prompt (or one for all), through the vision tower, prefill and
decode together.

Axes: B batch rows, T tokens, P image tokens, D decoder width, V vocabulary.

Every row has its own cache position (decode_step.py), so rows with different prompts, prefix lengths and
max_new_tokens batch with no padding: rows that share a prefix length are prefilled together, the others apart
into their own rows of the cache, and then every row decodes in one step. The KV cache is allocated once per batch
at the longest row's prefix + max_new_tokens. A row that has finished (its <eos>, or max_new_tokens) keeps its place in the batch: the step keeps
a static shape, its output is frozen (nothing it computes afterwards is read) and the batch ends when every row is
done. Rows never see each other (attention is per row), so each row's greedy output is the batch-1 output for
that image; with a seed, each row samples from its own generator seeded the same, so sampled rows match too.

Limitations, stated rather than hidden: a prefill runs once per run of consecutive rows of equal prefix length
(BatchRunner sorts a batch's rows by prefix length, so each length prefills once); a batch runs as long as its
longest row, so mixing very short and very long answers spends steps on finished rows (the price of a static step
shape, which CUDA graphs need).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..errors import ContextError, VlmError
from ..model.paligemma import PaliGemma
from .batch_io import Row, objects_from_text
from .engine import PreparedImage
from .decode_step import StaticDecoder, TokenReader, bucket_for, make_generator, sample_tokens
from .generate import STOP_CANCELLED, STOP_EOS, STOP_MAX_TOKENS, SamplingParams
from .image import original_size
from .tokenizer import StreamDecoder, Tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowOutput:
    token_ids: tuple[int, ...]  # generated ids, never the final <eos>
    text: str
    stop_reason: str  # eos | max_new_tokens | cancelled
    seconds: float  # batch start (vision tower included) to this row's last token: its latency in the batch


@dataclass(frozen=True)
class BatchStats:
    rows: int
    prompt_tokens: int  # per row: the longest row's prefix
    steps: int  # decode forward passes after the prefill
    vision_s: float
    prefill_s: float  # prefill and the first token
    decode_s: float
    total_s: float


@torch.inference_mode()
def generate_batch(model: PaliGemma, tokenizer: Tokenizer, prompt_ids: Sequence[int] | Sequence[Sequence[int]],
                   pixels: torch.Tensor, params: SamplingParams, should_stop: Callable[[], bool] = lambda: False,
                   started_at: float | None = None, decoder: StaticDecoder | None = None,
                   max_new_tokens: Sequence[int] | None = None) -> tuple[list[RowOutput], BatchStats]:
    """pixels float[B, 3, S, S] -> one RowOutput per row, in order, and the batch's timings.

    `prompt_ids`: one prompt's ids for every row, or one list of ids per row. `max_new_tokens`: one limit per row
    (default: params.max_new_tokens for every row).

    Decoding runs through the static step (`decoder`: a caller's B-row one, reused batch after batch and on CUDA
    a captured graph, or a new eager one). `should_stop` is checked before every forward pass is queued, as in
    `stream_tokens`: a cancel takes effect within one token, and every row not finished by then is returned with
    stop_reason "cancelled" and what it had written. On CUDA, step t+1 is queued before the tokens of step t are
    read back, so the host's bookkeeping overlaps the GPU (a step queued past the end is discarded).
    """
    t0 = started_at if started_at is not None else time.perf_counter()
    b = pixels.shape[0]
    if b < 1:
        raise ValueError("a batch needs at least one image")
    per_row = prompt_ids and not isinstance(prompt_ids[0], int)
    prompts = [list(p) for p in prompt_ids] if per_row else [list(prompt_ids)] * b
    limits = list(max_new_tokens) if max_new_tokens is not None else [params.max_new_tokens] * b
    if len(prompts) != b or len(limits) != b:
        raise ValueError(f"{b} images, {len(prompts)} prompts and {len(limits)} token limits: one of each per row")
    if min(limits) < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {min(limits)}")
    need = max(len(p) + m for p, m in zip(prompts, limits))
    if decoder is None:
        decoder = StaticDecoder(model, bucket_for(need), batch=b)
    elif decoder.batch != b or decoder.max_len < need:
        raise ValueError(f"a {decoder.batch}-row decoder of {decoder.max_len} positions cannot hold {b} rows of "
                         f"up to {need} tokens")
    # One generator per row, seeded alike, so a sampled row equals its batch-1 run with that seed.
    generators = [make_generator(params.seed, model.device) for _ in range(b)] if params.seed is not None else None
    reader = TokenReader(b, model.device)
    decoders = [StreamDecoder(tokenizer) for _ in range(b)]
    tokens: list[list[int]] = [[] for _ in range(b)]
    texts: list[list[str]] = [[] for _ in range(b)]
    done: list[tuple[str, float] | None] = [None] * b  # (stop reason, seconds) once a row has finished
    steps, reads, t_vision, t_prefill = 0, 0, None, None

    def finish(row: int, reason: str) -> None:
        if tail := decoders[row].flush():
            texts[row].append(tail)
        done[row] = (reason, time.perf_counter() - t0)
        decoder.release(row)

    def advance(picked: torch.Tensor) -> torch.Tensor:
        nonlocal steps
        steps += 1
        # A finished row is fed its last pick: any valid id keeps the shape static, and its result is not read.
        return sample_tokens(decoder.step(picked), params, generators)

    if should_stop():
        for row in range(b):
            finish(row, STOP_CANCELLED)
    else:
        features = model.encode_image(pixels)  # float[B, P, D]: the vision tower runs once, as one batch
        t_vision = time.perf_counter()
        picked = sample_tokens(_prefill(decoder, prompts, features), params, generators)  # long[B], on the device
        pending = reader.start(picked)
        while True:
            ahead = None
            if reader.overlaps and reads + 1 < max(limits) and not should_stop():
                ahead = advance(picked)  # queued before this step's tokens are read: it only waits on the GPU
            host = reader.read(pending)
            reads += 1
            t_prefill = t_prefill or time.perf_counter()
            for row, token in enumerate(host):
                if done[row] is not None:
                    continue  # frozen: whatever a finished row computes is never read
                if token == tokenizer.eos_id and not params.ignore_eos:
                    finish(row, STOP_EOS)
                    continue
                tokens[row].append(token)
                texts[row].append(decoders[row].push(token))
                if len(tokens[row]) >= limits[row]:
                    finish(row, STOP_MAX_TOKENS)
            if all(d is not None for d in done):
                break
            if should_stop():
                for row in range(b):
                    if done[row] is None:
                        finish(row, STOP_CANCELLED)
                break
            picked = ahead if ahead is not None else advance(picked)
            pending = reader.start(picked)
    t_end = time.perf_counter()
    t_vision = t_vision or t_end
    t_prefill = t_prefill or t_end
    rows = [RowOutput(tuple(tokens[r]), "".join(texts[r]), done[r][0], done[r][1]) for r in range(b)]
    stats = BatchStats(b, max(len(p) for p in prompts), steps, t_vision - t0, t_prefill - t_vision,
                       t_end - t_prefill, t_end - t0)
    return rows, stats


def _prefill(decoder: StaticDecoder, prompts: list[list[int]], features: torch.Tensor) -> torch.Tensor:
    """Prefill every row on its own prompt -> float[B, V]: one call for all rows when their prefix lengths are equal,
    otherwise one per run of consecutive rows of equal length, each into its own rows of the cache."""
    device = features.device
    if len({len(p) for p in prompts}) == 1:
        return decoder.prefill(torch.tensor(prompts, device=device), features)
    logits, first = [], 0
    while first < len(prompts):
        stop = first + 1
        while stop < len(prompts) and len(prompts[stop]) == len(prompts[first]):
            stop += 1
        ids = torch.tensor(prompts[first:stop], device=device)  # long[n, T]
        logits.append(decoder.prefill_rows(first, ids, features[first:stop]))
        first = stop
    return torch.cat(logits)


class Loaded(NamedTuple):
    """One image ready for `BatchRunner.run_loaded` (a plain (name, image, error) triple works too)."""
    name: str
    image: PreparedImage | None  # None when `error` says why there is none
    error: str | None
    prompt: str | None = None  # this row's prompt; None: the runner's


class BatchRunner:
    """Image paths in, result rows out, on a loaded Engine: the CLI's, the app's and Ray's loop.

    One prompt for every row, or one per row (`run(..., prompts=...)`, a `Loaded.prompt`): rows of different
    prompts share a batch, sorted by prefix length inside it so that equal lengths prefill together, and are
    yielded in the order given. A path that cannot be read, or a row whose prompt does not fit the model's
    context, becomes a row with its error and the rest go on. Out of device memory, the batch is split in half and
    retried (and later batches stay at the smaller size); a single image that still does not fit gets an error
    row. Images for the next batch are decoded on a thread while the current one generates.
    """

    def __init__(self, engine, prompt: str | None, params: SamplingParams, batch_size: int | None = None,
                 prompts: Iterable[str] = ()):
        """`prompt`: the rows' prompt unless a row brings its own; None when every row does. `prompts`: the other
        prompts rows will bring, checked against the context now (a ContextError before any allocation) and
        counted in the automatic batch size and the cache length. batch_size None: the largest that fits the
        device's free memory (see `auto_batch_size`)."""
        self.engine, self.prompt, self.params = engine, prompt, params
        self._ids: dict[str, list[int]] = {}
        known = ([prompt] if prompt is not None else []) + list(prompts)
        if not known:
            raise ValueError("a BatchRunner needs a prompt, or the prompts its rows will bring")
        self._longest = max(len(self.prompt_ids(p)) for p in known)  # refused before any allocation
        self.batch_size = batch_size or auto_batch_size(engine, self._longest, params.max_new_tokens)
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        self.last_stats: BatchStats | None = None
        # Static decoders by row count, made once per run: every full batch reuses one cache (and on CUDA one
        # captured graph); only a smaller last batch needs a second. Dropped with the runner.
        self._decoders: dict[int, StaticDecoder] = {}

    def prompt_ids(self, prompt: str) -> list[int]:
        """A prompt's ids (image tokens included), tokenized once; a ContextError if it does not fit with
        max_new_tokens."""
        if (ids := self._ids.get(prompt)) is None:
            ids = self.engine.prompt_ids(prompt)
            self.engine.check_fits(len(ids), self.params.max_new_tokens)
            self._ids[prompt] = ids
        return ids

    def run(self, paths: Sequence[str], should_stop: Callable[[], bool] = lambda: False,
            prompts: Sequence[str | None] | None = None) -> Iterator[Row]:
        """Rows in the order of `paths`; `prompts`, one per path, gives each row its own (None: the runner's).
        After a cancel, the rows of the unfinished batch are not yielded (they have no complete answer), so a
        resumed run does them again."""
        if prompts is None:
            prompts = [None] * len(paths)
        elif len(prompts) != len(paths):
            raise ValueError(f"{len(paths)} paths and {len(prompts)} prompts: give one prompt per path")
        jobs = list(zip(paths, prompts))
        chunks = [jobs[i:i + self.batch_size] for i in range(0, len(jobs), self.batch_size)]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-images") as pool:
            pending = pool.submit(self._load, chunks[0]) if chunks else None
            for i in range(len(chunks)):
                loaded = pending.result()
                pending = pool.submit(self._load, chunks[i + 1]) if i + 1 < len(chunks) else None
                if should_stop():
                    return
                rows = self.run_loaded(loaded, should_stop)
                if rows is None:
                    return
                yield from rows

    def run_chunk(self, paths: Sequence[str], should_stop: Callable[[], bool] = lambda: False) -> list[Row] | None:
        """One batch's worth of paths -> its rows, or None if cancelled (the app runs one chunk per call)."""
        return self.run_loaded(self._load([(p, None) for p in paths]), should_stop)

    def _load(self, jobs: Sequence[tuple[str, str | None]]) -> list[Loaded]:
        return [self.prepare(path, path, prompt) for path, prompt in jobs]

    def prepare(self, name: str, source, prompt: str | None = None) -> Loaded:
        """Decode and preprocess one image (a path, bytes or a PIL image) -> Loaded(name, image, None, prompt) or
        Loaded(name, None, error, prompt): what `run_loaded` takes."""
        try:
            return Loaded(name, self.engine.prepare_image(source), None, prompt)
        except VlmError as e:
            return Loaded(name, None, str(e), prompt)
        except Exception as e:  # noqa: BLE001 - one odd file must not end a thousand-image run
            return Loaded(name, None, f"{name} could not be read ({type(e).__name__}: {e})", prompt)

    def run_loaded(self, loaded: Sequence[Loaded | tuple], should_stop: Callable[[], bool] = lambda: False
                   ) -> list[Row] | None:
        """Loaded images (or (path, PreparedImage | None, error) triples) -> rows in the same order, or None if
        cancelled."""
        rows: dict[int, Row] = {}
        good = []
        for i, item in enumerate(loaded):
            name, image, error, prompt = Loaded(*item)
            prompt = self.prompt if prompt is None else prompt
            if prompt is None:
                raise ValueError(f"{name} has no prompt, and this runner has none for every row")
            if error is None:
                try:
                    good.append((i, name, image, prompt, self.prompt_ids(prompt)))
                except ContextError as e:
                    error = str(e)
            if error is not None:
                rows[i] = Row(name, prompt, error=error)
        good.sort(key=lambda job: len(job[4]))  # stable: equal prefix lengths side by side, prefilled together
        for start in range(0, len(good), self.batch_size):
            part = good[start:start + self.batch_size]
            done = self._generate(part, should_stop)
            if done is None:
                return None
            rows.update(done)
        return [rows[i] for i in range(len(loaded))]

    def _generate(self, part, should_stop) -> dict[int, Row] | None:
        t0 = time.perf_counter()
        need = max(len(ids) for *_, ids in part) + self.params.max_new_tokens
        try:
            pixels = torch.stack([image.pixels for _, _, image, _, _ in part])
            outputs, self.last_stats = generate_batch(self.engine.model, self.engine.tokenizer,
                                                      [ids for *_, ids in part], pixels, self.params, should_stop,
                                                      started_at=t0, decoder=self._decoder(len(part), need))
        except torch.OutOfMemoryError:
            self._decoders.clear()
            self.engine.free_memory()
            if len(part) == 1:
                i, path, _, prompt, _ = part[0]
                return {i: Row(path, prompt, error=(
                    f"{self.engine.device_description()} ran out of memory for this image; use fewer new tokens, "
                    "a smaller model or the CPU"))}
            self.batch_size = max(1, len(part) // 2)
            log.warning("out of memory at batch size %d; continuing at %d", len(part), self.batch_size)
            first = self._generate(part[:self.batch_size], should_stop)
            rest = self._generate(part[self.batch_size:], should_stop) if first is not None else None
            return None if rest is None else {**first, **rest}
        if any(o.stop_reason == STOP_CANCELLED for o in outputs):
            return None
        rows = {}
        for (i, path, image, prompt, _), out in zip(part, outputs):
            w, h = original_size(image.image)  # boxes in the file's pixels (a huge JPEG decodes reduced)
            rows[i] = Row(path, prompt, out.text, objects_from_text(out.text, w, h), len(out.token_ids),
                          round(out.seconds, 4), None, out.stop_reason)
        return rows

    def _decoder(self, rows: int, need: int) -> StaticDecoder:
        """The `rows`-row decoder, sized once for the longest prompt known (a longer one met later gets a new one)."""
        decoder = self._decoders.get(rows)
        if decoder is None or decoder.max_len < need:
            if len(self._decoders) >= 2 or decoder is not None:
                self._decoders.clear()  # batch size changed (out of memory), or a longer prompt: keep the new one
            bucket = bucket_for(max(need, self._longest + self.params.max_new_tokens))
            graphs = getattr(self.engine, "cuda_graphs", False)
            decoder = self._decoders[rows] = StaticDecoder(self.engine.model, bucket, batch=rows, graphs=graphs)
        return decoder


def auto_batch_size(engine, prompt_tokens: int, max_new_tokens: int, free_bytes: int | None = None,
                    limit: int | None = None) -> int:
    """The largest batch whose KV cache and peak activations fit the device's free memory, with a margin.

    A quarter of the free memory (at least 512 MiB) is left alone for the allocator's fragmentation, other
    programs and what this estimate misses. On the CPU the cap is 8 rows: a CPU is compute-bound from a
    few rows on (prefill does not speed up with batching), so larger batches add latency and memory, not speed.
    """
    if free_bytes is None:
        free_bytes = free_device_memory_bytes(engine.device)
    if limit is None:
        limit = 8 if engine.device.type == "cpu" else 64
    usable = free_bytes - max(free_bytes // 4, 512 << 20)
    per_row = row_bytes(engine.cfg, prompt_tokens, max_new_tokens, engine.dtype)
    return max(1, min(limit, usable // per_row))


def row_bytes(cfg, prompt_tokens: int, max_new_tokens: int, dtype: torch.dtype) -> int:
    """Device bytes one batch row needs at its peak: its KV cache plus the largest transient activations."""
    t, v = cfg.text, cfg.vision
    size = torch.tensor([], dtype=dtype).element_size()
    length = bucket_for(prompt_tokens + max_new_tokens)  # the static decoder's cache is bucketed
    kv = 2 * t.num_hidden_layers * t.num_key_value_heads * length * t.head_dim * size
    q_rows = min(prompt_tokens, 1024)  # attention runs in query chunks of 1024 (model.gemma2)
    # Prefill: the residual stream and a few of its copies, the MLP's two intermediate tensors, fp32 attention
    # scores and probabilities for one query chunk, and the last position's fp32 logits.
    prefill = (prompt_tokens * (6 * t.hidden_size + 3 * t.intermediate_size) * size
               + 2 * t.num_attention_heads * q_rows * prompt_tokens * 4 + 2 * t.vocab_size * 4)
    patches = cfg.num_image_tokens
    vision = (patches * (6 * v.hidden_size + 2 * v.intermediate_size) * size
              + 2 * v.num_attention_heads * patches * patches * 4)
    return kv + max(prefill, vision)


def free_device_memory_bytes(device: torch.device) -> int:
    """Free memory on `device` as its driver or the OS reports it."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "mps":
        return max(0, torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    try:
        import psutil  # optional: present on most machines, exact on every OS

        return psutil.virtual_memory().available
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30  # unknown OS without psutil: assume a modest 4 GiB free
