"""Conversations: the turns asked about each image this session. Plain Python, no Qt.

PaliGemma answers every prompt on its own (it is not a chat model), so a turn is the image plus one prompt;
the list of turns is for the person, not context for the model.

A turn keeps every answer it was given, as versions: Regenerate adds one, and editing a turn starts a new turn at
the bottom that carries the original version along, so nothing a person saw is ever overwritten (LM Studio and
Jan browse these as ‹ 1/2 ›). Versions and turns are plain dataclasses so that `dataclasses.asdict` serialises
them as they are.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

from vlm_core.runtime.answers import Detection

_ids = itertools.count(1)

WAITING, STREAMING, DONE, STOPPED, FAILED = "waiting", "streaming", "done", "stopped", "failed"
STOP_MAX_TOKENS = "max_new_tokens"  # vlm_core.runtime.generate's name for it; that module imports torch


@dataclass
class Version:
    """One prompt sent and the answer it got."""

    prompt: str
    text: str = ""
    state: str = WAITING
    stop_reason: str = ""  # "eos", "max_new_tokens" or "cancelled", once finished
    stats: dict | None = None  # generated_tokens, ttft_s, decode_tokens_per_s, ...
    error: str = ""
    detections: list[Detection] = field(default_factory=list)  # objects found by detect / segment

    @property
    def finished(self) -> bool:
        return self.state in (DONE, STOPPED, FAILED)

    def start(self) -> None:
        self.state = STREAMING

    def append(self, text: str) -> None:
        self.text += text

    def finish(self, state: str, stats: dict) -> None:
        self.state, self.stats = state, stats
        self.stop_reason = stats.get("stop_reason", "")

    def fail(self, error: str) -> None:
        self.state, self.error = FAILED, error

    def hit_token_limit(self) -> bool:
        return self.state == DONE and self.stop_reason == STOP_MAX_TOKENS


@dataclass
class Turn:
    versions: list[Version]
    shown: int = 0  # the version the card shows; a new version is shown as it starts
    edited_from: int | None = None  # the id of the turn this one was edited from
    id: int = field(default_factory=lambda: next(_ids))

    @classmethod
    def ask(cls, prompt: str) -> Turn:
        return cls([Version(prompt)])

    @property
    def latest(self) -> Version:
        """The newest version: the one a running request writes into."""
        return self.versions[-1]

    @property
    def current(self) -> Version:
        return self.versions[self.shown]

    # The latest version's fields, read-only, for code that thinks in turns (copy, the last answer, tests).
    @property
    def prompt(self) -> str:
        return self.latest.prompt

    @property
    def answer(self) -> str:
        return self.latest.text

    @property
    def state(self) -> str:
        return self.latest.state

    @property
    def stats(self) -> dict | None:
        return self.latest.stats

    @property
    def error(self) -> str:
        return self.latest.error

    def regenerate(self) -> Version:
        """Ask the shown version's prompt again, as a new version; the earlier answers stay browsable."""
        version = Version(self.current.prompt)
        self.versions.append(version)
        self.shown = len(self.versions) - 1
        return version

    def edited(self, prompt: str) -> Turn:
        """A new turn for an edited prompt: its first version is (a copy of) the one being edited, its second the
        edit, so ‹ 1/2 › on the new card compares them; this turn is left as it is."""
        original = replace(self.current, detections=list(self.current.detections))
        return Turn([original, Version(prompt)], shown=1, edited_from=self.id)

    def show(self, index: int) -> bool:
        """Browse to version `index` (0-based); False when out of range or while an answer is being written."""
        if not 0 <= index < len(self.versions) or not self.latest.finished:
            return False
        self.shown = index
        return True


@dataclass
class ImageEntry:
    key: str  # content hash: the same picture opened twice is one entry
    name: str
    width: int
    height: int
    turns: list[Turn] = field(default_factory=list)

    def number_of(self, turn: Turn) -> int:
        """1-based position, as the chat shows it ("Editing turn 2")."""
        return next((i + 1 for i, t in enumerate(self.turns) if t.id == turn.id), 0)


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
        """The newest text the current image's chat shows (the shown version of the last turn that has one)."""
        entry = self.current
        if entry:
            for turn in reversed(entry.turns):
                if turn.current.text:
                    return turn.current.text
        return ""
