"""What both APIs share once a request is parsed: a `Job` (model, image, text, sampling) -> a scheduler ticket whose
events arrive on an asyncio queue, and the counters and log line per request."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import anyio

from ..runtime.generate import STOP_MAX_TOKENS, SamplingParams
from ..runtime.image import load_image
from ..runtime.prompt_rule import PromptError, typed_prompt
from ..runtime.scheduler import Failed, Finished, QueueFull, Request, SchedulerClosed, Ticket
from . import images
from .errors import ApiError, bad
from .models import Models, ServedModel
from .objects import objects_for

DEFAULT_MAX_TOKENS = 128  # the window's default answer length


@dataclass
class Job:
    model: ServedModel
    image: bytes | None  # encoded
    image_param: str  # where the image came from in the request, for error messages
    text: str
    raw: bool
    params: SamplingParams
    stop: tuple[str, ...] = ()


class Running:
    """A submitted job: its ticket, its events as they come, and the image its boxes are scaled to."""

    def __init__(self, ticket: Ticket, events: asyncio.Queue, prompt: str, note: dict):
        self.ticket, self.events, self.prompt = ticket, events, prompt
        self.note = note  # the request's scope state: what the access log line adds (tokens, prompt)
        self.t0 = time.perf_counter()

    async def next(self):
        event = await self.events.get()
        if isinstance(event, Failed):
            if event.not_found:  # a model this server cannot switch to
                raise ApiError(404, event.message, "model", "model_not_found")
            raise ApiError(503, event.message)
        return event


class Service:
    """The scheduler, the model names, the mask decoder and what the log says, for both APIs."""

    def __init__(self, scheduler, models: Models, mask_decoder=None, log_prompts: bool = False, on_answer=None):
        """on_answer(prompt, Finished): called on the event loop for every answered request (the desktop app
        keeps them in History when asked to)."""
        self.scheduler, self.models, self.mask_decoder, self.log_prompts = scheduler, models, mask_decoder, log_prompts
        self.on_answer = on_answer
        self.requests = 0  # answered generation requests, for the status line

    async def start(self, job: Job, request) -> Running:
        if job.image is None:
            raise bad("PaliGemma needs an image to answer about, and this request has none: add one (OpenAI: an image_url "
                      "content part with a data: URL; Ollama: `images`, base64)", job.image_param)
        try:
            prompt = typed_prompt(job.text, raw=job.raw)
        except PromptError as e:
            raise bad(f"the prompt is empty: {e}") from None
        scheduler = self.scheduler
        engine = scheduler.engine
        if engine is not None and scheduler.model_key == job.model.key:
            image = await anyio.to_thread.run_sync(images.decode, engine, job.image, job.image_param)
        else:  # another model's size: decode (and check) here, resize on the worker once that model is loaded
            image = await anyio.to_thread.run_sync(_decode_only, job.image, job.image_param)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        key = None if job.model.key == scheduler.model_key else job.model.key
        try:
            ticket = scheduler.submit(Request(image, prompt, job.params, job.stop, model=key),
                                      on_event=lambda e: loop.call_soon_threadsafe(queue.put_nowait, e))
        except QueueFull as e:
            raise ApiError(503, f"the server is busy: {e}", code="queue_full", retry_after=1) from None
        except SchedulerClosed as e:
            raise ApiError(503, str(e), retry_after=5) from None
        return Running(ticket, queue, prompt, request.scope.setdefault("state", {}))

    async def objects(self, done: Finished) -> list[dict] | None:
        """Boxes and masks (the mask decoder runs off the event loop)."""
        if "<loc" not in done.text:
            return None
        return await anyio.to_thread.run_sync(objects_for, done.text, done.image, self.mask_decoder)

    def record(self, running: Running, done: Finished | None) -> None:
        """What the request's log line adds: tokens and why it stopped; the prompt only with --log-prompts."""
        self.requests += 1
        running.note["tokens"] = (f"{done.prompt_tokens}+{len(done.token_ids)} tokens, {done.stop_reason}" if done
                                  else "cancelled (client left)")
        if self.log_prompts:
            running.note["prompt"] = running.prompt
        if self.on_answer is not None and done is not None:
            self.on_answer(running.prompt, done)


def _decode_only(data: bytes, param: str):
    try:
        return load_image(data)
    except Exception as e:  # noqa: BLE001 - any decoder failure is the client's bad image
        raise bad(f"the image could not be read: {e}", param) from None


def finish_reason(done: Finished) -> str:
    return "length" if done.stop_reason == STOP_MAX_TOKENS else "stop"


def sampling(max_tokens, temperature, top_p, top_k, seed, param_names: dict[str, str]) -> SamplingParams:
    """Validated SamplingParams; a wrong type or value is a 400 naming the field as the client spelled it."""
    def number(value, name, kind=(int, float)):
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, kind):
            raise bad(f"{param_names[name]} must be a {'integer' if kind is int else 'number'}", param_names[name])
        return value

    max_tokens = number(max_tokens, "max_tokens", int)
    temperature = number(temperature, "temperature")
    top_p = number(top_p, "top_p")
    top_k = number(top_k, "top_k", int)
    seed = number(seed, "seed", int)
    if max_tokens is not None and not 1 <= max_tokens <= 8192:
        raise bad(f"{param_names['max_tokens']} must be between 1 and 8192", param_names["max_tokens"])
    if temperature is not None and not 0 <= temperature <= 2:
        raise bad("temperature must be between 0 and 2", param_names["temperature"])
    if top_p is not None and not 0 < top_p <= 1:
        raise bad("top_p must be in (0, 1]", param_names["top_p"])
    if top_k is not None and top_k < 0:
        raise bad("top_k must be >= 0", param_names["top_k"])
    return SamplingParams(max_new_tokens=max_tokens or DEFAULT_MAX_TOKENS, temperature=float(temperature or 0.0),
                          top_p=float(top_p if top_p is not None else 1.0), top_k=top_k or 0, seed=seed)


def stop_strings(value, param: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value) or len(value) > 16:
        raise bad("stop must be a string or a list of up to 16 strings", param)
    return tuple(s for s in value if s)
