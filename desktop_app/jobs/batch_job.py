"""A folder run in the app: the GUI-side controller and the piece that runs on the engine's worker thread.

GUI thread (BatchJob)                                  engine worker thread
start(plan) ─▶ a helper thread lists the folder and reads back the output file (resume) ─▶ _listed
_send_next() ─▶ EngineClient.run_batch_chunk() ──queued──▶ EngineWorker.run_batch() ─▶ run_chunk()
                                           ◀── batch_done(job, {rows, thumbs, batch_size} | None) | batch_failed

The worker runs one chunk (one device batch) per request, so a chat question asked meanwhile runs between two
chunks. Pause and cancel stop the running chunk within one token (its rows are dropped; a paused run does that
chunk again on resume), so the chat is free at once. Rows are appended to the output file as each chunk arrives,
so a crash or a kill loses at most one chunk and the next run with "continue" skips what is done.
"""

from __future__ import annotations

import os
import threading

from PySide6.QtCore import QObject, Signal

from vlm_core.errors import VlmError
from vlm_core.runtime.batch_io import ResultWriter, Row, list_inputs, path_key

from ..batch_state import (CANCELLED, DONE, FAILED, IDLE, LISTING, PAUSED, RUNNING, BatchPlan, BatchProgress,
                           non_images)

FIRST_CHUNK = 2  # small, so the first rows (and a wrong prompt) show up quickly; later chunks fill the device
THUMB_PX = 64


def run_chunk(engine, paths: list[bytes | str], prompt: str, params: dict, stop: threading.Event) -> dict | None:
    """On the engine's thread: one batch of paths -> rows as dicts, RGB thumbnails (w, h, bytes) or None, and the
    batch size the runner chose (for the next chunk); None when stopped. Paths come as bytes (see _send_next)."""
    from vlm_core.runtime.batch import BatchRunner
    from vlm_core.runtime.generate import SamplingParams

    paths = [os.fsdecode(p) for p in paths]
    runner = BatchRunner(engine, prompt, SamplingParams(**params))
    loaded = [runner.prepare(p, p) for p in paths]
    thumbs = [_thumbnail(item.image.image) if item.image is not None else None for item in loaded]
    rows = runner.run_loaded(loaded, stop.is_set)
    if rows is None:
        return None
    return {"rows": [r.to_dict() for r in rows], "thumbs": thumbs, "batch_size": runner.batch_size}


def _thumbnail(img) -> tuple[int, int, bytes]:
    small = img.copy()
    small.thumbnail((THUMB_PX, THUMB_PX))
    return small.width, small.height, small.tobytes()


