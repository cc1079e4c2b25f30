"""Conversations: the turns asked about each image this session. Plain Python, no Qt.

PaliGemma answers every prompt on its own (it is not a chat model), so a turn is the image plus one prompt;
the list of turns is for the person, not context for the model.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

_ids = itertools.count(1)

WAITING, STREAMING, DONE, STOPPED, FAILED = "waiting", "streaming", "done", "stopped", "failed"


@dataclass
class Turn:
    prompt: str
    answer: str = ""
    state: str = WAITING
    stats: dict | None = None
    error: str = ""
    id: int = field(default_factory=lambda: next(_ids))

    def restart(self, prompt: str | None = None) -> None:
        """Regenerate or edit-and-resend: the same turn, a fresh answer."""
        if prompt is not None:
            self.prompt = prompt
        self.answer, self.state, self.stats, self.error = "", WAITING, None, ""


@dataclass
class ImageEntry:
    key: str  # content hash: the same picture opened twice is one entry
    name: str
    width: int
    height: int
    turns: list[Turn] = field(default_factory=list)


class Session:
    """The images opened in this run of the app, each with its turns."""

    def __init__(self):
        self.entries: dict[str, ImageEntry] = {}
        self.current_key: str | None = None

    @property
    def current(self) -> ImageEntry | None:
        return self.entries.get(self.current_key) if self.current_key else None

    def open(self, key: str, name: str, width: int, height: int) -> ImageEntry:
        """Make `key` current; an image seen before brings its turns back."""
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = ImageEntry(key, name, width, height)
        self.current_key = key
        return entry

    def find_turn(self, turn_id: int) -> Turn | None:
        for entry in self.entries.values():
            for turn in entry.turns:
                if turn.id == turn_id:
                    return turn
        return None

    def last_answer(self) -> str:
        entry = self.current
        if entry:
            for turn in reversed(entry.turns):
                if turn.answer:
                    return turn.answer
        return ""
