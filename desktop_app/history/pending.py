"""Writes that have not landed yet, in the order they were asked, until they do. Plain Python, no Qt.

A full disk or a read-only store (another window holds the history) must not lose an answer: every write waits here
and is retried, from the front, until one fails; what follows a failed write waits behind it, so turns are stored in
the order they were asked. Writes of the same answer version are merged in place (a newer row replaces the older,
a checkpoint only updates the text), so the queue holds at most one entry per version however long the disk stays
full, and the answer's full text, once known, is the one that lands.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

from .rows import StoredTurn

Version = tuple[int, int]  # (chat turn id, version index)


@dataclass
class Write:
    key: str  # the image key of the conversation; "" for a checkpoint of a row already written
    version: Version
    row: StoredTurn | None = None  # the whole row
    text: str | None = None  # or only the grown text of a row that is already in the store


class PendingWrites:
    def __init__(self):
        self._queue: deque[Write] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def _find(self, version: Version) -> Write | None:
        return next((w for w in self._queue if w.version == version), None)

    def save(self, key: str, version: Version, row: StoredTurn) -> None:
        if (w := self._find(version)) is not None:
            w.key, w.row, w.text = key, row, None  # keeps its place: an insert stays before later answers
        else:
            self._queue.append(Write(key, version, row))

    def checkpoint(self, version: Version, text: str) -> None:
        if (w := self._find(version)) is None:
            self._queue.append(Write("", version, text=text))
        elif w.row is not None:
            w.row.answer = text
        else:
            w.text = text

    def drop(self, keys: set[str], turn_ids: set[int]) -> None:
        """Forget the writes of deleted conversations (their images' keys, their turns)."""
        self._queue = deque(w for w in self._queue if w.key not in keys and w.version[0] not in turn_ids)

    def flush(self, apply: Callable[[Write], None], keep: Callable[[BaseException], bool]) -> BaseException | None:
        """Apply writes from the front; stop at the first that fails and `keep` says to retry (it stays first),
        drop one that fails for good. Returns the last failure, or None if every write landed."""
        failure = None
        while self._queue:
            try:
                apply(self._queue[0])
            except Exception as e:  # noqa: BLE001 - the caller decides what a failure means
                failure = e
                if keep(e):
                    return e
            self._queue.popleft()
        return failure
