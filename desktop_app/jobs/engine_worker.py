"""The one long-lived thread that owns the model, its KV cache and its vision-feature cache.

GUI thread                       worker thread
EngineClient.load()   ──queued──▶  EngineWorker.load()     ─▶ devices, load_stage*, load_progress*,
                                                             model_ready | load_failed
EngineClient.unload() ──queued──▶  EngineWorker.unload()   ─▶ unloaded
EngineClient.probe()  ──queued──▶  EngineWorker.probe()    ─▶ devices
EngineClient.ask()    ──queued──▶  EngineWorker.generate() ─▶ started, token*, finished | cancelled | failed
EngineClient.run_batch_chunk() ─▶  EngineWorker.run_batch() ─▶ batch_done | batch_failed  (a folder run's chunk)
EngineClient.cancel()  sets a threading.Event the worker checks between tokens (and between tensors while loading)
EngineClient.shutdown()  cancel → quit() → wait()

The app's Local API server (api_server.py) runs its scheduler on this worker's engine: everything here that uses
or replaces the engine holds `gate.window()`, which waits at most for the API's current step, and EngineClient
emits `engine_leaving` before a load or unload so the server stops using the old engine first.

The worker emits plain data only (str, int, float, dict) and never touches a widget. torch is imported inside the
worker's slots, on the worker thread, so the window is on screen before torch has finished importing, and it is
imported so that the GUI thread keeps running meanwhile (see _import_torch).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import sys
import threading
import time
import traceback
from importlib.util import find_spec

from PySide6.QtCore import QCoreApplication, QObject, QThread, Signal, Slot

from vlm_core.runtime.gate import EngineGate  # plain threading, no torch

log = logging.getLogger(__name__)


class _LoadCancelled(Exception):
    pass


# torch's core libraries, in link order. dlopen runs their static initialisers (operator registration: ~200 ms for
# libtorch_cpu), and Python's import machinery calls dlopen with the GIL held, which freezes the GUI thread for that
# long. A ctypes call into libc's dlopen releases the GIL, so loading them that way first leaves `import torch` only
# a refcount bump for each.
_TORCH_LIBRARIES = ("libc10.so", "libtorch_cpu.so", "libtorch_cuda.so", "libtorch.so", "libtorch_python.so")


def _import_torch() -> None:
    """Import torch on this thread without long GUI stalls (measured: 250 ms -> under 40 ms on CPU torch)."""
    if "torch" in sys.modules:
        return
    spec = find_spec("torch")
    if sys.platform.startswith("linux") and spec is not None and spec.origin:
        lib_dir = os.path.join(os.path.dirname(spec.origin), "lib")
        try:
            libc = ctypes.CDLL(None)
            libc.dlopen.restype = ctypes.c_void_p
            libc.dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
            for name in _TORCH_LIBRARIES:
                if os.path.exists(path := os.path.join(lib_dir, name)):
                    libc.dlopen(path.encode(), os.RTLD_NOW | os.RTLD_GLOBAL)  # GIL released; failure is harmless
        except (OSError, AttributeError):
            pass  # the import below loads them itself
    # The import makes ~10^6 objects; the cyclic collector's full passes over them hold the GIL for 60-150 ms each.
    # None of them are garbage, so collect nothing while importing, then freeze them out of later collections.
    gc.disable()
    try:
        import torch  # noqa: F401
    finally:
        gc.enable()
        gc.freeze()


def device_report() -> dict:
    """The devices this machine and this PyTorch build offer, why the others are missing, and their memory."""
    import torch

    present, missing, gpu = ["cpu"], {}, {}
    if torch.cuda.is_available():
        present.append("cuda")
        props = torch.cuda.get_device_properties(0)
        gpu = {"name": props.name, "memory_bytes": int(props.total_memory)}
    elif torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        missing["cuda"] = "this PyTorch build has no CUDA support (a CPU-only wheel)"
    else:
        missing["cuda"] = "no NVIDIA GPU or driver was found"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        present.append("mps")
    elif sys.platform != "darwin":
        missing["mps"] = "Metal (MPS) exists only on Macs"
    else:
        missing["mps"] = "Metal needs macOS 12.3 or newer on Apple silicon"
    from vlm_core.runtime.engine import resolve_dtype

    # What "auto" precision becomes on each device (bfloat16 or float32): it halves or doubles the memory needed.
    auto_dtypes = {d: str(resolve_dtype("auto", torch.device(d))).removeprefix("torch.") for d in present}
    return {"present": present, "missing": missing, "gpu": gpu, "auto_dtypes": auto_dtypes}


def _describe_failure(e: BaseException) -> str:
    """A message a person can act on; the traceback goes to the log, never the window."""
    from vlm_core.errors import VlmError

    if isinstance(e, VlmError):
        return str(e)
    if type(e).__name__ == "OutOfMemoryError":
        return "The device ran out of memory. Try fewer new tokens, a smaller model, or the CPU."
    log.error("unexpected engine error\n%s", "".join(traceback.format_exception(e)))
    return f"Unexpected error ({type(e).__name__}: {e}). Details are in the log; please report it."


def _failure_kind(e: BaseException) -> str:
    """What the window does next depends on it: a device failure resets the device setting to auto."""
    from vlm_core.errors import DeviceError

    if isinstance(e, DeviceError) or type(e).__name__ in ("OutOfMemoryError", "AcceleratorError"):
        return "device"
    return "model"


class EngineWorker(QObject):
    devices = Signal(dict)  # device_report(), once torch is imported
    load_stage = Signal(str)  # "torch" (importing PyTorch: no measurable progress), "weights"
    load_progress = Signal(float)  # fraction of weight bytes read
    model_ready = Signal(dict)  # name, device, dtype, memory_bytes
    load_failed = Signal(str, str)  # message, kind: "cancelled", "device" or "model"
    unloaded = Signal()
    started = Signal(int)  # request id
    token = Signal(int, str)  # request id, text delta
    finished = Signal(int, dict)  # request id, stats
    cancelled = Signal(int, dict)
    failed = Signal(int, str)
    memory = Signal(object)  # bytes in use (may exceed a C++ int)
    batch_done = Signal(int, object)  # folder-run job id, {"rows", "thumbs", "batch_size"} or None if stopped
    batch_failed = Signal(int, str)
    prefill_progress = Signal(int, int, int)  # request id, decoder layers done, layers: a prefill past PREFILL_NOTICE_S
    PREFILL_NOTICE_S = 3.0  # a long prompt on a CPU can take minutes to its first token: say what is happening

    def __init__(self, cancel: threading.Event):
        super().__init__()
        self._cancel = cancel
        self.engine = None
        self.gate = EngineGate()  # shared with the Local API server's scheduler (api_server.py)
        self._devices_reported = False
        self.latest_load = 0  # set by EngineClient.load() from the GUI thread

    @Slot()
    def probe(self) -> None:
        try:
            self._start_torch()
        except BaseException as e:  # noqa: BLE001 - a broken torch install is reported when a model loads
            log.warning("PyTorch could not start: %s", e)

    def _start_torch(self) -> None:
        if "torch" not in sys.modules:
            self.load_stage.emit("torch")
            _import_torch()
        if not self._devices_reported:
            self._devices_reported = True
            self.devices.emit(device_report())

    @Slot(int, str, str, str, bool)
    def load(self, load_id: int, model_dir: str, device: str, dtype: str, cuda_graphs: bool = True) -> None:
        with self.gate.window():
            self._load(load_id, model_dir, device, dtype, cuda_graphs)

    def _load(self, load_id: int, model_dir: str, device: str, dtype: str, cuda_graphs: bool) -> None:
        """load_id: a newer load (EngineClient.latest_load) supersedes this one; it ends as "superseded"."""
        self._release()
        self._cancel.clear()  # EngineClient.load() set it to stop what ran before
        superseded = lambda: load_id != self.latest_load  # noqa: E731 - an int read is atomic

        def progress(done: int, total: int) -> None:
            if self._cancel.is_set() or superseded():
                raise _LoadCancelled
            self.load_progress.emit(done / total if total else 1.0)

        try:
            if superseded():
                raise _LoadCancelled
            self._start_torch()  # torch is imported here, on this thread
            if self._cancel.is_set() or superseded():
                raise _LoadCancelled
            from vlm_core.runtime.engine import Engine

            self.load_stage.emit("weights")
            from ..settings import load_precision

            dtype, quant = load_precision(dtype)  # the Precision setting: a dtype, or int8/int4 weights
            self.engine = Engine.load(model_dir, device=device, dtype=dtype, progress=progress,
                                      cuda_graphs=cuda_graphs, quant=quant)
            if superseded():
                raise _LoadCancelled
        except _LoadCancelled:
            self._release()
            self.load_failed.emit("Loading was cancelled.", "superseded" if superseded() else "cancelled")
            return
        except BaseException as e:  # noqa: BLE001 - every failure becomes a message, never a dead thread
            self._release()
            self.load_failed.emit(_describe_failure(e), _failure_kind(e))
            return
        gc.freeze()  # the model's objects live as long as it does: keep them out of the collector's passes
        self.model_ready.emit({**self.model_info(), "load_id": load_id})

    @Slot()
    def unload(self) -> None:
        with self.gate.window():
            self._release()
        self.unloaded.emit()

    def model_info(self) -> dict:
        e = self.engine
        quant = "" if e.quant == "none" else f", {e.quant} weights"  # the window shows which precision answered
        return {"name": e.name, "device": e.device_description(), "dtype": str(e.dtype).removeprefix("torch.") + quant,
                "memory_bytes": e.memory_in_use(), "image_size": e.cfg.image_size, "choices": e.choices}

    @Slot(int, object, str, dict)
    def generate(self, request_id: int, image, prompt: str, params: dict) -> None:
        with self.gate.window():
            self._generate(request_id, image, prompt, params)

    def _generate(self, request_id: int, image, prompt: str, params: dict) -> None:
        from vlm_core.runtime.generate import STOP_CANCELLED, SamplingParams, TokenEvent

        self.started.emit(request_id)
        if self.engine is None:
            self.failed.emit(request_id, "No model is loaded yet.")
            return
        try:
            sampling = SamplingParams(**params)
            for event in self.engine.stream(image, prompt, sampling, should_stop=self._cancel.is_set,
                                            prefill_progress=self._prefill_reporter(request_id)):
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

    def _prefill_reporter(self, request_id: int):
        t0 = time.perf_counter()

        def report(done: int, layers: int) -> None:
            if time.perf_counter() - t0 >= self.PREFILL_NOTICE_S:
                self.prefill_progress.emit(request_id, done, layers)

        return report

    @Slot(int, list, str, dict, object)
    def run_batch(self, job_id: int, paths: list, prompt: str, params: dict, stop) -> None:
        """One chunk of a folder run (desktop_app.jobs.batch_job), queued between chat requests; `stop` is the
        chunk's own threading.Event, so stopping a chat answer never stops the batch and vice versa."""
        with self.gate.window():
            self._run_batch(job_id, paths, prompt, params, stop)

    def _run_batch(self, job_id: int, paths: list, prompt: str, params: dict, stop) -> None:
        from .batch_job import run_chunk

        if self.engine is None:
            self.batch_failed.emit(job_id, "No model is loaded yet.")
            return
        try:
            self.batch_done.emit(job_id, run_chunk(self.engine, paths, prompt, params, stop))
        except BaseException as e:  # noqa: BLE001
            self.batch_failed.emit(job_id, _describe_failure(e))
        finally:
            if self.engine is not None:
                self.memory.emit(self.engine.memory_in_use())

    def _release(self) -> None:
        if self.engine is not None:
            self.engine.free_memory()
            self.engine = None
            gc.unfreeze()  # let the collector see the released model's objects again
            gc.collect()


