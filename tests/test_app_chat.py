"""The chat as a person uses it: cards that fit the panel, edits and versions, focus, typed questions, the token
limit, banners, and the keyboard. Real widgets and the real engine on the toy checkpoint."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QRect, QSettings, Qt
from PySide6.QtGui import QColor, QPalette, QTextLayout, QTextOption
from PySide6.QtWidgets import QApplication, QWidget

from desktop_app.conversation import DONE
from desktop_app.prompts import TASKS
from desktop_app.views import notice as cause
from desktop_app.views.chat import INPUT_HINT, keep_phrases

from .test_app_window import ANSWER_TIMEOUT, ask, drop_file, make_window  # noqa: F401 - fixtures


@pytest.fixture
def store(tmp_path):
    """Settings with a history folder of this test's own, so no test sees turns another one stored."""
    s = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    s.setValue("history/folder", str(tmp_path / "history"))
    return s


def feed_answer(window, turn, text: str, stats: dict) -> None:
    """Give `turn` a known answer through the slots the worker's signals reach (the toy model's text is random)."""
    window._requests[999] = (turn.id, window.image.key)
    turn.latest.text = ""
    window._on_started(999)
    if text:
        window._on_token(999, text)
    window._on_finished(999, stats)


def within(child: QWidget, viewport: QWidget) -> bool:
    top_left = child.mapTo(viewport, QPoint(0, 0))
    return 0 <= top_left.x() and top_left.x() + child.width() <= viewport.width()


