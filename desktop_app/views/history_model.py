"""The History list's model: the conversations (or a search's matches) fetched a page at a time from the history
thread as the list is scrolled, with the complete count. The GUI thread never reads the store: start-up and each
search cost one page (PAGE rows), however big the history is.

Each row shows the image's name and date, the start of its first answer (the prompt when there is none yet), and the
number of turns; a search adds the first matching excerpt.
"""

from __future__ import annotations

import re
import time
from datetime import datetime

from PySide6.QtCore import QAbstractListModel, QModelIndex, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap

from ..history.rows import ConversationSummary, Page

PAGE = 100
ID_ROLE = Qt.ItemDataRole.UserRole
KEY_ROLE = Qt.ItemDataRole.UserRole + 1
_TOKENS = re.compile(r"<(?:loc|seg)\d{3,4}>")
EMPTY_ANSWER = "(empty answer)"


def when(t: float, now: float | None = None) -> str:
    """Today: 14:05; this year: 3 Mar 14:05; older: 3 Mar 2024."""
    d, today = datetime.fromtimestamp(t), datetime.fromtimestamp(now or time.time())
    if d.date() == today.date():
        return d.strftime("%H:%M")
    if d.year == today.year:
        return f"{d.day} {d.strftime('%b %H:%M')}"
    return f"{d.day} {d.strftime('%b %Y')}"


def answer_start(s: ConversationSummary, width: int = 70) -> str:
    """The start of the first answer as a person reads it: <loc>/<seg> tokens left out (a detection reads as its
    labels; only tokens, they are shown), "(empty answer)" for one that is only whitespace, the prompt when there is
    no answer yet."""
    if not s.turn_count:
        return "(no question yet)"
    if not s.first_answer.strip():
        return EMPTY_ANSWER if s.first_answer else s.first_prompt
    text = " ".join(_TOKENS.sub(" ", s.first_answer).split()) or " ".join(s.first_answer.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def item_text(s: ConversationSummary, searching: bool = False) -> str:
    """Three lines, and a fourth in a search's results: every row of a listing has as many, since the list lays
    rows out at one height (each line is elided to the width, never wrapped)."""
    lines = [f"{s.name} · {when(s.updated)}", answer_start(s),
             f"{s.turn_count} turn{'s' if s.turn_count != 1 else ''} · first: {s.first_prompt}"]
    if searching:
        lines.append("“" + s.matches[0] + "”" if s.matches else "(found in its name or a prompt)")
    return "\n".join(lines)


class HistoryModel(QAbstractListModel):
    listed = Signal()  # a listing (first page or a later one) has arrived

    def __init__(self, client, parent=None):
        super().__init__(parent)
        self.client = client
        self.rows: list[ConversationSummary] = []
        self.total = 0
        self.query = ""
        self._seq = 0
        self._fetching = False
        self._icons: dict[str, QIcon] = {}  # image sha256 -> thumbnail, decoded when first drawn
        client.worker.listed.connect(self._on_listed)

    # -- asking -------------------------------------------------------------------------------------------------
    def reload(self, query: str) -> None:
        """The first page for `query`; what is shown stays until it arrives (no flicker while typing). The same
        query again (the history changed) reloads as many rows as are loaded, so the list stays where it was."""
        keep = len(self.rows) if query == self.query else 0
        self.query = query
        self._fetching = True
        self._seq = self.client.list(query, 0, max(PAGE, keep))

    def canFetchMore(self, parent=QModelIndex()) -> bool:
        return not parent.isValid() and not self._fetching and len(self.rows) < self.total

    def fetchMore(self, parent=QModelIndex()) -> None:
        if self.canFetchMore(parent):
            self._fetching = True
            self._seq = self.client.list(self.query, len(self.rows), PAGE)

    def _on_listed(self, seq: int, page: Page) -> None:
        if seq != self._seq:
            return  # an older search's answer
        self._fetching = False
        self.total = page.total
        if page.offset == 0:
            self.beginResetModel()
            self.rows = list(page.rows)
            self.endResetModel()
        elif page.offset == len(self.rows) and page.rows:
            self.beginInsertRows(QModelIndex(), len(self.rows), len(self.rows) + len(page.rows) - 1)
            self.rows.extend(page.rows)
            self.endInsertRows()
        self.listed.emit()

    # -- showing ------------------------------------------------------------------------------------------------
    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= len(self.rows):
            return None
        s = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return item_text(s, bool(self.query))
        if role == Qt.ItemDataRole.DecorationRole:
            return self._icon(s) if s.thumb else None
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{s.name} — {s.width} × {s.height} px\n{s.first_prompt}"
        if role == ID_ROLE:
            return s.id
        if role == KEY_ROLE:
            return s.image_key
        return None

    def _icon(self, s: ConversationSummary) -> QIcon:
        if (icon := self._icons.get(s.image_sha256)) is None:
            pixmap = QPixmap()
            pixmap.loadFromData(s.thumb, "PNG")
            icon = self._icons[s.image_sha256] = QIcon(pixmap)
        return icon

    def row_of(self, conversation_id: int | None = None, key: str | None = None) -> int:
        return next((i for i, s in enumerate(self.rows) if s.id == conversation_id or s.image_key == key), -1)
