"""One engine, two users: the desktop window's own work and the API scheduler's steps, never at once, window first.

    gate = EngineGate()
    with gate.window():   # a chat answer, a folder-run chunk, a model (re)load: waits for the step running now
        ...
    with gate.step():     # one scheduler step (a prefill, or one token for the batch): waits while the window
        ...               # holds the engine or is waiting for it

A plain Lock is not fair: the scheduler releases and takes it again between tokens and could starve the window.
Here a waiting window blocks new steps, so the person at the window waits at most for the step that is running.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager


class EngineGate:
    def __init__(self):
        self._cond = threading.Condition()
        self._held = False
        self._window_waiting = 0

    @contextmanager
    def window(self):
        with self._cond:
            self._window_waiting += 1
            try:
                while self._held:
                    self._cond.wait()
            finally:
                self._window_waiting -= 1
            self._held = True
        try:
            yield
        finally:
            self._release()

    @contextmanager
    def step(self):
        with self._cond:
            while self._held or self._window_waiting:
                self._cond.wait()
            self._held = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()
