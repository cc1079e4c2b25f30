"""The chat panel: the turns about the current image, the task buttons, and the prompt input.

Streamed text arrives as many small deltas; they are buffered and painted on a timer (about 30 times a second), so
a fast GPU cannot flood the event loop with relayouts.

Keyboard: the input keeps the focus (a task button, Alt+1…6, or a new image hands it back), Tab goes input → Send →
Raw → tasks → language, and Esc steps back one layer at a time (the window decides: stop an answer, close a banner,
leave an edit, leave a half-chosen task).
"""

from __future__ import annotations

import re

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent, QKeySequence, QPalette, QShortcut
from PySide6.QtWidgets import (QAbstractSpinBox, QApplication, QComboBox, QFrame, QGridLayout, QHBoxLayout, QLabel,
                               QLineEdit, QPlainTextEdit, QPushButton, QScrollArea, QTextEdit, QToolButton,
                               QVBoxLayout, QWidget)

from ..conversation import Turn
from ..prompts import LANGUAGES, RAW_COMMAND, TASKS, starts_with_task_word
from .flow_layout import FlowLayout
from .turn_card import TurnCard

PAINT_INTERVAL_MS = 33
_TEXT_FIELDS = (QLineEdit, QPlainTextEdit, QTextEdit, QAbstractSpinBox)
INPUT_HINT = "Ask about the image, or pick a task above  (Enter sends, Shift+Enter: new line)"


def keep_phrases(text: str) -> str:
    """Let a placeholder wrap only between phrases (after a comma, before a bracket): the spaces inside a phrase
    become no-break spaces, so "Shift+Enter: new line" never ends a line at "new"."""
    phrases = re.split(r"(?<=,)\s+|\s+(?=\()", text.strip())
    return " ".join(p.replace(" ", "\u00a0") for p in phrases)


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


