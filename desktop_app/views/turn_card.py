"""One turn in the chat: the prompt sent, the answer (streamed in), what it found, and its actions.

A card is never wider than the chat panel: the prompt and answer wrap anywhere a long token run needs it, and the
stats, the version switcher (‹ 1/2 ›) and Copy / Regenerate / Edit sit in a flow layout that wraps onto a second
line when the panel is narrow.
"""

from __future__ import annotations

import re

from PySide6.QtCore import QEvent, QSize, Qt, Signal
from PySide6.QtGui import QFont, QPalette, QTextCursor, QTextOption
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QSizePolicy, QTextBrowser, QToolButton, QVBoxLayout, QWidget

from vlm_core.runtime.answers import Detection

from ..conversation import DONE, FAILED, STOPPED, WAITING, Turn, Version
from .flow_layout import FlowLayout


def format_stats(stats: dict | None) -> str:
    if not stats:
        return ""
    parts = [f"{stats['generated_tokens']} tokens"]
    if stats["generated_tokens"]:
        parts.append(f"first token {stats['ttft_s']:.2f} s")
    if stats["generated_tokens"] > 1:
        parts.append(f"{stats['decode_tokens_per_s']:.1f} tokens/s")
    return " · ".join(parts)


def wrappable(text: str, run: int = 32) -> str:
    """Insert zero-width spaces so a label can wrap PaliGemma's long token runs (<loc0123><loc0456>...) and other
    long unbroken words; copying uses the original text, never this."""
    text = text.replace("><", ">\u200b<")
    return re.sub(r"[^\s\u200b]{%d,}" % (run + 1),
                  lambda m: "\u200b".join(m[0][i:i + run] for i in range(0, len(m[0]), run)), text)


def summarize_detections(detections: list[Detection]) -> str:
    counts: dict[str, int] = {}
    for d in detections:
        counts[d.label or "(no label)"] = counts.get(d.label or "(no label)", 0) + 1
    found = ", ".join(f"{label} ×{n}" if n > 1 else label for label, n in counts.items())
    return f"Found {len(detections)} object{'s' if len(detections) != 1 else ''}: {found}"


def format_detections(detections: list[Detection], masks: list | None = None) -> str:
    """One line per object; "mask" once its mask is decoded (the objects list under the image says why one is
    not, e.g. the decoder is missing)."""
    masks = masks or []
    lines = []
    for i, d in enumerate(detections):
        x0, y0, x1, y1 = (round(v) for v in d.box)
        mask = " · mask" if i < len(masks) and masks[i] is not None else ""
        lines.append(f"• {d.label or '(no label)'} — x {x0}–{x1}, y {y0}–{y1}{mask}")
    return "\n".join(lines)


def answer_text(version: Version) -> str:
    """What the card's answer area says for a version, whatever state it is in."""
    if version.state == WAITING:
        return "…"
    text = summarize_detections(version.detections) if version.detections else version.text
    if version.state == FAILED:
        return (text + "\n\n" if text else "") + "⚠ " + version.error
    if not text.strip() and version.state == DONE:  # whitespace alone would be a tall blank card
        return "(empty answer)"
    if not text.strip() and version.state == STOPPED:
        return "(stopped before any text)"
    return text


def limit_text(version: Version) -> str:
    if not version.hit_token_limit():
        return ""
    return f"stopped at {version.stats['generated_tokens']} tokens — raise the limit in Settings"


class FlowLabel(QLabel):
    """A wrapping label that asks for its one-line width, so a flow layout keeps it on one line when there is room
    and wraps it only when the whole row is narrower than the text (a plain word-wrapping QLabel asks for a
    'pleasant' width and wraps even in a wide row)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWordWrap(True)

    def sizeHint(self) -> QSize:
        m = self.contentsMargins()
        width = self.fontMetrics().horizontalAdvance(self.text()) + m.left() + m.right() + 2 * self.margin() + 2
        return QSize(width, self.heightForWidth(width))


class AnswerView(QTextBrowser):
    """Wrapping text that grows to fit: appends are incremental (only the last paragraph is laid out again, where a
    QLabel would lay out the whole answer on every paint), and it wraps anywhere a long token run needs it, so its
    minimum width is a few characters whatever the text."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setMinimumWidth(40)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)  # selectable with the mouse, never a silent tab stop
        self.viewport().setAutoFillBackground(False)
        self.setStyleSheet("QTextBrowser { background: transparent; }")
        self.document().setDocumentMargin(0)
        self.document().documentLayout().documentSizeChanged.connect(self._fit_height)
        self._fit_height()

    def text(self) -> str:
        return self.toPlainText()

    def setText(self, text: str) -> None:
        if text != self.toPlainText():
            self.setPlainText(text)

    def append_text(self, text: str) -> None:
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text)

    def _fit_height(self, *_):
        self.setFixedHeight(max(self.fontMetrics().lineSpacing(), int(self.document().size().height()) + 2))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit_height()