class EngineClient(QObject):
    """The GUI thread's handle on the worker. Thin: it forwards, tracks busy, and shuts down cleanly."""

    _load_requested = Signal(int, str, str, str, bool)
    _unload_requested = Signal()
    _probe_requested = Signal()
    _generate_requested = Signal(int, object, str, dict)
    _batch_requested = Signal(int, list, str, dict, object)
    engine_leaving = Signal()  # a load or unload is about to free the engine: the Local API server stops first

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._cancel = threading.Event()
        self._thread = QThread()
        self._thread.setObjectName("engine")
        self.worker = EngineWorker(self._cancel)
        self.worker.moveToThread(self._thread)
        self._load_requested.connect(self.worker.load)
        self._unload_requested.connect(self.worker.unload)
        self._probe_requested.connect(self.worker.probe)
        self._generate_requested.connect(self.worker.generate)
        self._batch_requested.connect(self.worker.run_batch)
        for sig in (self.worker.finished, self.worker.cancelled):
            sig.connect(self._on_request_done)
        self.worker.failed.connect(self._on_request_done)
        # Bound methods of this QObject, never lambdas: a lambda has no thread affinity, so PySide would run it
        # directly on the worker thread.
        self.worker.model_ready.connect(self._on_model_ready)
        self.worker.load_failed.connect(self._on_load_failed)
        self.worker.unloaded.connect(self._on_unloaded)
        self.worker.devices.connect(self._on_devices)
        self.devices: dict | None = None  # device_report() once torch has started on the worker
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

    def load(self, model_dir: str, device: str = "auto", dtype: str = "auto", cuda_graphs: bool = True) -> None:
        self.cancel()  # a running answer or load gives way to the new model
        self.engine_leaving.emit()
        self.loading, self.ready = True, False
        self.worker.latest_load += 1  # earlier loads still queued or running give way
        self._load_requested.emit(self.worker.latest_load, model_dir, device, dtype, cuda_graphs)

    def unload(self) -> None:
        """Release the model and its memory (the model file is about to be deleted, say)."""
        self.cancel()
        self.engine_leaving.emit()
        self.ready = False
        self._unload_requested.emit()

    def probe(self) -> None:
        """Start torch on the worker to learn the devices (`devices` then `worker.devices`), without a model."""
        self._probe_requested.emit()

    def ask(self, image, prompt: str, params: dict) -> int | None:
        """Queue a request; None (and nothing queued) while another is running: requests never interleave."""
        if self.busy or not self.ready:
            return None
        self._cancel.clear()
        self._next_id += 1
        self.active_request = self._next_id
        self._generate_requested.emit(self._next_id, image, prompt, params)
        return self._next_id

    def run_batch_chunk(self, job_id: int, paths: list, prompt: str, params: dict, stop) -> None:
        """Queue one chunk of a folder run behind whatever the worker is doing (a chat answer asked meanwhile
        waits for one chunk at most); answers come as worker.batch_done / batch_failed."""
        self._batch_requested.emit(job_id, list(paths), prompt, params, stop)

    def cancel(self) -> None:
        self._cancel.set()

    def _on_request_done(self, request_id: int, *_):
        if request_id == self.active_request:
            self.active_request = None

    def stale(self, info: dict | None = None, kind: str = "") -> bool:
        """A result of a load that a newer one replaced: the window ignores it."""
        return kind == "superseded" or (info is not None and info.get("load_id") != self.worker.latest_load)

    def _on_model_ready(self, info: dict) -> None:
        if not self.stale(info):
            self.loading, self.ready = False, True

    def _on_load_failed(self, _message: str, kind: str) -> None:
        if not self.stale(kind=kind):
            self.loading, self.ready = False, False

    def _on_unloaded(self) -> None:
        self.ready = False

    def _on_devices(self, report: dict) -> None:
        self.devices = report

    def shutdown(self) -> None:
        """Stop what runs, end the thread, wait for it: no 'QThread: Destroyed while thread is still running'."""
        self.cancel()
        if self._thread.isRunning():
            self._thread.quit()
            self._thread.wait()
