"""`python -m vlm_core serve`: the local API server (OpenAI- and Ollama-compatible), batched.

    python -m vlm_core serve --model DIR|REPO_ID [--host 127.0.0.1] [--port 8224] [--api-key KEY] [--device D]
        [--dtype T] [--quant none|int8|int4] [--max-batch N] [--max-queue N] [--allow-origin ORIGIN ...] [--allow-host NAME ...]
        [--log-prompts]

Port 8224 by default: not Ollama's 11434, LM Studio's 1234, Jan's 1337, vLLM's 8000, llama.cpp's 8080 or
text-generation-webui's 5000/7860. It prints one line with the URL once it accepts connections. SIGTERM or Ctrl+C
stops it within a few seconds: running answers get 3 s to finish, then they are cancelled.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from .common import DEVICES, DTYPES, add_quant_arg

DEFAULT_PORT = 8224
GRACE_S = 3  # seconds in-flight requests get to finish on SIGTERM before they are cancelled


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="a local OpenAI- and Ollama-compatible API server")
    p.add_argument("--model", required=True, help="model folder or installed repo id (never downloaded)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this computer only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 picks a free one")
    p.add_argument("--api-key", default=os.environ.get("PALIGEMMA_API_KEY"),
                   help="require `Authorization: Bearer KEY` (needed for any host but loopback; also read from "
                        "PALIGEMMA_API_KEY)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--dtype", default="auto", choices=DTYPES)
    add_quant_arg(p)
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together (default 8)")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting before 503 (default 64)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="let web pages from ORIGIN (e.g. http://localhost:3000) call the API; repeatable")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also answer requests whose Host is NAME (e.g. host.docker.internal); repeatable")
    p.add_argument("--max-body-mb", type=int, default=32, help="larger request bodies get 413 (default 32)")
    p.add_argument("--vae", default=None, help="mask decoder file (default: the installed one, if any)")
    p.add_argument("--log-prompts", action="store_true", help="write prompts to the log (off: status, tokens, ms)")


def check_args(args, parser: argparse.ArgumentParser) -> None:
    from ..serve.app import is_loopback

    if not is_loopback(args.host) and not args.api_key:
        parser.error(f"--host {args.host} makes the server reachable from the network: give --api-key KEY too")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0..65535, got {args.port}")
    if args.max_batch < 1 or args.max_queue < 1:
        parser.error("--max-batch and --max-queue must be at least 1")


def run(args, parser: argparse.ArgumentParser) -> int:
    check_args(args, parser)
    return serve(args)


def serve(args) -> int:
    """Load the model, bind, print the URL, serve until SIGTERM / Ctrl+C. Shared with `paligemma-desktop --serve`."""
    import logging

    import uvicorn

    from ..runtime.engine import Engine
    from ..runtime.scheduler import Scheduler
    from ..serve.app import create_app
    from ..serve.jobs import Service
    from ..serve.models import Models, describe
    from ..weights.hub import resolve_model

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    path = resolve_model(args.model)
    repo_id = args.model if args.model.count("/") == 1 and not os.path.exists(args.model) else None
    served = describe(path, repo_id)
    engine = Engine.load(path, device=args.device, dtype=args.dtype, quant=args.quant)

    def loader(key: str):
        return Engine.load(key, device=args.device, dtype=args.dtype, quant=args.quant)

    mask_decoder = mask_decoder_or_none(args.vae)
    scheduler = Scheduler(engine, max_batch=args.max_batch, max_queue=args.max_queue, loader=loader,
                          model_key=served.key)
    service = Service(scheduler, Models(served), mask_decoder, args.log_prompts)
    sock, url = bind_socket(args.host, args.port)

    def ready():
        masks = "masks on" if mask_decoder is not None else "masks off (mask decoder not installed)"
        print(f"PaliGemma API server ready at {url} (OpenAI: {url}/v1, Ollama: {url}) - {served.name} on "
              f"{engine.device_description()}, max batch {args.max_batch}, {masks}", flush=True)

    app = create_app(service, args.host, args.api_key, args.allow_origin, max_body=args.max_body_mb << 20,
                     on_ready=ready, allow_hosts=args.allow_host)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=GRACE_S,
                            lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def bind_socket(host: str, port: int, hint: str = "pick another --port"):
    """A listening socket on host:port (0: a free one) and its URL; a port in use is one clear VlmError.
    Shared with the desktop app's Local API server."""
    from ..errors import VlmError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise VlmError(f"cannot listen on {host}:{port} ({e.strerror}): {hint}") from None
    sock.listen(128)
    shown = f"[{host}]" if ":" in host else host
    return sock, f"http://{shown}:{sock.getsockname()[1]}"


def mask_decoder_or_none(vae: str | None):
    from ..errors import VlmError
    from ..weights.vae import load_store_decoder

    try:
        return load_store_decoder(vae)
    except VlmError:
        if vae is not None:
            raise
        return None  # not installed: objects carry boxes, and mask is null