def thumbnail_of(path: str) -> tuple[int, int, bytes] | None:
    """A row carried over from an earlier run ("continue"): its thumbnail read from the file; None if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # a JPEG decodes at a fraction of its size
            return _thumbnail(img.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


class BatchJob(QObject):
    state_changed = Signal(str)  # idle | listing | running | paused | cancelled | done | failed
    rows_added = Signal(list, list)  # [Row], [thumbnail (w, h, rgb bytes) | None]
    progress_changed = Signal()
    message = Signal(str)  # a sentence for the status line (why it failed, what it skipped)
    skipped_files = Signal(list)  # the folder's files that are not images, once listed
    kept_thumbnails = Signal(int, list)  # first row, thumbnails of rows carried over by "continue" (after listing)
    _kept_thumbs = Signal(int, int, list)  # from the listing thread: job id, first row, thumbnails
    _listed = Signal(object)  # from the listing thread: (paths to do, writer, skipped) or an error message

    def __init__(self, client, parent: QObject | None = None):
        super().__init__(parent)
        self.client = client
        self.state = IDLE
        self.progress = BatchProgress()
        self.plan: BatchPlan | None = None
        self._todo: list[str] = []
        self._writer: ResultWriter | None = None
        self._in_flight: list[str] | None = None
        self._stop: threading.Event | None = None
        self._chunk = FIRST_CHUNK
        self._params: dict = {}
        self._job_id = 0
        self._paused = False
        self._cancelled = False
        self._listed.connect(self._on_listed)
        self._kept_thumbs.connect(self._on_kept_thumbs)
        client.worker.batch_done.connect(self._on_chunk_done)
        client.worker.batch_failed.connect(self._on_chunk_failed)

    @property
    def active(self) -> bool:
        return self.state in (LISTING, RUNNING, PAUSED)

    def start(self, plan: BatchPlan, max_new_tokens: int) -> None:
        if self.active:
            return
        self.plan, self._params = plan, {"max_new_tokens": max_new_tokens}  # greedy: what the task prompts expect
        self._job_id += 1
        self._paused = self._cancelled = False
        self._chunk = FIRST_CHUNK
        self._set_state(LISTING)
        # Listing a big folder and reading back a long output file are disk work: off the GUI thread.
        threading.Thread(target=self._list, args=(plan, self._job_id), name="batch-listing", daemon=True).start()

    def _list(self, plan: BatchPlan, job_id: int) -> None:
        try:
            paths = list_inputs(plan.folder)
            writer = ResultWriter(plan.out, plan.fmt, resume=plan.resume)
            kept = writer.kept
            if any(r.prompt != plan.prompt for r in kept):
                writer.close()
                raise VlmError(f"{plan.out} holds answers to another prompt; choose another output file")
            done = {path_key(r.path) for r in kept}
            others = non_images(plan.folder, paths)
            self._listed.emit((job_id, [p for p in paths if path_key(p) not in done], writer, len(paths), kept,
                               others))
        except (VlmError, OSError) as e:
            self._listed.emit((job_id, str(e)))
            return
        # The rows read back show their pictures too; made after the run has started (thousands of carried-over
        # rows must not delay it), a few dozen at a time.
        for start in range(0, len(kept), 64):
            if job_id != self._job_id:
                return
            self._kept_thumbs.emit(job_id, start, [thumbnail_of(r.path) for r in kept[start:start + 64]])

    def _on_listed(self, result) -> None:
        job_id, *rest = result
        if job_id != self._job_id:
            if len(rest) > 1:
                rest[1].close()  # abandoned while listing: its output file was opened for nothing
            return
        if len(rest) == 1:
            self.message.emit(rest[0])
            self._set_state(FAILED)
            return
        todo, self._writer, total, kept, others = rest
        self._todo = todo
        self.progress.start(total, total - len(todo))
        self.skipped_files.emit(others)
        if kept:
            self.rows_added.emit(kept, [None] * len(kept))
            self.message.emit(f"Continuing {self.plan.out}: {len(kept)} images were already done.")
        if self._cancelled:
            return self._finish(CANCELLED)
        self._set_state(RUNNING)
        self._send_next()

    def _on_kept_thumbs(self, job_id: int, start: int, thumbs: list) -> None:
        if job_id == self._job_id:
            self.kept_thumbnails.emit(start, thumbs)

    def _send_next(self) -> None:
        if self._in_flight is not None:
            return
        if self._cancelled:
            return self._finish(CANCELLED)
        if self._paused:
            self.progress.pause()
            return self._set_state(PAUSED)
        if not self._todo:
            return self._finish(DONE)
        if not self.client.ready:
            self.message.emit("The model is not ready; the run is paused until it is.")
            self._paused = True
            self.progress.pause()
            return self._set_state(PAUSED)
        self._in_flight, self._stop = self._todo[:self._chunk], threading.Event()
        # As bytes: a queued signal turns a str into a QString, which drops the bytes of a file name that is not
        # UTF-8 (a lone surrogate in Python's str), and the worker would then look for another file.
        self.client.run_batch_chunk(self._job_id, [os.fsencode(p) for p in self._in_flight], self.plan.prompt,
                                    self._params, self._stop)

    def _on_chunk_done(self, job_id: int, result) -> None:
        if job_id != self._job_id:
            return
        chunk, self._in_flight = self._in_flight, None
        if result is not None:
            rows = [Row.from_dict(d) for d in result["rows"]]
            for row in rows:
                self._writer.write(row)
            self._todo = self._todo[len(chunk):]
            self._chunk = max(1, int(result["batch_size"]))
            self.progress.add(rows)
            self.rows_added.emit(rows, result["thumbs"])
            self.progress_changed.emit()
        self._send_next()  # a stopped chunk stays in _todo: cancelled ends, paused does it again on resume

    def _on_chunk_failed(self, job_id: int, message: str) -> None:
        if job_id != self._job_id:
            return
        self._in_flight = None
        self.message.emit(message)
        self._finish(FAILED)

    def pause(self) -> None:
        if self.state == RUNNING:
            self._paused = True
            if self._stop is not None:
                self._stop.set()  # the chunk stops within a token; the chat is free at once
            if self._in_flight is None:
                self._send_next()

    def resume(self) -> None:
        if self.state == PAUSED:
            self._paused = False
            self.progress.resume()
            self._set_state(RUNNING)
            self._send_next()

    def cancel(self) -> None:
        if not self.active:
            return
        self._cancelled = True
        if self._stop is not None:
            self._stop.set()
        if self._in_flight is None and self.state != LISTING:
            self._finish(CANCELLED)

    def abandon(self) -> None:
        """The app is closing: stop now without waiting for the running chunk's answer (the engine thread is about
        to end). Rows written so far stay in the output file; the stopped chunk's rows were never written."""
        if not self.active:
            return
        self._cancelled = True
        if self._stop is not None:
            self._stop.set()
        self._in_flight = None
        self._job_id += 1  # a listing or chunk still under way reports to no one
        self._finish(CANCELLED)

    def _finish(self, state: str) -> None:
        self.progress.pause()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._set_state(state)

    def _set_state(self, state: str) -> None:
        self.state = state
        self.state_changed.emit(state)
        self.progress_changed.emit()
