"""The one long-lived thread that owns the model, its KV cache and its vision-feature cache.

GUI thread                       worker thread
EngineClient.load() ──queued──▶  EngineWorker.load()      ─▶ load_progress*, model_ready | load_failed
EngineClient.ask()  ──queued──▶  EngineWorker.generate()  ─▶ started, token*, finished | cancelled | failed
EngineClient.cancel()  sets a threading.Event the worker checks between tokens (and between tensors while loading)
EngineClient.shutdown()  cancel → quit() → wait()

The worker emits plain data only (str, int, float, dict) and never touches a widget. torch is imported inside the
worker's slots, on the worker thread, so the window is on screen before torch has finished importing.
"""

from __future__ import annotations

import logging
import threading
import traceback

from PySide6.QtCore import QCoreApplication, QObject, QThread, Signal, Slot

log = logging.getLogger(__name__)


class _LoadCancelled(Exception):
    pass


def _describe_failure(e: BaseException) -> str:
    """A message a person can act on; the traceback goes to the log, never the window."""
    from vlm_core.errors import VlmError

    if isinstance(e, VlmError):
        return str(e)
    if type(e).__name__ == "OutOfMemoryError":
        return "The device ran out of memory. Try fewer new tokens, a smaller model, or the CPU."
    log.error("unexpected engine error\n%s", "".join(traceback.format_exception(e)))
    return f"Unexpected error ({type(e).__name__}: {e}). Details are in the log; please report it."


class EngineWorker(QObject):
    load_progress = Signal(float)  # fraction of weight bytes read
    model_ready = Signal(dict)  # name, device, dtype, memory_bytes
    load_failed = Signal(str)
    started = Signal(int)  # request id
    token = Signal(int, str)  # request id, text delta
    finished = Signal(int, dict)  # request id, stats
    cancelled = Signal(int, dict)
    failed = Signal(int, str)
    memory = Signal(object)  # bytes in use (may exceed a C++ int)

    def __init__(self, cancel: threading.Event):
        super().__init__()
        self._cancel = cancel
        self.engine = None

    @Slot(str, str, str)
    def load(self, model_dir: str, device: str, dtype: str) -> None:
        from vlm_core.runtime.engine import Engine  # torch is imported here, on this thread

        self._release()
        self._cancel.clear()

        def progress(done: int, total: int) -> None:
            if self._cancel.is_set():
                raise _LoadCancelled
            self.load_progress.emit(done / total if total else 1.0)

        try:
            self.engine = Engine.load(model_dir, device=device, dtype=dtype, progress=progress)
        except _LoadCancelled:
            self.load_failed.emit("Loading was cancelled.")
            return
        except BaseException as e:  # noqa: BLE001 - every failure becomes a message, never a dead thread
            self._release()
            self.load_failed.emit(_describe_failure(e))
            return
        self.model_ready.emit(self.model_info())

    def model_info(self) -> dict:
        e = self.engine
        return {"name": e.name, "device": e.device_description(), "dtype": str(e.dtype).removeprefix("torch."),
                "memory_bytes": e.memory_in_use(), "image_size": e.cfg.image_size}

    @Slot(int, object, str, dict)
    def generate(self, request_id: int, image, prompt: str, params: dict) -> None:
        from vlm_core.runtime.generate import STOP_CANCELLED, SamplingParams, TokenEvent

        self.started.emit(request_id)
        if self.engine is None:
            self.failed.emit(request_id, "No model is loaded yet.")
            return
        try:
            sampling = SamplingParams(**params)
            for event in self.engine.stream(image, prompt, sampling, should_stop=self._cancel.is_set):
                if isinstance(event, TokenEvent):
                    if event.text:
                        self.token.emit(request_id, event.text)
                else:
                    stats = {"prompt_tokens": event.prompt_tokens, "generated_tokens": event.generated_tokens,
                             "ttft_s": event.ttft_s, "decode_tokens_per_s": event.decode_tokens_per_s,
                             "total_s": event.total_s, "stop_reason": event.stop_reason}
                    (self.cancelled if event.stop_reason == STOP_CANCELLED else self.finished).emit(request_id, stats)
        except BaseException as e:  # noqa: BLE001
            self.failed.emit(request_id, _describe_failure(e))
        finally:
            if self.engine is not None:
                self.memory.emit(self.engine.memory_in_use())

    def _release(self) -> None:
        if self.engine is not None:
            self.engine.free_memory()
            self.engine = None


class EngineClient(QObject):
    """The GUI thread's handle on the worker. Thin: it forwards, tracks busy, and shuts down cleanly."""

    _load_requested = Signal(str, str, str)
    _generate_requested = Signal(int, object, str, dict)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._cancel = threading.Event()
        self._thread = QThread()
        self._thread.setObjectName("engine")
        self.worker = EngineWorker(self._cancel)
        self.worker.moveToThread(self._thread)
        self._load_requested.connect(self.worker.load)
        self._generate_requested.connect(self.worker.generate)
        for sig in (self.worker.finished, self.worker.cancelled):
            sig.connect(self._on_request_done)
        self.worker.failed.connect(self._on_request_done)
        # Bound methods of this QObject, never lambdas: a lambda has no thread affinity, so PySide would run it
        # directly on the worker thread.
        self.worker.model_ready.connect(self._on_model_ready)
        self.worker.load_failed.connect(self._on_load_failed)
        self._next_id = 0
        self.active_request: int | None = None
        self.loading = False
        self.ready = False
        self._thread.start()
        if (app := QCoreApplication.instance()) is not None:
            app.aboutToQuit.connect(self.shutdown)  # also when the app quits without closing our window

    @property
    def busy(self) -> bool:
        return self.loading or self.active_request is not None

    def load(self, model_dir: str, device: str = "auto", dtype: str = "auto") -> None:
        self.cancel()  # a running answer or load gives way to the new model
        self.loading, self.ready = True, False
        self._load_requested.emit(model_dir, device, dtype)

    def ask(self, image, prompt: str, params: dict) -> int | None:
        """Queue a request; None (and nothing queued) while another is running: requests never interleave."""
        if self.busy or not self.ready:
            return None
        self._cancel.clear()
        self._next_id += 1
        self.active_request = self._next_id
        self._generate_requested.emit(self._next_id, image, prompt, params)
        return self._next_id

    def cancel(self) -> None:
        self._cancel.set()

    def _on_request_done(self, request_id: int, *_):
        if request_id == self.active_request:
            self.active_request = None

    def _on_model_ready(self, _info: dict) -> None:
        self.loading, self.ready = False, True

    def _on_load_failed(self, _message: str) -> None:
        self.loading, self.ready = False, False

    def shutdown(self) -> None:
        """Stop what runs, end the thread, wait for it: no 'QThread: Destroyed while thread is still running'."""
        self.cancel()
        if self._thread.isRunning():
            self._thread.quit()
            self._thread.wait()