def test_cards_and_their_buttons_stay_inside_the_panel_at_800x600(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    window.resize(800, 600)
    drop_file(qtbot, window, photos[0])
    turn = ask(qtbot, window, "", "/raw " + "Q" * 400)  # a long unbroken prompt, too
    stats = {"generated_tokens": 128, "ttft_s": 0.5, "decode_tokens_per_s": 31.0, "stop_reason": "eos"}
    feed_answer(window, turn, "W" * 3000, stats)
    with qtbot.waitSignal(window.answer_done, timeout=ANSWER_TIMEOUT):
        window.regenerate(turn.id)  # a second version: the ‹ 1/2 › switcher joins the row
    window.chat.widget_for(turn.id).previous_button.click()
    qtbot.waitUntil(lambda: window.chat.scroll.widget().width() <= window.chat.scroll.viewport().width())
    viewport = window.chat.scroll.viewport()
    card = window.chat.widget_for(turn.id)
    QApplication.processEvents()
    assert card.answer_label.text() == "W" * 3000 and card.version_label.text() == "1/2"
    assert window.chat.width() < 400  # the narrow case the brief is about
    for widget in (card, card.prompt_label, card.answer_label, card.stats_label, card.previous_button,
                   card.version_label, card.next_button, card.copy_button, card.regenerate_button, card.edit_button):
        assert widget.isVisible() and within(widget, viewport), widget
    buttons = [card.previous_button, card.version_label, card.next_button, card.copy_button,
               card.regenerate_button, card.edit_button]
    for b in buttons:  # nothing squeezed below the size its text needs
        assert b.width() >= b.sizeHint().width(), b
    boxes = [QRect(b.mapTo(card, QPoint(0, 0)), b.size()) for b in [card.stats_label, *buttons]]
    assert not any(a.intersects(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert card.stats_label.height() >= card.stats_label.heightForWidth(card.stats_label.width())
    # The answer really wraps: many lines, not one clipped line.
    assert card.answer_label.height() > 20 * card.answer_label.fontMetrics().lineSpacing()
    # The row is too narrow for stats, switcher and three actions: they go onto a second line, none clipped.
    rows = {b.mapTo(card, QPoint(0, 0)).y() for b in (card.stats_label, card.edit_button)}
    assert len(rows) == 2


def test_edit_shows_its_state_sends_a_new_turn_and_keeps_the_original(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    drop_file(qtbot, window, photos[0])
    original = ask(qtbot, window, "caption")
    chat = window.chat
    chat.input.setPlainText("a draft")
    window.edit_turn(original.id)
    assert chat.edit_bar.isVisible() and "Editing turn 1" in chat.edit_label.text()
    assert chat.input.toPlainText() == "caption en" and "border" in chat.widget_for(original.id).styleSheet()
    qtbot.keyClick(chat.input, Qt.Key.Key_Escape)  # no answer running: leave the edit, the draft comes back
    assert not chat.edit_bar.isVisible() and chat.input.toPlainText() == "a draft" and chat.editing is None
    assert chat.widget_for(original.id).styleSheet() == ""

    window.edit_turn(original.id)
    chat.input.setPlainText("caption fr")
    with qtbot.waitSignal(window.answer_done, timeout=ANSWER_TIMEOUT):
        chat.input.submitted.emit(chat.input.toPlainText())  # Enter
    turns = window.session.current.turns
    assert len(turns) == 2 and turns[0] is original and not chat.edit_bar.isVisible()
    assert [v.prompt for v in original.versions] == ["caption en"] and original.state == DONE
    edited = turns[1]
    assert [v.prompt for v in edited.versions] == ["caption en", "caption fr"] and edited.state == DONE
    assert edited.versions[0].text == original.answer
    card = chat.widget_for(edited.id)
    assert chat.cards()[-1] is card  # at the bottom
    assert card.version_label.text() == "2/2" and card.prompt_label.text() == "caption fr"
    assert card.origin_label.text() == "Edited from turn 1"
    card.previous_button.click()
    assert card.version_label.text() == "1/2" and card.prompt_label.text() == "caption en"
    assert card.answer_label.text() == (original.answer or "(empty answer)")
    assert not card.previous_button.isEnabled() and card.next_button.isEnabled()


def test_an_edit_of_a_prompt_sent_raw_stays_raw(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    drop_file(qtbot, window, photos[0])
    turn = ask(qtbot, window, "", "/raw what is this")
    assert turn.prompt == "what is this"
    window.edit_turn(turn.id)
    assert window.chat.input.toPlainText() == "/raw what is this"


def test_regenerate_adds_a_version_instead_of_overwriting(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    drop_file(qtbot, window, photos[0])
    turn = ask(qtbot, window, "caption")
    first = turn.latest
    with qtbot.waitSignal(window.answer_done, timeout=ANSWER_TIMEOUT):
        window.regenerate(turn.id)
    assert window.session.current.turns == [turn] and len(turn.versions) == 2 and turn.versions[0] is first
    assert turn.versions[1].text == first.text  # greedy: the same again
    card = window.chat.widget_for(turn.id)
    assert card.version_label.isVisible() and card.version_label.text() == "2/2"
    window.copy_last_answer()
    assert QApplication.clipboard().text() == turn.answer or not turn.answer


def test_focus_stays_in_the_input(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    window.canvas.setFocus()
    drop_file(qtbot, window, photos[0])  # an image opens: the input takes the focus
    chat = window.chat
    assert QApplication.focusWidget() is chat.input
    language = chat.language_code()
    with qtbot.waitSignal(window.answer_done, timeout=ANSWER_TIMEOUT):
        qtbot.mouseClick(chat.task_buttons["caption"], Qt.MouseButton.LeftButton)
    assert QApplication.focusWidget() is chat.input
    qtbot.keyClicks(QApplication.focusWidget(), "h")  # "h" would pick Hindi in the language box
    assert chat.language_code() == language and chat.input.toPlainText() == "h"

    chat.input.clear()
    chat.task_buttons["ocr"].setFocus(Qt.FocusReason.TabFocusReason)  # reached with Tab, pressed with Space
    with qtbot.waitSignal(window.answer_done, timeout=ANSWER_TIMEOUT):
        qtbot.keyClick(chat.task_buttons["ocr"], Qt.Key.Key_Space)
    assert QApplication.focusWidget() is chat.input


def test_tab_goes_canvas_input_send_tasks_with_no_invisible_stops(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    drop_file(qtbot, window, photos[0])
    window.canvas.setFocus(Qt.FocusReason.TabFocusReason)
    chat = window.chat
    expected = [chat.input, chat.send_button, chat.raw_toggle, *chat.task_buttons.values(), chat.language]
    seen = []
    for _ in expected:
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
        seen.append(QApplication.focusWidget())
    assert seen == expected
    # All the way round the window: every stop is a widget a person can see.
    for _ in range(60):
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
        focused = QApplication.focusWidget()
        assert focused.isVisible() and focused.width() > 0 and focused.height() > 0, focused
        if focused is window.canvas:
            break
    else:
        pytest.fail("Tab never came back to the canvas")


def test_typed_questions_go_out_with_the_answer_prefix_and_the_card_shows_it(qtbot, make_window, toy_model_dir,
                                                                             photos):
    window = make_window(toy_model_dir)
    drop_file(qtbot, window, photos[0])
    chat = window.chat
    chat.language.setCurrentIndex(chat.language.findData("de"))

    def enter(text):
        chat.input.setPlainText(text)
        with qtbot.waitSignal(window.answer_done, timeout=ANSWER_TIMEOUT):
            qtbot.keyClick(chat.input, Qt.Key.Key_Return)
        turn = window.session.current.turns[-1]
        assert chat.widget_for(turn.id).prompt_label.text() == turn.prompt
        return turn.prompt

    assert enter("what is on the table?") == "answer de what is on the table?"
    assert enter("ocr") == "ocr"
    assert enter("/raw what is on the table?") == "what is on the table?"
    qtbot.mouseClick(chat.raw_toggle, Qt.MouseButton.LeftButton)
    assert chat.raw_mode() and enter("tell me") == "tell me"


def test_an_answer_cut_by_the_token_limit_says_so(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    window.settings.max_new_tokens = 3
    drop_file(qtbot, window, photos[0])
    turn = ask(qtbot, window, "caption")
    card = window.chat.widget_for(turn.id)
    assert turn.latest.stop_reason == "max_new_tokens" and turn.stats["generated_tokens"] == 3
    assert card.limit_label.isVisible()
    assert card.limit_label.text() == "stopped at 3 tokens — raise the limit in Settings"

    feed_answer(window, turn, "", {"generated_tokens": 1, "ttft_s": 0.1, "decode_tokens_per_s": 0.0,
                                   "stop_reason": "eos"})
    assert card.answer_label.text() == "(empty answer)" and not card.limit_label.isVisible()


def test_banners_overlay_clear_by_cause_close_on_esc_and_follow_the_palette(qtbot, make_window, toy_model_dir,
                                                                           photos):
    window = make_window(toy_model_dir)
    drop_file(qtbot, window, photos[0])
    notice = window.notice
    splitter_at = window.chat.mapTo(window, QPoint(0, 0))
    notice.show_error("That is not an image.", cause.IMAGE)
    QApplication.processEvents()
    assert notice.isVisible() and window.chat.mapTo(window, QPoint(0, 0)) == splitter_at  # nothing moved
    assert notice.geometry().intersects(QRect(window.centralWidget().rect()))
    drop_file(qtbot, window, photos[1])  # the cause is fixed: a good image opened
    assert not notice.isVisible()

    notice.show_error("The model could not be loaded.", cause.MODEL)
    drop_file(qtbot, window, photos[2])  # an unrelated fix leaves it
    assert notice.isVisible() and notice.cause == cause.MODEL
    qtbot.keyClick(window.chat.input, Qt.Key.Key_Escape)
    assert not notice.isVisible()

    dark = QPalette()
    for role, colour in ((QPalette.ColorRole.Window, "#202124"), (QPalette.ColorRole.WindowText, "#e8eaed"),
                         (QPalette.ColorRole.Base, "#17181a"), (QPalette.ColorRole.Text, "#e8eaed")):
        dark.setColor(role, QColor(colour))
    window.setPalette(dark)
    notice.show_error("Something failed.", cause.ANSWER)
    fill, _ = notice.colours()
    text = notice.label.palette().color(QPalette.ColorRole.WindowText)
    assert fill.lightnessF() < 0.3 and contrast(fill, text) > 7
    window.setPalette(QPalette())
    fill, _ = notice.colours()
    assert contrast(fill, notice.label.palette().color(QPalette.ColorRole.WindowText)) > 7


def contrast(a: QColor, b: QColor) -> float:
    """WCAG contrast ratio."""
    def luminance(c: QColor) -> float:
        def channel(v: float) -> float:
            return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4
        return 0.2126 * channel(c.redF()) + 0.7152 * channel(c.greenF()) + 0.0722 * channel(c.blueF())
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_enter_while_another_image_is_answered_says_so(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    window.settings.max_new_tokens = 4000
    drop_file(qtbot, window, photos[0])
    with qtbot.waitSignal(window.engine.worker.started, timeout=ANSWER_TIMEOUT):
        window.send("", "describe everything")
    drop_file(qtbot, window, photos[1])
    window.chat.input.setPlainText("what is this?")
    qtbot.keyClick(window.chat.input, Qt.Key.Key_Return)
    assert "about chelsea.png is still being written" in window.notice.text()
    assert window.chat.input.toPlainText() == "what is this?"  # kept for when the answer is done
    assert window.session.current.turns == []
    with qtbot.waitSignal(window.answer_done, timeout=ANSWER_TIMEOUT):
        window.stop()
    assert not window.notice.isVisible()  # the cause is gone


def line_starts(text: str, font, width: int) -> list[int]:
    """Where each line starts when `text` is wrapped as QPlainTextEdit paints its placeholder (Qt.TextWordWrap)."""
    layout = QTextLayout(text, font)
    option = QTextOption()
    option.setWrapMode(QTextOption.WrapMode.WordWrap)
    layout.setTextOption(option)
    layout.beginLayout()
    starts = []
    while (line := layout.createLine()).isValid():
        line.setLineWidth(width)
        starts.append(line.textStart())
    layout.endLayout()
    return starts


@pytest.mark.parametrize("hint", [INPUT_HINT, *(t.hint for t in TASKS.values() if t.hint)])
def test_the_input_placeholder_wraps_only_between_phrases(qtbot, hint):
    text = keep_phrases(hint)
    assert text.replace("\u00a0", " ") == " ".join(hint.split())
    font = QApplication.font()
    phrase_starts = {0} | {i + 1 for i, ch in enumerate(text) if ch == " "}
    for width in range(120, 900, 7):
        assert set(line_starts(text, font, width)) <= phrase_starts, width


def test_the_placeholder_fits_the_input_at_800x600(qtbot, make_window, toy_model_dir):
    window = make_window(toy_model_dir)
    window.resize(800, 600)
    QApplication.processEvents()
    box = window.chat.input
    margin = int(box.document().documentMargin())
    lines = len(line_starts(box.placeholderText(), box.font(), box.viewport().width() - margin))
    assert lines * box.fontMetrics().lineSpacing() <= box.viewport().height() - margin


def test_alt_number_presses_the_task_buttons(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    drop_file(qtbot, window, photos[0])
    with qtbot.waitSignal(window.answer_done, timeout=ANSWER_TIMEOUT):
        qtbot.keyClick(window.chat.input, Qt.Key.Key_1, Qt.KeyboardModifier.AltModifier)
    assert window.session.current.turns[-1].prompt == "caption en"
    with qtbot.waitSignal(window.answer_done, timeout=ANSWER_TIMEOUT):
        qtbot.keyClick(window.chat.input, Qt.Key.Key_3, Qt.KeyboardModifier.AltModifier)
    assert window.session.current.turns[-1].prompt == "ocr"
    qtbot.keyClick(window.chat.input, Qt.Key.Key_5, Qt.KeyboardModifier.AltModifier)  # Detect… waits for text
    assert window.chat.task_chip.isVisible() and "Detect" in window.chat.task_chip.text()
    assert QApplication.focusWidget() is window.chat.input


def test_an_image_opened_before_the_model_is_ready_gets_the_focus_once_it_is(qtbot, make_window, toy_model_dir,
                                                                            photos):
    window = make_window(None, wait_ready=False)  # no model yet: the input is disabled when the image opens
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    window.canvas.setFocus()
    drop_file(qtbot, window, photos[0])
    assert not window.chat.input.isEnabled() and QApplication.focusWidget() is not window.chat.input
    window.load_model(str(toy_model_dir))
    qtbot.waitUntil(lambda: window.engine.ready, timeout=60_000)
    qtbot.waitUntil(lambda: window.chat.input.isEnabled())
    assert QApplication.focusWidget() is window.chat.input


def test_browsing_versions_shows_each_versions_boxes(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    drop_file(qtbot, window, photos[2])
    turn = ask(qtbot, window, "detect", "cup ; plate")
    stats = {"generated_tokens": 9, "ttft_s": 0.1, "decode_tokens_per_s": 10.0, "stop_reason": "eos"}
    feed_answer(window, turn, "<loc0256><loc0128><loc0768><loc0512> cup ; <loc0000><loc0512><loc1023><loc1023> plate",
                stats)
    with qtbot.waitSignal(window.answer_done, timeout=ANSWER_TIMEOUT):
        window.regenerate(turn.id)
    feed_answer(window, turn, "<loc0100><loc0100><loc0200><loc0200> cup", stats)
    card = window.chat.widget_for(turn.id)
    assert [d.label for d in window.canvas.detections] == ["cup"] and card.answer_label.text() == "Found 1 object: cup"
    card.previous_button.click()
    assert [d.label for d in window.canvas.detections] == ["cup", "plate"]
    assert card.answer_label.text() == "Found 2 objects: cup, plate" and "• plate" in card.detail_label.text()
    card.next_button.click()
    assert [d.label for d in window.canvas.detections] == ["cup"]
