"""The chat panel: the turns about the current image, the task buttons, and the prompt input.

Streamed text arrives as many small deltas; they are buffered and painted on a timer (about 30 times a second), so
a fast GPU cannot flood the event loop with relayouts.
"""

from __future__ import annotations

import html
import re

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent, QPalette, QTextCursor, QTextOption
from PySide6.QtWidgets import (QComboBox, QFrame, QGridLayout, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QScrollArea,
                               QSizePolicy, QTextBrowser, QToolButton, QVBoxLayout, QWidget)

from vlm_core.runtime.answers import Detection

from ..conversation import DONE, FAILED, STOPPED, STREAMING, WAITING, Turn
from ..prompts import LANGUAGES, TASKS

PAINT_INTERVAL_MS = 33


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


def format_detections(detections: list[Detection]) -> str:
    lines = []
    for d in detections:
        x0, y0, x1, y1 = (round(v) for v in d.box)
        mask = " (mask codes)" if d.seg_codes else ""
        lines.append(f"• {d.label or '(no label)'} — x {x0}–{x1}, y {y0}–{y1}{mask}")
    return "\n".join(lines)


class PromptInput(QPlainTextEdit):
    """Enter sends, Shift+Enter adds a line, Esc is passed up (it stops a running answer). An image pasted or dropped
    here (the input usually has the focus) goes to the window instead of becoming text."""

    submitted = Signal(str)
    escape_pressed = Signal()
    image_offered = Signal(object)  # QMimeData holding image data or local files

    @staticmethod
    def _is_image_payload(source) -> bool:
        return source.hasImage() or any(u.isLocalFile() for u in source.urls())

    def canInsertFromMimeData(self, source) -> bool:
        return self._is_image_payload(source) or super().canInsertFromMimeData(source)

    def insertFromMimeData(self, source) -> None:
        if self._is_image_payload(source):
            self.image_offered.emit(source)
        else:
            super().insertFromMimeData(source)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setTabChangesFocus(True)
        self.setFixedHeight(self.fontMetrics().lineSpacing() * 3 + 16)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
                super().keyPressEvent(event)
            else:
                self.submitted.emit(self.toPlainText())
            return
        if event.key() == Qt.Key.Key_Escape:
            self.escape_pressed.emit()
            return
        super().keyPressEvent(event)


