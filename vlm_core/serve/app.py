"""The ASGI app: routes for both APIs, and the guard every request passes first.

Safe by default, because a server on localhost is reachable from every web page the user opens:
  - Host: must be the bound name, localhost, a name given with --allow-host, or an IP literal (loopback ones, or any
    when bound to the network); another DNS name is a DNS-rebinding page and gets 403.
  - Origin: a browser request from an origin not named by --allow-origin gets 403 (even "simple" POSTs, which a
    browser sends without asking); a named origin gets CORS headers and its preflight answered.
  - Authorization: with --api-key, `Bearer KEY` on every request, compared in constant time, never logged.
  - Body: over the limit (Content-Length, or counted while reading) gets 413.
Errors come back in the API's own shape: OpenAI's {"error": {...}} under /v1, Ollama's {"error": "..."} under /api.
One log line per request: method, path, status, tokens, milliseconds (the prompt only with --log-prompts).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import ollama_api, openai_api
from .errors import ApiError
from .runner import ClientGone

log = logging.getLogger("vlm_core.serve")
MAX_BODY = 32 << 20  # bytes: a 20 MP JPEG in base64 fits; anything bigger is not a photo for a 224-896 px model


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _error_response(path: str, e: ApiError) -> JSONResponse:
    body = openai_api.error_body(e) if not path.startswith("/api/") else ollama_api.error_body(e)
    headers = {"Retry-After": str(e.retry_after)} if e.retry_after else None
    return JSONResponse(body, status_code=e.status, headers=headers)


class Guard:
    """Pure ASGI middleware: Host, Origin/CORS, API key, body size, and the access log line."""

    def __init__(self, app, bound_host: str, api_key: str | None, allow_origins: list[str], max_body: int,
                 allow_hosts: list[str] = ()):
        self.app, self.api_key, self.max_body = app, api_key, max_body
        self.allow_origins = {o.rstrip("/") for o in allow_origins}
        self.names = {"localhost", "127.0.0.1", "::1", bound_host.strip("[]").lower(),
                      *(h.strip("[]").lower() for h in allow_hosts)}
        self.network = not is_loopback(bound_host)

    def _host_ok(self, host: str) -> bool:
        if host.startswith("["):
            name = host[1:].split("]", 1)[0]
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        name = name.lower()
        if name in self.names:
            return True
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            return False  # a DNS name we are not bound to: DNS rebinding
        return ip.is_loopback or self.network  # an IP literal cannot be rebound

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, path = time.perf_counter(), scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        granted = origin is not None and origin.rstrip("/") in self.allow_origins
        status = [0]

        async def send_logged(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                if granted:
                    message.setdefault("headers", [])
                    message["headers"] = list(message["headers"]) + [
                        (b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
            await send(message)

        try:
            error = self._check(headers, origin, granted, scope["method"])
            if error == "preflight":
                await Response(status_code=204, headers={
                    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                    "Access-Control-Allow-Headers": "Authorization, Content-Type",
                    "Access-Control-Max-Age": "600"})(scope, receive, send_logged)
            elif error is not None:
                await _error_response(path, error)(scope, receive, send_logged)
            else:
                await self.app(scope, receive, send_logged)
        finally:
            state = scope.get("state", {})
            extra = f" {state['tokens']}" if "tokens" in state else ""
            extra += f" prompt={state['prompt']!r}" if "prompt" in state else ""
            log.info("%s %s %s%s %.0f ms", scope["method"], path, status[0] or "-", extra,
                     (time.perf_counter() - t0) * 1000)

    def _check(self, headers: dict, origin: str | None, granted: bool, method: str):
        if not self._host_ok(headers.get("host", "")):
            return ApiError(403, "this server answers requests to localhost only (the Host header names another "
                                 "host)", code="host_not_allowed")
        if origin is not None and not granted:
            return ApiError(403, f"requests from web pages at {origin} are not allowed: start the server with "
                                 f"--allow-origin {origin} to allow them", code="origin_not_allowed")
        if method == "OPTIONS" and granted:
            return "preflight"
        if self.api_key is not None:
            given = headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
                return ApiError(401, "a valid API key is required: send the header Authorization: Bearer KEY",
                                code="invalid_api_key")
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return ApiError(413, f"the request body is over {self.max_body // (1 << 20)} MB: send a smaller image",
                            code="body_too_large")
        return None


def create_app(service, bound_host: str = "127.0.0.1", api_key: str | None = None,
               allow_origins: list[str] | None = None, max_body: int = MAX_BODY, on_ready=None, on_stop=None,
               allow_hosts: list[str] | None = None):
    routes = [
        Route("/v1/models", openai_api.list_models, methods=["GET"]),
        Route("/v1/chat/completions", openai_api.chat_completions, methods=["POST"]),
        Route("/api/version", ollama_api.version, methods=["GET"]),
        Route("/api/tags", ollama_api.tags, methods=["GET"]),
        Route("/api/show", ollama_api.show, methods=["POST"]),
        Route("/api/ps", ollama_api.ps, methods=["GET"]),
        Route("/api/generate", ollama_api.generate, methods=["POST"]),
        Route("/api/chat", ollama_api.chat, methods=["POST"]),
        Route("/", lambda request: JSONResponse({"status": "PaliGemma Desktop API server is running"})),
    ]

    async def api_error(request: Request, e: ApiError):
        return _error_response(request.url.path, e)

    async def http_error(request: Request, e: HTTPException):
        return _error_response(request.url.path, ApiError(e.status_code, e.detail or "not found"))

    async def gone(request: Request, e: ClientGone):
        return Response(status_code=499)  # nobody reads it; the log shows the client left

    async def crash(request: Request, e: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return _error_response(request.url.path, ApiError(500, f"internal error ({type(e).__name__}); the server "
                                                                "is still up, see its log"))

    @asynccontextmanager
    async def lifespan(app):
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            service.scheduler.close()
            if on_stop is not None:
                on_stop()

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={ApiError: api_error, HTTPException: http_error, ClientGone: gone,
                                        Exception: crash})
    app.state.service = service
    app.state.max_body = max_body
    return Guard(app, bound_host, api_key, allow_origins or [], max_body, allow_hosts or [])
