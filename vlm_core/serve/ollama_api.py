"""Ollama-compatible: /api/version, /api/tags, /api/show, /api/ps, /api/generate and /api/chat.

Both generation endpoints stream NDJSON by default, as Ollama does, or answer one object with "stream": false; the
final object carries done_reason, prompt_eval_count, eval_count and the *_duration fields in nanoseconds, and, as
an extension, `objects` (boxes and masks). Errors are Ollama's {"error": "..."}.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from .. import __version__
from .errors import ApiError, bad
from .images import b64_bytes
from .jobs import Job, finish_reason, sampling, stop_strings
from .runner import body_json, collect, stream_events

_NAMES = {"max_tokens": "options.num_predict", "temperature": "options.temperature", "top_p": "options.top_p",
          "top_k": "options.top_k", "seed": "options.seed"}


def error_body(e: ApiError) -> dict:
    return {"error": e.message}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _details(model) -> dict:
    return {"parent_model": "", "format": "safetensors", "family": "paligemma", "families": ["paligemma"],
            "parameter_size": "", "quantization_level": ""}


def _entry(model) -> dict:
    size = sum(p.stat().st_size for p in model.path.glob("*.safetensors"))
    return {"name": model.name, "model": model.name, "modified_at": _now(), "size": size,
            "digest": "", "details": _details(model)}


async def version(request: Request) -> JSONResponse:
    return JSONResponse({"version": __version__})


async def tags(request: Request) -> JSONResponse:
    return JSONResponse({"models": [_entry(m) for m in request.app.state.service.models.installed()]})


async def show(request: Request) -> JSONResponse:
    body = await body_json(request)
    model = request.app.state.service.models.find(body.get("model", body.get("name")))
    config = json.loads((model.path / "config.json").read_text(encoding="utf-8"))
    return JSONResponse({"modelfile": "", "parameters": "", "template": "{{ .Prompt }}", "details": _details(model),
                         "model_info": {"general.architecture": "paligemma", **{
                             f"paligemma.{k}": v for k, v in config.items() if isinstance(v, (int, float, str))}},
                         "capabilities": ["completion", "vision"], "modified_at": _now()})


async def ps(request: Request) -> JSONResponse:
    service = request.app.state.service
    engine, key = service.scheduler.engine, service.scheduler.model_key
    loaded = [m for m in service.models.installed() if m.key == key] if engine is not None else []
    models = []
    for m in loaded:
        entry = _entry(m)
        entry.update(expires_at="9999-12-31T23:59:59Z",
                     size_vram=engine.weight_bytes() if engine.device.type != "cpu" else 0)
        models.append(entry)
    return JSONResponse({"models": models})


def _options(body: dict) -> tuple:
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise bad("options must be an object", "options")
    params = sampling(options.get("num_predict"), options.get("temperature"), options.get("top_p"),
                      options.get("top_k"), options.get("seed"), _NAMES)
    return params, stop_strings(options.get("stop"), "options.stop")


def _images(value, param: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad(f"{param} must be a list of base64 strings", param)
    for v in value:
        if v.split(":", 1)[0].lower() in ("http", "https", "file", "ftp"):
            raise bad("remote image URLs are not fetched: send the image itself, base64-encoded", param)
    return b64_bytes(value[-1], param) if value else None


def _stream_flag(body: dict) -> bool:
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise bad("stream must be a boolean", "stream")
    return stream


async def generate(request: Request):
    service = request.app.state.service
    body = await body_json(request)
    model = service.models.find(body.get("model"))
    prompt, raw = body.get("prompt", ""), body.get("raw", False)
    if not isinstance(prompt, str) or not isinstance(raw, bool):
        raise bad("prompt must be a string and raw a boolean", "prompt")
    stream = _stream_flag(body)
    image = _images(body.get("images"), "images")
    if image is None and not prompt.strip():  # Ollama's way to load a model: answer at once, it is loaded on use
        return JSONResponse({"model": model.name, "created_at": _now(), "response": "", "done": True,
                             "done_reason": "load"})
    params, stop = _options(body)
    job = Job(model, image, "images", prompt, raw, params, stop)
    return await _respond(request, service, job, stream, lambda text: {"response": text})


async def chat(request: Request):
    service = request.app.state.service
    body = await body_json(request)
    model = service.models.find(body.get("model"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("messages must be a non-empty list", "messages")
    text, image = None, None
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content", ""), str) or not isinstance(m.get("role"), str):
            raise bad("each message needs a role and a string content", f"messages[{i}]")
        image = _images(m.get("images"), f"messages[{i}].images") or image  # the most recent image
        if m["role"] == "user":
            text = m.get("content", "")
    if text is None:
        raise bad("there is no user message", "messages")
    stream = _stream_flag(body)
    params, stop = _options(body)
    raw = body.get("raw", False)
    if not isinstance(raw, bool):
        raise bad("raw must be a boolean", "raw")
    job = Job(model, image, "messages[].images", text, raw, params, stop)
    return await _respond(request, service, job, stream,
                          lambda text: {"message": {"role": "assistant", "content": text}})


async def _respond(request, service, job: Job, stream: bool, piece):
    running = await service.start(job, request)

    async def final(done) -> dict:
        prefill_ns, decode_ns = int(done.prefill_s * 1e9), int(done.decode_s * 1e9)
        out = {"model": job.model.name, "created_at": _now(), **piece(""), "done": True,
               "done_reason": finish_reason(done), "total_duration": int((done.queued_s + done.prefill_s
                                                                         + done.decode_s) * 1e9),
               "load_duration": int(done.load_s * 1e9), "prompt_eval_count": done.prompt_tokens,
               "prompt_eval_duration": prefill_ns, "eval_count": len(done.token_ids), "eval_duration": decode_ns}
        if (objects := await service.objects(done)) is not None:
            out["objects"] = objects
        return out

    if not stream:
        done = await collect(request, running, service)
        out = await final(done)
        out.update(piece(done.text))
        return JSONResponse(out)

    async def ndjson():
        async for event in stream_events(running, service):
            if isinstance(event, str):
                line = {"model": job.model.name, "created_at": _now(), **piece(event), "done": False}
            elif isinstance(event, ApiError):
                line = error_body(event)  # Ollama reports a failure mid-stream as an {"error"} line
            else:
                line = await final(event)
            yield json.dumps(line, ensure_ascii=False) + "\n"

    return StreamingResponse(ndjson(), media_type="application/x-ndjson")
