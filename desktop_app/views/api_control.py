"""The window's side of the Local API server: start it when Settings says so and a model is loaded, stop it before
that model is replaced or freed, restart it on the new one, and keep the status bar's count current."""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer

from ..jobs.api_server import ApiServer
from . import notice as cause
from .status_bar import ApiStatus

POLL_MS = 500  # the request count on the status bar


class ApiControl(QObject):
    def __init__(self, window):
        super().__init__(window)
        self.w = window
        self.server: ApiServer | None = None
        self._leaving: ApiServer | None = None  # stopped, still closing its port
        self._config: tuple | None = None
        self.error = ""  # why the last start failed, "" if it did not
        self.status = ApiStatus()
        window.statusBar().addPermanentWidget(self.status)
        engine = window.engine
        engine.engine_leaving.connect(self._stop)  # before the worker frees the engine the server runs on
        engine.worker.model_ready.connect(self._on_model_ready)
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._show)

    def apply(self) -> None:
        """Make the server match the settings (on/off, port, network, key) and the loaded model."""
        s = self.w.settings
        wanted = (s.api_port, s.api_network, s.api_key) if s.api_server and self.w.engine.ready else None
        if self.server is not None and wanted == self._config:
            return
        self._stop()
        if wanted is not None:
            self._start(wanted)

    def _on_model_ready(self, info: dict) -> None:
        if not self.w.engine.stale(info):
            self.apply()

    def _start(self, config: tuple) -> None:
        from vlm_core.errors import VlmError

        if self._leaving is not None and self._leaving.running:
            QTimer.singleShot(100, self.apply)  # the old server still holds the port for a moment
            return
        port, network, key = config
        worker = self.w.engine.worker
        server = ApiServer(worker.engine, self.w.models.loaded_path, worker.gate, port, network, key)
        try:
            server.start()
        except VlmError as e:
            self.error = f"The Local API server did not start: {e}."
            self.w.notice.show_error(self.error, cause.API)
            return
        self.error = ""
        self.w.notice.clear(cause.API)
        self.server, self._config = server, config
        self._show()
        self._timer.start()

    def _stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self._leaving, self.server, self._config = self.server, None, None
        self._timer.stop()
        self.status.show_off()

    def _show(self) -> None:
        if self.server is not None:
            self.status.show_on(self.server.url, self.server.requests)

    def shutdown(self) -> None:
        """Window closing: stop and wait briefly for the port to close (before the engine thread ends)."""
        self._stop()
        if self._leaving is not None:
            self._leaving.wait(5.0)
