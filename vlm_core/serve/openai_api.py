"""OpenAI-compatible: GET /v1/models, POST /v1/chat/completions (streaming as server-sent events).

Extensions: `objects` (boxes and masks) at the top level of the response and in the last stream chunk; `raw: true`
in the body sends the prompt verbatim (the official client passes it with extra_body).
"""

from __future__ import annotations

import json
import time
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from .errors import ApiError, bad
from .images import data_url_bytes
from .jobs import Job, Running, finish_reason, sampling, stop_strings
from .runner import body_json, collect, stream_events

_NAMES = {"max_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
          "seed": "seed"}


def error_body(e: ApiError) -> dict:
    return {"error": {"message": e.message, "type": e.type, "param": e.param, "code": e.code}}


async def list_models(request: Request) -> JSONResponse:
    service = request.app.state.service
    data = [{"id": m.name, "object": "model", "created": 0, "owned_by": m.name.split("/")[0] if "/" in m.name
             else "local"} for m in service.models.installed()]
    return JSONResponse({"object": "list", "data": data})


def parse(body: dict, service) -> tuple[Job, bool, bool]:
    """-> (job, stream, include_usage)."""
    model = service.models.find(body.get("model"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("messages must be a non-empty list", "messages")
    text, image, image_param = None, None, "messages"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad("each message must be an object with a role", f"messages[{i}]")
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if content is None:
            parts = []
        if not isinstance(parts, list):
            raise bad("content must be a string or a list of content parts", f"messages[{i}].content")
        texts = []
        for j, part in enumerate(parts):
            where = f"messages[{i}].content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise bad("a text part needs a string `text`", where)
                texts.append(part["text"])
            elif kind == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                image, image_param = data_url_bytes(url, f"{where}.image_url"), f"{where}.image_url"
            else:
                raise bad("content parts must be of type text or image_url", where)
        if message["role"] == "user":
            text = " ".join(texts)  # the last user message's text is the question
    if text is None:
        raise bad("there is no user message", "messages")
    if body.get("n", 1) != 1:
        raise bad("n must be 1: PaliGemma gives one answer per request", "n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    names = dict(_NAMES, max_tokens="max_completion_tokens" if "max_completion_tokens" in body else "max_tokens")
    params = sampling(max_tokens, body.get("temperature"), body.get("top_p"), body.get("top_k"), body.get("seed"),
                      names)
    raw = body.get("raw", False)
    stream = body.get("stream", False)
    options = body.get("stream_options") or {}
    if not isinstance(raw, bool) or not isinstance(stream, bool) or not isinstance(options, dict):
        raise bad("raw and stream must be booleans, stream_options an object")
    job = Job(model, image, image_param, text, raw, params, stop_strings(body.get("stop"), "stop"))
    return job, stream, bool(options.get("include_usage", False))


async def chat_completions(request: Request):
    service = request.app.state.service
    body = await body_json(request)
    job, stream, include_usage = parse(body, service)
    running = await service.start(job, request)
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if not stream:
        done = await collect(request, running, service)
        usage = _usage(done)
        payload = {"id": ident, "object": "chat.completion", "created": created, "model": job.model.name,
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": done.text},
                                "logprobs": None, "finish_reason": finish_reason(done)}],
                   "usage": usage}
        if (objects := await service.objects(done)) is not None:
            payload["objects"] = objects
        return JSONResponse(payload)

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": job.model.name,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async def sse(running: Running):
        yield chunk({"role": "assistant", "content": ""})
        async for event in stream_events(running, service):
            if isinstance(event, str):
                yield chunk({"content": event})
                continue
            if isinstance(event, ApiError):
                yield f"data: {json.dumps(error_body(event))}\n\n"
                break
            extra = {}
            if (objects := await service.objects(event)) is not None:
                extra["objects"] = objects
            yield chunk({}, finish_reason(event), **extra)
            if include_usage:
                usage = {"id": ident, "object": "chat.completion.chunk", "created": created,
                         "model": job.model.name, "choices": [], "usage": _usage(event)}
                yield f"data: {json.dumps(usage)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(sse(running), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _usage(done) -> dict:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": len(done.token_ids),
            "total_tokens": done.prompt_tokens + len(done.token_ids)}
