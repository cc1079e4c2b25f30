"""The scheduler: one worker thread owns the engine; requests queue, run batched, and stream back per request.

    scheduler = Scheduler(engine, max_batch=8)
    ticket = scheduler.submit(Request(image, "caption en", SamplingParams()))
    for event in ticket:          # Delta per piece of text, then one Finished (or Failed)
        ...
    ticket.cancel()               # from any thread: the row stops within a token

Continuous batching on the static decode step (decode_step.py, one cache position per row): whatever is queued when
the engine frees up starts as one batch of up to `max_batch` rows, each with its own prompt, image and limits; a
request that arrives while a batch runs takes a finished row at the next token (`prefill_rows`) if its prefix and
max_new_tokens fit that batch's cache, and otherwise waits for the batch to end. Greedy rows equal their
one-at-a-time answers; a seeded row samples from its own generator, as a batch-1 run does.

Priority: a lower number goes first (PRIORITY_WINDOW for the person at the desktop window, PRIORITY_API for
clients), then first come, first served. Requests may name another installed model (`Request.model`): the
scheduler then finishes the running batch, frees the engine and loads that model through `loader` (one model in
memory at a time, so the window and the server never hold two copies of the weights).

No Qt and no asyncio here: callers consume a ticket by iterating it (blocking) or by `on_event`, called on the
worker thread (an asyncio caller hands it to its loop with call_soon_threadsafe).

Limitations, stated rather than hidden: prefill runs row by row (a CPU gains nothing from batching it; a GPU
would), and a batch's cache is sized when it starts, so a much longer request waits for the batch to end.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from ..errors import VlmError
from .decode_step import StaticDecoder, bucket_for, make_generator, sample_tokens
from .generate import STOP_CANCELLED, STOP_EOS, STOP_MAX_TOKENS, SamplingParams
from .tokenizer import StreamDecoder

log = logging.getLogger(__name__)

PRIORITY_WINDOW, PRIORITY_API = 0, 10
STOP_STRING = "stop"  # a request's stop string was written (OpenAI's `stop`, Ollama's options.stop)
_DECODERS_KEPT = 3  # (rows, bucket) static caches kept between batches


class QueueFull(VlmError):
    """More requests are waiting than the scheduler takes; retry after a moment (HTTP 503 + Retry-After)."""


class SchedulerClosed(VlmError):
    """The scheduler is shutting down and takes no new requests."""


@dataclass
class Request:
    image: object  # a PreparedImage for the loaded model, or anything Engine.prepare_image takes
    prompt: str  # sent as is: the prompt rule (prompt_rule.py) is the caller's
    params: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()  # generation ends before the first of these strings is written
    priority: int = PRIORITY_API
    model: str | None = None  # None: whatever is loaded; else a key `loader` understands


@dataclass(frozen=True)
class Delta:
    text: str  # new text (held back while it could still become a stop string)
    token_ids: tuple[int, ...]


@dataclass(frozen=True)
class Finished:
    text: str
    token_ids: tuple[int, ...]
    stop_reason: str  # eos | max_new_tokens | stop | cancelled
    prompt_tokens: int  # image tokens included
    queued_s: float  # submit to the start of its prefill (a model load included)
    prefill_s: float  # its vision tower, prefill and first token
    decode_s: float
    load_s: float  # loading a model for this request, 0 if it was loaded
    image: object  # the PreparedImage the answer is about (boxes are scaled to its original size)


@dataclass(frozen=True)
class Failed:
    message: str
    not_found: bool = False  # the request named a model that is not installed


Event = Delta | Finished | Failed


class Ticket:
    """One request's handle: iterate it for its events (blocking), or pass `on_event` to submit."""

    def __init__(self, request: Request, seq: int, on_event: Callable[[Event], None] | None):
        self.request, self.seq = request, seq
        self.submitted = time.perf_counter()
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._on_event = on_event
        self._cancelled = threading.Event()
        self.done = threading.Event()
        self.prompt_ids: tuple[str | None, list[int]] | None = None  # (model key, ids): tokenized by the worker
        self._drop: Callable[["Ticket"], None] = lambda ticket: None

    def cancel(self) -> None:
        """Stop this request: a queued one leaves the queue at once, a running one within a token."""
        self._cancelled.set()
        self._drop(self)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def _emit(self, event: Event) -> None:
        if self._on_event is not None:
            self._on_event(event)
        else:
            self._events.put(event)
        if not isinstance(event, Delta):
            self.done.set()

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self._events.get()
            yield event
            if not isinstance(event, Delta):
                return

    def result(self) -> Finished | Failed:
        """Wait for the end; the last event."""
        last = None
        for last in self:
            pass
        return last

    def __lt__(self, other: "Ticket") -> bool:  # heap order: priority, then arrival
        return (self.request.priority, self.seq) < (other.request.priority, other.seq)


