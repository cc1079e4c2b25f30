"""Reading a request body, and waiting for a running job's events while watching for the client to leave: a
client that disconnects cancels its generation (the scheduler stops its row within a token)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request

from ..runtime.scheduler import Delta, Finished
from .errors import ApiError, bad


class ClientGone(Exception):
    """The client disconnected; nothing is sent back."""


async def body_json(request: Request) -> dict:
    limit = request.app.state.max_body
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the request body is over {limit // (1 << 20)} MB: send a smaller image",
                               code="body_too_large")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone() from None
    try:
        body = json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"the body is not valid JSON ({e})") from None
    if not isinstance(body, dict):
        raise bad("the body must be a JSON object")
    return body


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def collect(request: Request, running, service) -> Finished:
    """Wait for the job's end (non-streaming); cancel it if the client leaves first."""
    watch = asyncio.ensure_future(_disconnected(request))
    done = None
    try:
        while True:
            get = asyncio.ensure_future(running.next())
            finished, _ = await asyncio.wait({get, watch}, return_when=asyncio.FIRST_COMPLETED)
            if get not in finished:
                get.cancel()
                running.ticket.cancel()
                raise ClientGone()
            event = get.result()
            if isinstance(event, Finished):
                done = event
                return event
    finally:
        watch.cancel()
        service.record(running, done)


async def stream_events(running, service) -> AsyncIterator[str | Finished | ApiError]:
    """Text deltas, then the Finished event (or an ApiError, once the stream has begun and a status can no longer
    say it). When the client leaves, Starlette cancels the response's iterator: the `finally` cancels the job."""
    done = None
    try:
        while True:
            try:
                event = await running.next()
            except ApiError as e:
                yield e
                return
            if isinstance(event, Delta):
                if event.text:
                    yield event.text
            elif isinstance(event, Finished):
                done = event
                yield event
                return
    finally:
        if done is None:
            running.ticket.cancel()
        service.record(running, done)
