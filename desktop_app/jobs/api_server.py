"""The app's Local API server: `python -m vlm_core serve`'s app, in this process, on the model the window loaded.

It never holds a second copy of the weights: its scheduler runs on the engine the worker (engine_worker.py) owns,
and every scheduler step takes the worker's EngineGate, which lets the window's own work (a chat answer, a folder
run's chunk, a model load) go first: that waits at most for the API's current prefill or token step.

uvicorn runs in a thread of its own with its own event loop, never on the GUI thread. Binding happens in `start`
(quick), so a port in use is one clear sentence. Stop it before the engine it runs on is freed: `stop` cancels what
is queued or running at once (the scheduler checks between tokens) and lets uvicorn close within a few seconds.
Plain Python, no Qt: the window polls `requests` for the status bar.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)

LOOPBACK, NETWORK = "127.0.0.1", "0.0.0.0"


class ApiServer:
    def __init__(self, engine, model_dir: str, gate, port: int, network: bool = False, api_key: str = "",
                 on_answer=None):
        """on_answer(prompt, Finished): every answered request, called on the server's thread."""
        if network and not api_key:
            raise ValueError("a server for other devices needs an API key")
        self.engine, self.model_dir, self.gate, self.port = engine, model_dir, gate, port
        self.host = NETWORK if network else LOOPBACK
        self.api_key = api_key if network else None  # loopback only: like `serve`, no key unless on the network
        self.on_answer = on_answer
        self.url = ""
        self._service = self._server = self._thread = None

    @property
    def requests(self) -> int:
        return self._service.requests if self._service is not None else 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> str:
        """Bind and serve; the URL. A port in use (or any bind failure) raises VlmError with one clear sentence."""
        import uvicorn

        from vlm_core.cli.serve import GRACE_S, bind_socket, mask_decoder_or_none
        from vlm_core.runtime.scheduler import Scheduler
        from vlm_core.serve.app import create_app
        from vlm_core.serve.jobs import Service
        from vlm_core.serve.models import Models, describe

        sock, url = bind_socket(self.host, self.port, "choose another port in Settings › Local API server")
        served = describe(Path(self.model_dir))
        scheduler = Scheduler(self.engine, max_batch=8, max_queue=64, loader=None, model_key=served.key,
                              gate=self.gate)
        self._service = Service(scheduler, Models(served), mask_decoder_or_none(None), on_answer=self.on_answer)
        app = create_app(self._service, self.host, self.api_key, [])
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=GRACE_S,
                                lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="api-server", daemon=True)
        self._thread.start()
        # What a client on this computer types (0.0.0.0 is where it listens, not an address to call).
        self.url = url.replace(NETWORK, LOOPBACK)
        return self.url

    def _serve(self, sock) -> None:
        try:
            self._server.run(sockets=[sock])
        except BaseException:  # noqa: BLE001 - the log gets the details; the status bar says the server stopped
            log.exception("the Local API server stopped")
        finally:
            sock.close()

    def stop(self) -> None:
        """Never blocks: cancel the scheduler's work now (before the engine is freed), then let uvicorn wind down."""
        if self._service is not None:
            self._service.scheduler.close(timeout=0)
        if self._server is not None:
            self._server.should_exit = True

    def wait(self, timeout: float = 10.0) -> None:
        """For shutdown and tests: the server thread has ended (the port is free)."""
        if self._thread is not None:
            self._thread.join(timeout)