class AnswerView(QTextBrowser):
    """The answer text: appends are incremental (only the last paragraph is laid out again, where a QLabel would lay
    out the whole answer on every paint), it wraps anywhere a long token run needs it, and it grows to fit."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.viewport().setAutoFillBackground(False)
        self.setStyleSheet("QTextBrowser { background: transparent; }")
        self.document().setDocumentMargin(0)
        self.document().documentLayout().documentSizeChanged.connect(self._fit_height)
        self._fit_height()

    def text(self) -> str:
        return self.toPlainText()

    def setText(self, text: str) -> None:
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


class TurnWidget(QFrame):
    copy_requested = Signal(int)
    regenerate_requested = Signal(int)
    edit_requested = Signal(int)

    def __init__(self, turn: Turn, parent=None):
        super().__init__(parent)
        self.turn_id = turn.id
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        self.prompt_label = QLabel()
        self.prompt_label.setWordWrap(True)
        self.prompt_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.answer_label = AnswerView()
        self.detail_label = QLabel()
        self.detail_label.setWordWrap(True)
        self.detail_label.setTextFormat(Qt.TextFormat.PlainText)
        self.stats_label = QLabel()
        muted = self.palette().color(QPalette.ColorRole.PlaceholderText).name()
        self.stats_label.setStyleSheet(f"color: {muted}; font-size: small;")
        self.detail_label.setStyleSheet(f"color: {muted};")

        buttons = QHBoxLayout()
        buttons.addWidget(self.stats_label, 1)
        self.copy_button = self._tool_button("Copy", "Copy this answer", self.copy_requested)
        self.regenerate_button = self._tool_button("Regenerate", "Ask this again", self.regenerate_requested)
        self.edit_button = self._tool_button("Edit", "Edit this question and send it again", self.edit_requested)
        for b in (self.copy_button, self.regenerate_button, self.edit_button):
            buttons.addWidget(b)
        layout.addWidget(self.prompt_label)
        layout.addWidget(self.answer_label)
        layout.addWidget(self.detail_label)
        layout.addLayout(buttons)
        self.update_from(turn)

    def _tool_button(self, text: str, tip: str, signal) -> QToolButton:
        b = QToolButton()
        b.setText(text)
        b.setToolTip(tip)
        b.setAutoRaise(True)
        b.clicked.connect(lambda: signal.emit(self.turn_id))
        return b

    def update_from(self, turn: Turn, detections: list[Detection] | None = None) -> None:
        self.prompt_label.setText(f"<b>{html.escape(turn.prompt)}</b>")
        answer = turn.answer
        if detections:
            answer = summarize_detections(detections)
            self.detail_label.setText(format_detections(detections) + "\n\n" + wrappable(turn.answer))
        else:
            self.detail_label.setText("")
        self.detail_label.setVisible(bool(detections))
        if turn.state == WAITING:
            answer = "…"
        elif turn.state == FAILED:
            answer = (answer + "\n\n" if answer else "") + "⚠ " + turn.error
        self.answer_label.setText(answer or ("(empty answer)" if turn.state == DONE else ""))
        status = format_stats(turn.stats)
        if turn.state == STOPPED:
            status = (status + " · " if status else "") + "stopped"
        self.stats_label.setText(status)
        finished = turn.state not in (WAITING, STREAMING)
        for b in (self.regenerate_button, self.edit_button):
            b.setEnabled(finished)
        self.copy_button.setEnabled(bool(turn.answer))

    def append_text(self, text: str) -> None:
        if self.answer_label.text() == "…":
            self.answer_label.setText("")
        self.answer_label.append_text(text)


class ChatPanel(QWidget):
    send_requested = Signal(str, str)  # task key ("" for free text), text
    stop_requested = Signal()
    copy_requested = Signal(int)
    regenerate_requested = Signal(int)
    edit_requested = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._widgets: dict[int, TurnWidget] = {}
        self._pending: dict[int, list[str]] = {}
        self._pending_task = ""
        self._busy = False
        self._can_send = False  # an image and a ready model
        self._paint_timer = QTimer(self)
        self._paint_timer.setInterval(PAINT_INTERVAL_MS)
        self._paint_timer.timeout.connect(self.flush)

        self.note = QLabel("PaliGemma answers each question on its own; it does not see earlier turns.")
        self.note.setWordWrap(True)
        self.note.setStyleSheet(f"color: {self.palette().color(QPalette.ColorRole.PlaceholderText).name()};")

        self._list = QWidget()
        self._list_layout = QVBoxLayout(self._list)
        self._list_layout.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # answers wrap instead
        self.scroll.setWidget(self._list)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.verticalScrollBar().rangeChanged.connect(self._stick_to_bottom)

        self.placeholder = QLabel()
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.placeholder.setOpenExternalLinks(True)
        self._list_layout.insertWidget(0, self.placeholder)
        self.placeholder_actions = QWidget()  # buttons under the placeholder, e.g. "Download"
        self._actions_layout = QHBoxLayout(self.placeholder_actions)
        self._list_layout.insertWidget(1, self.placeholder_actions)
        self.placeholder_actions.setVisible(False)

        # Two short rows keep the panel narrow enough to leave the image most of the window.
        tasks = QGridLayout()
        self.task_buttons: dict[str, QPushButton] = {}
        for i, task in enumerate(TASKS.values()):
            b = QPushButton(task.label)
            b.setToolTip(task.hint or f"Send '{task.key}'")
            b.clicked.connect(lambda _=False, k=task.key: self._task_clicked(k))
            tasks.addWidget(b, i // 3, i % 3)
            self.task_buttons[task.key] = b
        self.language = QComboBox()
        for code, name in LANGUAGES.items():
            self.language.addItem(f"{name} ({code})", code)
        self.language.setToolTip("Language for Caption, Describe and Answer")
        tasks.addWidget(self.language, 0, 3)
        tasks.setColumnStretch(4, 1)

        self.task_chip = QLabel()
        self.task_chip.setVisible(False)
        self.input = PromptInput()
        self.input.setPlaceholderText("Ask about the image, or pick a task above  (Enter sends, Shift+Enter: new line)")
        self.input.submitted.connect(self._submit)
        self.input.escape_pressed.connect(self._escape)
        self.image_offered = self.input.image_offered
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self._send_or_stop)
        row = QHBoxLayout()
        row.addWidget(self.task_chip)
        row.addWidget(self.input, 1)
        row.addWidget(self.send_button)

        layout = QVBoxLayout(self)
        layout.addWidget(self.note)
        layout.addWidget(self.scroll, 1)
        layout.addLayout(tasks)
        layout.addLayout(row)

    # -- state from the window --------------------------------------------------------------------------------
    def set_placeholder(self, text: str, actions: list[tuple[str, object]] = ()) -> None:
        self.placeholder.setText(text)
        self.placeholder.setVisible(bool(text))
        while self._actions_layout.count():
            item = self._actions_layout.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        self._actions_layout.addStretch(1)
        self.action_buttons: dict[str, QPushButton] = {}
        for label, slot in actions:
            b = QPushButton(label)
            b.clicked.connect(slot)
            self._actions_layout.addWidget(b)
            self.action_buttons[label] = b
        self._actions_layout.addStretch(1)
        self.placeholder_actions.setVisible(bool(text and actions))

    def set_enabled_for_input(self, enabled: bool) -> None:
        for b in self.task_buttons.values():
            b.setEnabled(enabled and not self._busy)
        self.input.setEnabled(enabled)
        self._can_send = enabled
        self.send_button.setEnabled(enabled or self._busy)

    def set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.send_button.setText("Stop" if busy else "Send")
        self.send_button.setToolTip("Stop the answer (Esc)" if busy else "Send (Enter)")
        self.send_button.setEnabled(busy or self._can_send)
        for b in self.task_buttons.values():
            b.setEnabled(not busy and self._can_send)

    def language_code(self) -> str:
        return self.language.currentData()

    def show_turns(self, turns: list[Turn]) -> None:
        self.flush()
        for w in self._widgets.values():
            w.deleteLater()
        self._widgets.clear()
        for turn in turns:
            self.add_turn(turn)

    def add_turn(self, turn: Turn) -> TurnWidget:
        w = TurnWidget(turn)
        w.copy_requested.connect(self.copy_requested)
        w.regenerate_requested.connect(self.regenerate_requested)
        w.edit_requested.connect(self.edit_requested)
        self._list_layout.insertWidget(self._list_layout.count() - 1, w)
        self._widgets[turn.id] = w
        return w

    def update_turn(self, turn: Turn, detections: list[Detection] | None = None) -> None:
        self._pending.pop(turn.id, None)
        if w := self._widgets.get(turn.id):
            w.update_from(turn, detections)

    def append_delta(self, turn_id: int, text: str) -> None:
        self._pending.setdefault(turn_id, []).append(text)
        if not self._paint_timer.isActive():
            self._paint_timer.start()

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for turn_id, parts in pending.items():
            if w := self._widgets.get(turn_id):
                w.append_text("".join(parts))
        if not self._pending:
            self._paint_timer.stop()

    def widget_for(self, turn_id: int) -> TurnWidget | None:
        return self._widgets.get(turn_id)

    def edit(self, text: str) -> None:
        self.clear_task()
        self.input.setPlainText(text)
        self.input.setFocus()

    # -- input -------------------------------------------------------------------------------------------------
    def _task_clicked(self, key: str) -> None:
        task = TASKS[key]
        text = self.input.toPlainText().strip()
        if task.needs_text and not text:
            self._pending_task = key
            self.task_chip.setText(f"<b>{task.label.rstrip('…')}:</b>")
            self.task_chip.setVisible(True)
            self.input.setPlaceholderText(task.hint)
            self.input.setFocus()
            return
        self.send_requested.emit(key, text if task.needs_text else "")

    def _submit(self, text: str) -> None:
        if self._busy:
            return
        self.send_requested.emit(self._pending_task, text)

    def _send_or_stop(self) -> None:
        if self._busy:
            self.stop_requested.emit()
        else:
            self._submit(self.input.toPlainText())

    def _escape(self) -> None:
        if self._busy:
            self.stop_requested.emit()
        else:
            self.clear_task()

    def clear_task(self) -> None:
        self._pending_task = ""
        self.task_chip.setVisible(False)
        self.input.setPlaceholderText("Ask about the image, or pick a task above  (Enter sends, Shift+Enter: new line)")

    def _stick_to_bottom(self, _min: int, maximum: int) -> None:
        self.scroll.verticalScrollBar().setValue(maximum)
