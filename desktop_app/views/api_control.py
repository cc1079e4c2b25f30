"""The window's side of the Local API server: start it when Settings says so and a model is loaded, stop it before
that model is replaced or freed, restart it on the new one, and keep the status bar's count current."""

from __future__ import annotations

import itertools
import time

from PySide6.QtCore import QObject, QTimer, Signal

from ..jobs.api_server import ApiServer
from . import notice as cause
from .status_bar import ApiStatus

POLL_MS = 500  # the request count on the status bar


class ApiControl(QObject):
    answered = Signal(str, object)  # prompt, Finished: from the server's thread to this (GUI) thread

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
        self.answered.connect(self._keep_in_history)
        self._turn_ids = itertools.count(-1, -1)  # History's turn ids for API answers: never a chat turn's

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
        server = ApiServer(worker.engine, self.w.models.loaded_path, worker.gate, port, network, key,
                           on_answer=self.answered.emit)
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

    def _keep_in_history(self, prompt: str, done) -> None:
        """With "Keep API requests in History" on: the answer as a turn in its image's own conversation."""
        from ..conversation import DONE
        from ..history.rows import StoredTurn
        from ..jobs.history_recorder import model_description

        recorder = self.w.history
        if not self.w.settings.api_history or not recorder.enabled or done.image is None:
            return
        key = "api:" + done.image.key  # never the key of an image open in the window
        recorder.client.image_opened(key, "API request", "", done.image.image)
        model = model_description(self.w.model_info, self.w.models.loaded_path)
        stats = {"prompt_tokens": done.prompt_tokens, "generated_tokens": len(done.token_ids),
                 "stop_reason": done.stop_reason}
        row = StoredTurn(prompt=prompt, answer=done.text, state=DONE, stop_reason=done.stop_reason, stats=stats,
                         model=model, created=time.time())
        recorder.client.save(key, next(self._turn_ids), 0, row)

    def _show(self) -> None:
        if self.server is not None:
            self.status.show_on(self.server.url, self.server.requests)

    def shutdown(self) -> None:
        """Window closing: stop and wait briefly for the port to close (before the engine thread ends)."""
        self._stop()
        if self._leaving is not None:
            self._leaving.wait(5.0)