class ChatPanel(QWidget):
    send_requested = Signal(str, str)  # task key ("" for typed text), text
    stop_requested = Signal()  # Stop pressed, or Esc in the input
    copy_requested = Signal(int)
    regenerate_requested = Signal(int)
    edit_requested = Signal(int)
    version_shown = Signal(int)  # turn id whose card now shows another version
    show_requested = Signal(int)  # turn id whose objects the person wants on the image

    def __init__(self, parent=None):
        super().__init__(parent)
        self._cards: dict[int, TurnCard] = {}
        self._order: list[int] = []  # turn ids, top to bottom
        self._pending: dict[int, list[str]] = {}
        self._pending_task = ""
        self._busy = False
        self._can_send = False  # an image and a ready model
        self.editing: Turn | None = None  # the turn whose prompt is in the input being edited
        self._draft = ""  # what the input held before an edit began; Cancel puts it back
        self._paint_timer = QTimer(self)
        self._paint_timer.setInterval(PAINT_INTERVAL_MS)
        self._paint_timer.timeout.connect(self.flush)
        muted = self.palette().color(QPalette.ColorRole.PlaceholderText).name()

        self.note = QLabel("PaliGemma answers each question on its own; it does not see earlier turns.")
        self.note.setWordWrap(True)
        self.note.setStyleSheet(f"color: {muted};")

        self._list = QWidget()
        self._list_layout = QVBoxLayout(self._list)
        self._list_layout.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # answers wrap instead
        self.scroll.setWidget(self._list)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # it draws no focus; the wheel still scrolls it
        self._follow = True  # keep the newest text in view, unless the person scrolled up to read
        self.scroll.verticalScrollBar().rangeChanged.connect(self._stick_to_bottom)
        self.scroll.verticalScrollBar().valueChanged.connect(self._on_scrolled)

        self.placeholder = QLabel()
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.placeholder.setOpenExternalLinks(True)
        self._list_layout.insertWidget(0, self.placeholder)
        self.placeholder_actions = QWidget()  # buttons under the placeholder, e.g. "Download"; they wrap when narrow
        self._actions_layout = FlowLayout(self.placeholder_actions, spacing=6, centred=True)
        self._list_layout.insertWidget(1, self.placeholder_actions)
        self.placeholder_actions.setVisible(False)
        self.action_buttons: dict[str, QPushButton] = {}

        # Two short rows keep the panel narrow enough to leave the image most of the window.
        tasks = QGridLayout()
        self.task_buttons: dict[str, QPushButton] = {}
        for i, task in enumerate(TASKS.values()):
            b = QPushButton(task.label)
            b.setToolTip(f"{task.hint or 'Send ' + repr(task.key)}  (Alt+{i + 1})")
            b.setFocusPolicy(Qt.FocusPolicy.TabFocus)  # a click leaves the focus in the input
            b.clicked.connect(lambda _=False, k=task.key: self._task_clicked(k))
            tasks.addWidget(b, i // 3, i % 3)
            self.task_buttons[task.key] = b
            shortcut = QShortcut(QKeySequence(f"Alt+{i + 1}"), self)
            shortcut.setContext(Qt.ShortcutContext.WindowShortcut)
            shortcut.activated.connect(b.click)  # click() does nothing while the button is disabled
        self.language = QComboBox()
        for code, name in LANGUAGES.items():
            self.language.addItem(f"{name} ({code})", code)
        self.language.setToolTip("Language for Caption, Describe and Answer")
        # Never focused by a click or a finished task: typed text must not pick a language ("h" is Hindi).
        self.language.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        tasks.addWidget(self.language, 0, 3)
        tasks.setColumnStretch(4, 1)

        self.edit_bar = QFrame()
        self.edit_bar.setFrameShape(QFrame.Shape.StyledPanel)
        self.edit_label = QLabel()
        self.edit_label.setWordWrap(True)
        self.cancel_edit_button = QToolButton()
        self.cancel_edit_button.setText("Cancel")
        self.cancel_edit_button.setToolTip("Stop editing; the turn stays as it was (Esc)")
        self.cancel_edit_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # Esc does it from the keyboard
        self.cancel_edit_button.clicked.connect(self.cancel_edit)
        edit_row = QHBoxLayout(self.edit_bar)
        edit_row.setContentsMargins(8, 4, 4, 4)
        edit_row.addWidget(self.edit_label, 1)
        edit_row.addWidget(self.cancel_edit_button)
        self.edit_bar.setVisible(False)

        self.task_chip = QLabel()
        self.task_chip.setVisible(False)
        self.input = PromptInput()
        self.input.setPlaceholderText(keep_phrases(INPUT_HINT))
        self.input.submitted.connect(self._submit)
        self.input.escape_pressed.connect(self.stop_requested)
        self.image_offered = self.input.image_offered
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self._send_or_stop)
        self.raw_toggle = QToolButton()
        self.raw_toggle.setText("Raw")
        self.raw_toggle.setCheckable(True)
        self.raw_toggle.setToolTip("Off: a typed question is sent as 'answer <language> <question>', as PaliGemma's "
                                   "mix models expect.\nOn: the text is sent exactly as written (so does starting "
                                   f"it with {RAW_COMMAND}).")
        side = QVBoxLayout()
        side.addWidget(self.send_button)
        side.addWidget(self.raw_toggle)
        side.addStretch(1)
        row = QHBoxLayout()
        row.addWidget(self.task_chip, 0, Qt.AlignmentFlag.AlignTop)
        row.addWidget(self.input, 1)
        row.addLayout(side)

        layout = QVBoxLayout(self)
        layout.addWidget(self.note)
        layout.addWidget(self.scroll, 1)
        layout.addLayout(tasks)
        layout.addWidget(self.edit_bar)
        layout.addLayout(row)

        self.set_tab_order_after(None)

    def set_tab_order_after(self, first: QWidget | None) -> None:
        """Tab: `first` (the window's canvas) → input → Send → Raw → tasks → language."""
        chain = [self.input, self.send_button, self.raw_toggle, *self.task_buttons.values(), self.language]
        for a, b in zip([first] if first is not None else [], chain[:1]):
            QWidget.setTabOrder(a, b)
        for a, b in zip(chain, chain[1:]):
            QWidget.setTabOrder(a, b)

    # -- state from the window --------------------------------------------------------------------------------
    def set_placeholder(self, text: str, actions: list[tuple[str, object]] = ()) -> None:
        self.placeholder.setText(text)
        self.placeholder.setVisible(bool(text))
        while self._actions_layout.count():
            item = self._actions_layout.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        self.action_buttons = {}
        for label, slot in actions:
            b = QPushButton(label)
            b.clicked.connect(slot)
            self._actions_layout.addWidget(b)
            self.action_buttons[label] = b
        self.placeholder_actions.setVisible(bool(text and actions))
        if text:
            self._follow = True
            self._stick_to_bottom(0, self.scroll.verticalScrollBar().maximum())

    def set_enabled_for_input(self, enabled: bool) -> None:
        was_enabled, self._can_send = self._can_send, enabled
        self.input.setEnabled(enabled)
        self.raw_toggle.setEnabled(enabled)
        self._update_buttons()
        for card in self._cards.values():
            card.set_can_ask(enabled)
        # The model became ready after the image opened (at start-up): the input takes the focus then, unless
        # the person is typing somewhere else.
        if enabled and not was_enabled and not isinstance(QApplication.focusWidget(), _TEXT_FIELDS):
            self.focus_input()

    def set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.send_button.setText("Stop" if busy else "Send")
        self.send_button.setToolTip("Stop the answer (Esc)" if busy else "Send (Enter)")
        self._update_buttons()

    def _update_buttons(self) -> None:
        if self._busy and self.focusWidget() in self.task_buttons.values():
            self.focus_input()  # a disabled button would pass the focus on to the language box
        for b in self.task_buttons.values():
            b.setEnabled(self._can_send and not self._busy)
        self.send_button.setEnabled(self._can_send or self._busy)

    def language_code(self) -> str:
        return self.language.currentData()

    def raw_mode(self) -> bool:
        return self.raw_toggle.isChecked()

    def focus_input(self, *_) -> None:
        if self.input.isEnabled():
            self.input.setFocus(Qt.FocusReason.OtherFocusReason)

    # -- turns --------------------------------------------------------------------------------------------------
    def show_turns(self, turns: list[Turn]) -> None:
        self.flush()
        self.cancel_edit()
        for card in self._cards.values():
            card.deleteLater()
        self._cards.clear()
        self._order.clear()
        for turn in turns:
            self.add_turn(turn)

    def add_turn(self, turn: Turn) -> TurnCard:
        card = TurnCard(turn)
        card.copy_requested.connect(self.copy_requested)
        card.regenerate_requested.connect(self.regenerate_requested)
        card.edit_requested.connect(self.edit_requested)
        card.version_shown.connect(self.version_shown)
        card.show_requested.connect(self.show_requested)
        card.set_can_ask(self._can_send)
        # Above the placeholder: an offer made while turns are shown ("No model yet" after deleting the model in
        # use) comes after them, where the view is scrolled to, not above the top of the view.
        self._list_layout.insertWidget(self._list_layout.indexOf(self.placeholder), card)
        self._cards[turn.id] = card
        self._order.append(turn.id)
        self._follow = True  # a new turn is what the person is waiting for
        if turn.edited_from is not None:
            card.edited_from_number = self.number_of(turn.edited_from)
            card.refresh()
        return card

    def update_turn(self, turn: Turn) -> None:
        self._pending.pop(turn.id, None)
        if card := self._cards.get(turn.id):
            card.refresh()

    def number_of(self, turn_id: int) -> int:
        """1-based position of a turn in the panel, 0 if it is not shown."""
        return self._order.index(turn_id) + 1 if turn_id in self._order else 0

    def append_delta(self, turn_id: int, text: str) -> None:
        self._pending.setdefault(turn_id, []).append(text)
        if not self._paint_timer.isActive():
            self._paint_timer.start()

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for turn_id, parts in pending.items():
            if card := self._cards.get(turn_id):
                card.append_text("".join(parts))
        if not self._pending:
            self._paint_timer.stop()

    def mark_displayed(self, turn_id: int | None) -> None:
        """The card whose objects the canvas draws now (None: no card's)."""
        for tid, card in self._cards.items():
            card.set_displayed(tid == turn_id)

    def widget_for(self, turn_id: int) -> TurnCard | None:
        return self._cards.get(turn_id)

    def cards(self) -> list[TurnCard]:
        return [self._cards[i] for i in self._order]

    # -- editing ------------------------------------------------------------------------------------------------
    def begin_edit(self, turn: Turn) -> None:
        """Put a turn's prompt in the input; the window sends the edit as a new turn and keeps this one."""
        if self.editing is None:
            self._draft = self.input.toPlainText()
        else:
            self._mark_editing(False)
        self.clear_task()
        self.editing = turn
        prompt = turn.current.prompt
        # A prompt that went out without a task word was sent raw; /raw keeps it that way when resent.
        self.input.setPlainText(prompt if starts_with_task_word(prompt) else f"{RAW_COMMAND} {prompt}")
        self.input.moveCursor(self.input.textCursor().MoveOperation.End)
        self.edit_label.setText(f"<b>Editing turn {self.number_of(turn.id)}</b> — sent as a new turn at the "
                                "bottom; this one is kept.")
        self.edit_bar.setVisible(True)
        self._mark_editing(True)
        self.focus_input()

    def cancel_edit(self) -> None:
        if self.editing is None:
            return
        self.input.setPlainText(self._draft)
        self.end_edit()

    def end_edit(self) -> None:
        """The edit was sent (or given up): leave the editing state, leaving the input as it is."""
        self._mark_editing(False)
        self.editing, self._draft = None, ""
        self.edit_bar.setVisible(False)

    def _mark_editing(self, on: bool) -> None:
        if self.editing is not None and (card := self._cards.get(self.editing.id)):
            card.set_editing(on)

    def cancel_pending(self) -> bool:
        """Esc with no answer running: leave an edit, else a half-chosen task; False if there was neither."""
        if self.editing is not None:
            self.cancel_edit()
            return True
        if self._pending_task:
            self.clear_task()
            return True
        return False

    # -- input -------------------------------------------------------------------------------------------------
    def _task_clicked(self, key: str) -> None:
        task = TASKS[key]
        text = self.input.toPlainText().strip()
        # Focus first: sending disables the buttons, and a disabled focused button passes the focus along.
        self.focus_input()
        if task.needs_text and not text:
            self._pending_task = key
            self.task_chip.setText(f"<b>{task.label.rstrip('…')}:</b>")
            self.task_chip.setVisible(True)
            self.input.setPlaceholderText(keep_phrases(task.hint))
            return
        self.send_requested.emit(key, text if task.needs_text else "")

    def _submit(self, text: str) -> None:
        # Sent even while an answer runs: the window says why it cannot start another.
        self.send_requested.emit(self._pending_task, text)

    def _send_or_stop(self) -> None:
        if self._busy:
            self.stop_requested.emit()
        else:
            self._submit(self.input.toPlainText())

    def clear_task(self) -> None:
        self._pending_task = ""
        self.task_chip.setVisible(False)
        self.input.setPlaceholderText(keep_phrases(INPUT_HINT))

    def _on_scrolled(self, value: int) -> None:
        self._follow = value >= self.scroll.verticalScrollBar().maximum() - 4

    def _stick_to_bottom(self, _min: int, maximum: int) -> None:
        if self._follow:
            self.scroll.verticalScrollBar().setValue(maximum)