class _Row:
    """A request decoding in a batch row: its text, its limits and its sampler."""

    def __init__(self, ticket: Ticket, image, prompt_ids: list[int], tokenizer, device, t_start: float,
                 load_s: float):
        self.ticket, self.image, self.prompt_tokens = ticket, image, len(prompt_ids)
        params = ticket.request.params
        self.params, self.stop = params, ticket.request.stop
        self.generator = make_generator(params.seed, device)
        self.text_decoder = StreamDecoder(tokenizer)
        self.ids: list[int] = []
        self.text, self.sent = "", 0  # all text so far; how much of it went out as deltas
        self.t_start, self.t_first, self.load_s = t_start, None, load_s

    def hold_back(self) -> int:
        """Characters not sent yet because they could be the start of a stop string."""
        return max((len(s) - 1 for s in self.stop), default=0)


class Scheduler:
    def __init__(self, engine, max_batch: int = 8, max_queue: int = 64, loader: Callable[[str], object] | None = None,
                 model_key: str | None = None, gate=None):
        """gate: an EngineGate shared with other users of `engine` (the desktop window); each step takes it."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.engine, self.model_key, self.loader = engine, model_key, loader
        self.max_batch, self.max_queue = max_batch, max_queue
        self._step = gate.step if gate is not None else nullcontext
        self._heap: list[Ticket] = []
        self._seq = itertools.count()
        self._lock = threading.Condition()
        self._closing = False
        self._decoders: dict[tuple[int, int], StaticDecoder] = {}
        self.busy_rows = 0  # rows decoding now (read from other threads for /api/ps and the status bar)
        self.served = 0
        self._thread = threading.Thread(target=self._work, name="scheduler", daemon=True)
        self._thread.start()

    # -- the callers' side, any thread --

    def submit(self, request: Request, on_event: Callable[[Event], None] | None = None) -> Ticket:
        with self._lock:
            if self._closing:
                raise SchedulerClosed("the server is shutting down")
            if len(self._heap) >= self.max_queue:
                raise QueueFull(f"{len(self._heap)} requests are already waiting; retry in a moment")
            ticket = Ticket(request, next(self._seq), on_event)
            ticket._drop = self._drop
            heapq.heappush(self._heap, ticket)
            self._lock.notify()
        return ticket

    @property
    def queued(self) -> int:
        return len(self._heap)

    def close(self, timeout: float = 5.0) -> None:
        """Take no more requests, cancel what is queued or running, and wait for the worker (at most `timeout`)."""
        with self._lock:
            self._closing = True
            waiting, self._heap = self._heap, []
            self._lock.notify()
        for ticket in waiting:
            ticket._emit(Failed("the server is shutting down"))
        self._thread.join(timeout)

    # -- the worker thread --

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._heap and not self._closing:
                    self._lock.wait()
                if self._closing:
                    return
            try:
                self._run_batch()
            except Exception:  # noqa: BLE001 - a bug in one batch must not kill the server's only worker
                log.exception("scheduler: a batch failed")

    def _take(self, room: float | None = None) -> Ticket | None:
        """The queue's first request (priority, then arrival). With `room` (joining a running batch), only if it is
        for the loaded model and needs at most `room` cache positions: otherwise it waits for the batch to drain,
        so a long request or a model switch is never starved by a stream of short ones."""
        with self._lock:
            if not self._heap:
                return None
            ticket = self._heap[0]
            if room is not None and (ticket.request.model not in (None, self.model_key) or self._need(ticket) > room):
                return None
            heapq.heappop(self._heap)
            return ticket

    def _drop(self, ticket: Ticket) -> None:
        """A queued request was cancelled: it leaves the queue now (a running one stops at its next token)."""
        with self._lock:
            if ticket in self._heap:
                self._heap.remove(ticket)
                heapq.heapify(self._heap)
            else:
                return
        ticket._emit(Finished("", (), STOP_CANCELLED, 0, time.perf_counter() - ticket.submitted, 0.0, 0.0, 0.0,
                              None))

    def _prompt_ids(self, ticket: Ticket) -> list[int]:
        """The request's prompt tokens for the loaded model (image tokens included), tokenized once."""
        if ticket.prompt_ids is None or ticket.prompt_ids[0] != self.model_key:
            ticket.prompt_ids = (self.model_key, self.engine.prompt_ids(ticket.request.prompt))
        return ticket.prompt_ids[1]

    def _need(self, ticket: Ticket) -> int:
        """Cache positions the request needs: its prefix and max_new_tokens."""
        return len(self._prompt_ids(ticket)) + ticket.request.params.max_new_tokens

    def _switch_model(self, key: str) -> float:
        """Free the loaded model, then load `key` (never two in memory); if that fails, load the old one back."""
        t0, previous = time.perf_counter(), self.model_key
        self._decoders.clear()
        if self.engine is not None:
            self.engine.free_memory()
        self.engine = None
        try:
            self.engine, self.model_key = self.loader(key), key
        except Exception:
            if previous is not None:
                self.engine = self.loader(previous)
            raise
        return time.perf_counter() - t0

    @torch.inference_mode()
    def _run_batch(self) -> None:
        first = self._take()
        if first is None:
            return
        load_s = 0.0
        if first.request.model not in (None, self.model_key):
            if self.loader is None:
                # No loader: the desktop app's API, which answers with the model its window loaded and never swaps
                # it out from under the person at the window.
                first._emit(Failed("that model is installed but not loaded, and this server does "
                                   "not switch models: it answers with the model the desktop app's window has loaded "
                                   "(ask for that one, or omit \"model\"); to use this one, load it in the window "
                                   "(Models)", not_found=True))
                return
            try:
                load_s = self._switch_model(first.request.model)
            except VlmError as e:
                first._emit(Failed(str(e)))
                return
        if self.engine is None:
            first._emit(Failed("no model is loaded (the last load failed); restart the server"))
            return
        tickets = [first]
        while len(tickets) < self.max_batch and (t := self._take(room=float("inf"))) is not None:
            tickets.append(t)
        engine = self.engine
        bucket = bucket_for(max(self._need(t) for t in tickets))
        decoder = self._decoder(len(tickets), bucket)
        rows: list[_Row | None] = [None] * decoder.batch
        picked = torch.zeros(decoder.batch, dtype=torch.long, device=engine.device)
        for slot in range(decoder.batch):
            decoder.release(slot)
        for slot, ticket in enumerate(tickets):
            with self._step():
                rows[slot] = self._admit(decoder, slot, ticket, picked, load_s if ticket is first else 0.0)
        self.busy_rows = sum(r is not None for r in rows)
        while any(r is not None for r in rows):
            with self._step():  # the gate is let go between tokens: the window's work goes first
                decoder, picked = self._decode_step(decoder, rows, picked)
        self.busy_rows = 0

    def _decode_step(self, decoder: StaticDecoder, rows: list, picked: torch.Tensor):
        """One token for every live row, then queued requests take the free rows (one gate step)."""
        host = picked.tolist()  # the one host sync per token
        for slot, row in enumerate(rows):
            if row is not None and self._accept(row, host[slot]):
                decoder.release(slot)
                rows[slot] = None
        live = [s for s, r in enumerate(rows) if r is not None]
        if live:
            logits = decoder.step(picked)
            picked = self._sample(logits, rows)
        # Newly queued requests take the free rows (the stretch: no waiting for the whole batch to end); with
        # none free, the batch grows (its rows' caches copied) up to max_batch.
        free = [s for s, r in enumerate(rows) if r is None]
        if not free and decoder.batch < self.max_batch and self.queued and not self._closing:
            decoder, picked, free = self._grow(decoder, picked, rows)
        for slot in free:
            if self._closing or (ticket := self._take(room=decoder.max_len)) is None:
                break
            rows[slot] = self._admit(decoder, slot, ticket, picked, 0.0)
        self.busy_rows = sum(r is not None for r in rows)
        return decoder, picked

    def _grow(self, decoder: StaticDecoder, picked: torch.Tensor, rows: list):
        """Double the batch's rows (at most max_batch) for requests that arrived while it runs."""
        batch = min(self.max_batch, 2 * decoder.batch)
        grown = decoder.grown(batch)
        self._decoders.pop((batch, decoder.max_len), None)
        self._decoders[(batch, decoder.max_len)] = grown
        while len(self._decoders) > _DECODERS_KEPT:
            self._decoders.pop(next(iter(self._decoders)))
        more = torch.zeros(batch, dtype=picked.dtype, device=picked.device)
        more[:decoder.batch] = picked
        rows.extend([None] * (batch - decoder.batch))
        return grown, more, list(range(decoder.batch, batch))

    def _decoder(self, rows: int, bucket: int) -> StaticDecoder:
        key = (rows, bucket)
        if (decoder := self._decoders.pop(key, None)) is None:
            decoder = StaticDecoder(self.engine.model, bucket, batch=rows,
                                    graphs=getattr(self.engine, "cuda_graphs", False))
        self._decoders[key] = decoder  # most recently used last
        while len(self._decoders) > _DECODERS_KEPT:
            self._decoders.pop(next(iter(self._decoders)))
        return decoder

    def _admit(self, decoder: StaticDecoder, slot: int, ticket: Ticket, picked: torch.Tensor,
               load_s: float) -> _Row | None:
        """Prefill `ticket` into row `slot`; its first token goes into picked[slot]. None if it ended already."""
        engine, t0 = self.engine, time.perf_counter()
        if ticket.cancelled or self._closing:  # closing: the engine may be about to be freed
            ticket._emit(Finished("", (), STOP_CANCELLED, 0, t0 - ticket.submitted, 0.0, 0.0, load_s, None))
            return None
        try:
            image = engine.prepare_image(ticket.request.image)
            prompt_ids = self._prompt_ids(ticket)
            features = engine.image_features(image)
            logits = decoder.prefill_rows(slot, torch.tensor([prompt_ids], device=engine.device), features)
        except torch.OutOfMemoryError:
            engine.free_memory()
            ticket._emit(Failed(f"{engine.device_description()} ran out of memory for this request; retry with "
                                "fewer new tokens"))
            return None
        except (VlmError, ValueError) as e:
            ticket._emit(Failed(str(e)))
            return None
        row = _Row(ticket, image, prompt_ids, engine.tokenizer, engine.device, t0, load_s)
        picked[slot] = sample_tokens(logits, row.params, row.generator)[0]
        return row

    def _sample(self, logits: torch.Tensor, rows: list[_Row | None]) -> torch.Tensor:
        """float[B, V] -> long[B]: one argmax for the batch when every live row is greedy, else row by row."""
        live = [r for r in rows if r is not None]
        if all(r.params.greedy for r in live):
            return torch.argmax(logits, dim=-1)
        picks = torch.argmax(logits, dim=-1)
        for slot, row in enumerate(rows):
            if row is not None and not row.params.greedy:
                picks[slot] = sample_tokens(logits[slot:slot + 1], row.params, row.generator)[0]
        return picks

    def _accept(self, row: _Row, token: int) -> bool:
        """Take the row's next token; True when the row has finished (its Finished event is sent)."""
        if row.ticket.cancelled or self._closing:
            return self._finish(row, STOP_CANCELLED)
        if token == self.engine.tokenizer.eos_id and not row.params.ignore_eos:
            return self._finish(row, STOP_EOS)
        if row.t_first is None:
            row.t_first = time.perf_counter()
        row.ids.append(token)
        row.text += row.text_decoder.push(token)
        if row.stop:
            hits = [i for s in row.stop if (i := row.text.find(s, max(0, row.sent - len(s)))) >= 0]
            if hits:
                row.text = row.text[:min(hits)]
                return self._finish(row, STOP_STRING)
        if len(row.ids) >= row.params.max_new_tokens:
            return self._finish(row, STOP_MAX_TOKENS)
        upto = len(row.text) - row.hold_back()
        if upto > row.sent:
            row.ticket._emit(Delta(row.text[row.sent:upto], (token,)))
            row.sent = upto
        return False

    def _finish(self, row: _Row, reason: str) -> bool:
        if reason != STOP_STRING:
            row.text += row.text_decoder.flush()
        if len(row.text) > row.sent:
            row.ticket._emit(Delta(row.text[row.sent:], ()))
        now = time.perf_counter()
        first = row.t_first or now
        row.ticket._emit(Finished(row.text, tuple(row.ids), reason, row.prompt_tokens,
                                  row.t_start - row.ticket.submitted, first - row.t_start, now - first, row.load_s,
                                  row.image))
        self.served += 1
        return True