class TurnCard(QFrame):
    copy_requested = Signal(int)
    regenerate_requested = Signal(int)
    edit_requested = Signal(int)
    version_shown = Signal(int)  # turn id, after ‹ or › changed the version shown
    show_requested = Signal(int)  # turn id: put this turn's (shown version's) objects on the image

    def __init__(self, turn: Turn, parent=None):
        super().__init__(parent)
        self.turn = turn
        self.turn_id = turn.id
        self.edited_from_number = 0  # set by the panel, which knows the order of the turns
        self.can_ask = True  # a model is ready: Regenerate and Edit can send
        self.displayed = False  # its objects are the ones drawn on the image
        self.setObjectName("turnCard")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        muted = self.palette().color(QPalette.ColorRole.PlaceholderText).name()

        self.prompt_label = AnswerView()
        bold = QFont(self.prompt_label.font())
        bold.setBold(True)
        self.prompt_label.setFont(bold)
        self.origin_label = QLabel()
        self.origin_label.setStyleSheet(f"color: {muted}; font-size: small;")
        self.answer_label = AnswerView()
        self.detail_label = QLabel()
        self.detail_label.setWordWrap(True)
        self.detail_label.setTextFormat(Qt.TextFormat.PlainText)
        self.detail_label.setStyleSheet(f"color: {muted};")
        self.detail_label.setMinimumWidth(40)
        self.detail_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.limit_label = QLabel()
        self.limit_label.setWordWrap(True)
        self.stats_label = FlowLabel()
        self.stats_label.setStyleSheet(f"color: {muted}; font-size: small;")

        self.previous_button = self._tool_button("‹", "Previous version", self._previous)
        self.version_label = QLabel()
        self.next_button = self._tool_button("›", "Next version", self._next)
        self.copy_button = self._tool_button("Copy", "Copy this answer", lambda: self.copy_requested.emit(self.turn_id))
        self.regenerate_button = self._tool_button("Regenerate", "Ask this again; the answer so far is kept as a "
                                                   "version", lambda: self.regenerate_requested.emit(self.turn_id))
        self.edit_button = self._tool_button("Edit", "Edit this prompt and send it as a new turn",
                                             lambda: self.edit_requested.emit(self.turn_id))
        # An earlier detect or segment answer goes back on the image with this (or a click on the card).
        self.show_button = self._tool_button("Show on image", "Draw this answer's objects on the image",
                                             lambda: self.show_requested.emit(self.turn_id))
        self.show_button.setCheckable(True)
        # The switcher and the actions wrap as one group, so a narrow card reads "stats" then "‹ 1/2 › Copy
        # Regenerate Edit" rather than splitting the buttons one by one.
        buttons = QWidget()
        row = QHBoxLayout(buttons)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(2)
        for w in (self.previous_button, self.version_label, self.next_button, self.show_button, self.copy_button,
                  self.regenerate_button, self.edit_button):
            row.addWidget(w)
        self.actions = QWidget()
        flow = FlowLayout(self.actions, spacing=8)
        flow.addWidget(self.stats_label)
        flow.addWidget(buttons)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        for w in (self.origin_label, self.prompt_label, self.answer_label, self.detail_label, self.limit_label,
                  self.actions):
            layout.addWidget(w)
        # A click anywhere on the card shows its objects; the text views take the press for selecting, so they
        # are watched (and still select).
        for w in (self.prompt_label.viewport(), self.answer_label.viewport(), self.detail_label):
            w.installEventFilter(self)
        self.set_editing(False)
        self.refresh()

    def eventFilter(self, watched, event) -> bool:
        if event.type() == QEvent.Type.MouseButtonPress and event.button() == Qt.MouseButton.LeftButton:
            self._clicked()
        return False

    def _tool_button(self, text: str, tip: str, slot) -> QToolButton:
        b = QToolButton()
        b.setText(text)
        b.setToolTip(tip)
        b.setAutoRaise(True)
        b.clicked.connect(slot)
        return b

    def refresh(self) -> None:
        """Show the turn's current version as it stands now."""
        turn, version = self.turn, self.turn.current
        self.prompt_label.setText(version.prompt)
        self.origin_label.setText(f"Edited from turn {self.edited_from_number}" if self.edited_from_number else "")
        self.origin_label.setVisible(bool(self.edited_from_number))
        self.answer_label.setText(answer_text(version))
        if version.detections:
            self.detail_label.setText(format_detections(version.detections, getattr(version, "masks", None))
                                      + "\n\n" + wrappable(version.text))
        self.detail_label.setVisible(bool(version.detections))
        self.limit_label.setText(limit_text(version))
        self.limit_label.setVisible(bool(self.limit_label.text()))
        status = format_stats(version.stats)
        if version.state == STOPPED:
            status = (status + " · " if status else "") + "stopped"
        self.stats_label.setText(status)
        self.stats_label.setVisible(bool(status))

        several, idle = len(turn.versions) > 1, turn.latest.finished
        self.version_label.setText(f"{turn.shown + 1}/{len(turn.versions)}")
        for w in (self.previous_button, self.version_label, self.next_button):
            w.setVisible(several)
        self.previous_button.setEnabled(idle and turn.shown > 0)
        self.next_button.setEnabled(idle and turn.shown < len(turn.versions) - 1)
        self.regenerate_button.setEnabled(idle and self.can_ask)
        self.edit_button.setEnabled(idle and self.can_ask)
        no_model = "" if self.can_ask else "\n(Load a model first: Models…)"
        self.regenerate_button.setToolTip("Ask this again; the answer so far is kept as a version" + no_model)
        self.edit_button.setToolTip("Edit this prompt and send it as a new turn" + no_model)
        self.copy_button.setEnabled(bool(version.text))
        self.show_button.setVisible(bool(version.detections))
        self.show_button.setChecked(self.displayed and bool(version.detections))
        self.show_button.setText("On the image" if self.show_button.isChecked() else "Show on image")
        self._paint_frame()

    def set_can_ask(self, can_ask: bool) -> None:
        if can_ask != self.can_ask:
            self.can_ask = can_ask
            self.refresh()

    def set_displayed(self, displayed: bool) -> None:
        """This card's objects are (or are no longer) the ones drawn on the image: its button and frame say so."""
        if displayed != self.displayed:
            self.displayed = displayed
            self.refresh()

    def mousePressEvent(self, event) -> None:
        super().mousePressEvent(event)
        if event.button() == Qt.MouseButton.LeftButton:
            self._clicked()

    def _clicked(self) -> None:
        if self.turn.current.detections and not self.displayed:
            self.show_requested.emit(self.turn_id)

    def set_editing(self, editing: bool) -> None:
        """Mark the card whose prompt is in the input being edited."""
        self._editing = editing
        self._paint_frame()

    def _paint_frame(self) -> None:
        """Editing: a solid highlight border; its objects on the image: a dashed one."""
        colour = self.palette().color(QPalette.ColorRole.Highlight).name()
        if getattr(self, "_editing", False):
            self.setStyleSheet(f"#turnCard {{ border: 2px solid {colour}; border-radius: 4px; }}")
        elif self.displayed and self.turn.current.detections:
            self.setStyleSheet(f"#turnCard {{ border: 2px dashed {colour}; border-radius: 4px; }}")
        else:
            self.setStyleSheet("")

    def append_text(self, text: str) -> None:
        if self.turn.shown != len(self.turn.versions) - 1:
            return  # the text belongs to the latest version, which is not the one shown
        if self.answer_label.text() == "…":
            self.answer_label.setText("")
        self.answer_label.append_text(text)

    def _previous(self) -> None:
        if self.turn.show(self.turn.shown - 1):
            self.refresh()
            self.version_shown.emit(self.turn_id)

    def _next(self) -> None:
        if self.turn.show(self.turn.shown + 1):
            self.refresh()
            self.version_shown.emit(self.turn_id)
