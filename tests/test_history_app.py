"""History in the window, with the real engine on a toy checkpoint, real SQLite and real widgets: conversations come
back after a restart (turns, versions, overlays), survive a SIGKILL mid-answer, a corrupt file, a full disk and a
second window; search, delete with undo, and "Don't keep history"."""

from __future__ import annotations

import ast
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QItemSelectionModel, QMimeData, QPoint, QPointF, QSettings, Qt, QTimer, QUrl
from PySide6.QtGui import QDropEvent

from desktop_app.conversation import DONE
from desktop_app.history import store as st
from desktop_app.history.store import HistoryStore
from desktop_app.views.main_window import MainWindow

LOAD_TIMEOUT = 60_000
ANSWER_TIMEOUT = 60_000
DETECTION = "<loc0256><loc0128><loc0768><loc0512> cup ; <loc0000><loc0512><loc1023><loc1023> plate"


@pytest.fixture
def history_dir(tmp_path):
    return tmp_path / "history"


@pytest.fixture
def settings_path(tmp_path, history_dir):
    path = tmp_path / "settings.ini"
    s = QSettings(str(path), QSettings.Format.IniFormat)
    s.setValue("history/folder", str(history_dir))
    s.setValue("max_new_tokens", 12)
    s.sync()
    return path


@pytest.fixture
def make_window(qtbot, settings_path):
    def make(model_dir, wait_ready=True):
        store = QSettings(str(settings_path), QSettings.Format.IniFormat)
        w = MainWindow(model_dir=str(model_dir), settings_store=store)
        # At teardown pytest-qt closes it and deletes it at once: first a close that answers the question a test
        # left answers waiting for (a full disk), so the window is really closed, its threads ended, before that.
        qtbot.addWidget(w, before_close_func=lambda w: close_window(qtbot, w))
        w.show()
        w.history_panel.show()  # the offscreen screen is 800 px wide, where a first start keeps History closed
        if wait_ready:
            qtbot.waitUntil(lambda: w.engine.ready, timeout=LOAD_TIMEOUT)
        return w

    return make


def open_message_box():
    """The message box on screen, found as a person would see it: among the application's windows."""
    from PySide6.QtWidgets import QApplication, QMessageBox

    return next((w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()), None)


def close_boxes_later(window, ms=30_000):
    """A modal box must never hang the suite: one still open after `ms` is closed (its safe answer), so a test
    whose close blocked in a box fails instead of waiting for ever. Tied to `window`: it ends with the test."""
    def close_them():
        from PySide6.QtWidgets import QApplication, QMessageBox

        for box in QApplication.topLevelWidgets():
            if isinstance(box, QMessageBox) and box.isVisible():
                box.reject()

    timer = QTimer(window)
    timer.setSingleShot(True)
    timer.timeout.connect(close_them)
    timer.start(ms)


def close_asking(qtbot, window, close=None):
    """Close the window as a person does (the title bar's button; `close`: another way, File › Quit). With answers
    still waiting to be saved it asks (views/unsaved_answers.py) once a last try has failed: that question is
    returned, open; None when the window closed at once."""
    close_boxes_later(window)
    (close or window.close)()
    qtbot.waitUntil(lambda: not window.isVisible() or open_message_box() is not None, timeout=10_000)
    return open_message_box()


def click_button(box, text):
    from PySide6.QtTest import QTest

    QTest.mouseClick(next(b for b in box.buttons() if b.text() == text), Qt.MouseButton.LeftButton)


def close_window(qtbot, window):
    """Close it; answers a test left waiting (a full disk) are given up."""
    if (box := close_asking(qtbot, window)) is not None:
        click_button(box, "Quit without saving them")


def drop_file(qtbot, window, path):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.image_shown, timeout=10_000):
        window.dropEvent(event)


def ask(qtbot, window, task, text=""):
    with qtbot.waitSignal(window.answer_done, timeout=ANSWER_TIMEOUT):
        window.send(task, text)
    return window.session.current.turns[-1]


def feed_answer(window, turn, answer):
    """A known answer as a new version of `turn`, through the same slots the engine's signals reach (the toy's
    random weights never write a detection)."""
    turn.regenerate()
    window._requests[999] = (turn.id, window.image.key)
    window._on_started(999)
    window._on_token(999, answer)
    window._on_finished(999, {"prompt_tokens": 10, "generated_tokens": 9, "ttft_s": 0.01,
                              "decode_tokens_per_s": 100.0, "total_s": 0.1, "stop_reason": "eos"})


class Row:
    """One row of the History list as a person sees it: its text, its thumbnail, where it is drawn."""

    def __init__(self, panel, row):
        self.panel, self.index = panel, panel.model.index(row)

    def text(self) -> str:
        return self.index.data(Qt.ItemDataRole.DisplayRole)

    def icon(self):
        return self.index.data(Qt.ItemDataRole.DecorationRole)

    def rect(self):
        return self.panel.list.visualRect(self.index)


def panel_rows(qtbot, window, count):
    panel = window.history_panel
    qtbot.waitUntil(lambda: panel.model.rowCount() == count, timeout=10_000)
    return [Row(panel, i) for i in range(count)]


def click_row(qtbot, window, row, modifier=Qt.KeyboardModifier.NoModifier):
    """A person's click on a History row: it opens that conversation."""
    from PySide6.QtTest import QTest

    panel = window.history_panel
    panel.list.scrollTo(row.index)
    rect = row.rect()
    # Through the top-level window that holds the list (the main window, or History itself when it floats over a
    # narrow window), as the windowing system delivers it: that is what moves the focus to the list.
    top = panel.list.window()
    at = panel.list.viewport().mapTo(top, QPoint(rect.left() + min(40, rect.width() // 2), rect.center().y()))
    with qtbot.waitSignal(window.image_shown, timeout=10_000):
        QTest.mouseClick(top.windowHandle(), Qt.MouseButton.LeftButton, modifier, at)


choose = click_row


def search(qtbot, window, text):
    """Type into the search box, as a person does."""
    from PySide6.QtTest import QTest

    panel = window.history_panel
    panel.search.clear()
    QTest.keyClicks(panel.search, text)
    qtbot.waitUntil(lambda: panel.model.query == text.strip() and not panel.model._fetching, timeout=10_000)


def test_two_images_come_back_after_a_restart_with_turns_versions_and_overlays(qtbot, make_window, toy_model_dir,
                                                                                 photos, tmp_path):
    cat, coffee = tmp_path / "cat.png", tmp_path / "coffee.png"
    cat.write_bytes(photos[0].read_bytes())
    coffee.write_bytes(photos[2].read_bytes())  # 600 x 400
    w = make_window(toy_model_dir)
    drop_file(qtbot, w, cat)
    caption = ask(qtbot, w, "caption")
    drop_file(qtbot, w, coffee)
    detect = ask(qtbot, w, "detect", "cup ; plate")
    feed_answer(w, detect, DETECTION)
    expected_rects = [(r.x(), r.y(), r.width(), r.height()) for r in w.canvas.overlay_rects()]
    assert len(expected_rects) == 2
    asked = {"cat.png": [(v.prompt, v.text) for v in caption.versions],
             "coffee.png": [(v.prompt, v.text) for v in detect.versions]}
    w.close()
    cat.unlink()  # history has its own copy
    coffee.unlink()

    w2 = make_window(toy_model_dir)
    first, second = panel_rows(qtbot, w2, 2)
    assert first.text().startswith("coffee.png") and "cup ; plate" in first.text()  # newest first
    assert second.text().startswith("cat.png") and asked["cat.png"][0][1][:20] in second.text()
    assert not first.icon().isNull()

    choose(qtbot, w2, second)
    [turn] = w2.session.current.turns
    assert [(v.prompt, v.text) for v in turn.versions] == asked["cat.png"]
    assert turn.state == DONE and turn.stats["generated_tokens"] == caption.stats["generated_tokens"]
    assert w2.chat.widget_for(turn.id) is not None
    assert "cat.png" in w2.image_info.text()

    choose(qtbot, w2, first)
    [turn] = w2.session.current.turns
    assert [(v.prompt, v.text) for v in turn.versions] == asked["coffee.png"]
    assert turn.shown == 1 and [d.label for d in turn.current.detections] == ["cup", "plate"]
    rects = [(r.x(), r.y(), r.width(), r.height()) for r in w2.canvas.overlay_rects()]
    assert rects == [pytest.approx(r) for r in expected_rects]  # the boxes are back without running the model


def test_opening_an_image_already_in_history_continues_its_conversation(qtbot, make_window, toy_model_dir, photos,
                                                                         history_dir):
    w = make_window(toy_model_dir)
    drop_file(qtbot, w, photos[0])
    first = ask(qtbot, w, "caption")
    w.close()

    w2 = make_window(toy_model_dir)
    drop_file(qtbot, w2, photos[0])
    qtbot.waitUntil(lambda: len(w2.session.current.turns) == 1, timeout=10_000)
    assert w2.session.current.turns[0].answer == first.answer
    assert w2.chat.widget_for(w2.session.current.turns[0].id) is not None
    ask(qtbot, w2, "ocr")
    w2.close()

    s = HistoryStore.open(history_dir)
    [conv] = list(s.all_conversations())
    assert [(t.position, t.prompt) for t in conv.turns] == [(0, "caption en"), (1, "ocr")]
    s.close()


def test_search_finds_a_turn_by_a_word_of_its_answer_and_delete_can_be_undone(qtbot, make_window, toy_model_dir,
                                                                               photos):
    w = make_window(toy_model_dir)
    drop_file(qtbot, w, photos[0])
    ask(qtbot, w, "caption")
    drop_file(qtbot, w, photos[2])
    feed_answer(w, ask(qtbot, w, "detect", "cup ; plate"), DETECTION)
    panel = w.history_panel
    panel_rows(qtbot, w, 2)

    search(qtbot, w, "plat")  # a prefix of a word of the answer
    [hit] = panel_rows(qtbot, w, 1)
    assert "coffee.png" in hit.text() and "plate" in hit.text()
    search(qtbot, w, "nosuchwordanywhere")
    panel_rows(qtbot, w, 0)
    assert "No results" in panel.status.text() and panel.status.isVisible()

    search(qtbot, w, "")
    items = panel_rows(qtbot, w, 2)
    panel.list.selectionModel().clearSelection()
    panel.list.selectionModel().select(items[0].index, QItemSelectionModel.SelectionFlag.Select)
    panel.delete_selected()
    [left] = panel_rows(qtbot, w, 1)
    assert "chelsea.png" in left.text() and panel.undo_bar.isVisible()
    panel.undo()
    panel_rows(qtbot, w, 2)

    panel.client.clear_all()  # what "Clear all…" does once confirmed
    panel_rows(qtbot, w, 0)
    panel.undo()
    panel_rows(qtbot, w, 2)

    # Deleting the conversation on screen: what the window shows is not written back; a new question starts anew.
    panel.show_current(w.image.key)
    panel.delete_selected()
    panel_rows(qtbot, w, 1)
    ask(qtbot, w, "ocr")
    newest, _ = panel_rows(qtbot, w, 2)
    assert "first: ocr" in newest.text() and "1 turn " in newest.text()


def test_dont_keep_history_stores_nothing(qtbot, make_window, toy_model_dir, photos, settings_path, history_dir):
    s = QSettings(str(settings_path), QSettings.Format.IniFormat)
    s.setValue("history/enabled", False)
    s.sync()
    w = make_window(toy_model_dir)
    drop_file(qtbot, w, photos[0])
    ask(qtbot, w, "caption")
    assert w.history_panel.keep_action.isChecked()
    w.close()
    assert not history_dir.exists()  # not even an empty database

    w2 = make_window(toy_model_dir)
    w2.history_panel.keep_action.setChecked(False)  # turned back on: later answers are kept
    drop_file(qtbot, w2, photos[1])
    ask(qtbot, w2, "caption")
    panel_rows(qtbot, w2, 1)
    assert QSettings(str(settings_path), QSettings.Format.IniFormat).value("history/enabled") in (True, "true")


def test_a_corrupt_database_is_kept_aside_and_the_app_starts(qtbot, make_window, toy_model_dir, photos, history_dir):
    history_dir.mkdir(parents=True)
    junk = b"SQLite format 2\x00 but not really" * 200
    (history_dir / st.DB_NAME).write_bytes(junk)
    w = make_window(toy_model_dir)
    qtbot.waitUntil(lambda: "damaged" in w.notice.text(), timeout=10_000)
    [aside] = history_dir.glob("history.corrupt-*.sqlite3")
    assert aside.read_bytes() == junk and aside.name in w.notice.text()
    drop_file(qtbot, w, photos[0])  # and history works on the fresh file
    ask(qtbot, w, "caption")
    panel_rows(qtbot, w, 1)


def test_a_full_disk_is_reported_and_the_answer_goes_on(qtbot, make_window, toy_model_dir, photos):
    w = make_window(toy_model_dir)
    drop_file(qtbot, w, photos[0])
    ask(qtbot, w, "caption")
    panel_rows(qtbot, w, 1)
    conn = w.history.client.worker.store.conn  # idle now: the history thread is waiting for work
    conn.execute(f"PRAGMA max_page_count={conn.execute('PRAGMA page_count').fetchone()[0]}")  # SQLITE_FULL
    w.settings.max_new_tokens = 1500  # ~6 KB of text: more than the free space of any page
    turn = ask(qtbot, w, "describe")
    assert turn.state == DONE and turn.stats["generated_tokens"] > 0
    qtbot.waitUntil(lambda: "full" in w.notice.text(), timeout=10_000)
    assert "Generation goes on" in w.notice.text()


def test_a_second_window_reads_only_and_saves_once_the_first_is_closed(qtbot, make_window, toy_model_dir, photos,
                                                                       history_dir):
    a = make_window(toy_model_dir)
    drop_file(qtbot, a, photos[0])
    ask(qtbot, a, "caption")
    b = make_window(toy_model_dir)
    qtbot.waitUntil(lambda: "another PaliGemma Desktop window" in b.notice.text(), timeout=10_000)
    panel_rows(qtbot, b, 1)  # it shows what the first one saved
    assert "Read-only" in b.history_panel.status.text()
    a.close()
    drop_file(qtbot, b, photos[1])
    ask(qtbot, b, "caption")
    panel_rows(qtbot, b, 2)  # the first write found the store free and took it over
    assert "saves answers again" in b.notice.text()
    b.close()
    s = HistoryStore.open(history_dir)
    assert sorted(c.name for c in s.list_conversations()) == ["astronaut.png", "chelsea.png"]
    s.close()


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from PySide6.QtCore import QObject, QSettings, QTimer
    from PySide6.QtWidgets import QApplication
    from desktop_app.views.main_window import MainWindow

    model, settings, photo = sys.argv[1:4]
    app = QApplication([])
    window = MainWindow(model_dir=model, settings_store=QSettings(settings, QSettings.Format.IniFormat))
    window.show()

    class Script(QObject):
        def __init__(self):
            super().__init__()
            self.done = 0
            window.engine.worker.model_ready.connect(self.ready)
            window.image_shown.connect(self.shown)
            window.answer_done.connect(self.answered)
            window.engine.worker.token.connect(self.token)

        def ready(self, *_):
            window.open_image(photo)

        def shown(self, *_):
            window.send("caption", "")

        def answered(self, *_):
            print("ANSWER " + repr(window.session.current.turns[-1].answer), flush=True)
            window.settings.max_new_tokens = 4096  # the long one, killed long before it ends
            window.send("describe", "")

        def token(self, _request, text):
            print("TOKEN " + repr(text), flush=True)

    script = Script()
    app.exec()
""")


def test_sigkill_mid_answer_loses_only_its_last_seconds(toy_model_dir, photos, settings_path, history_dir, tmp_path):
    script = tmp_path / "kill_me.py"
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.Popen([sys.executable, str(script), str(toy_model_dir), str(settings_path), str(photos[0])],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).parent.parent)
    try:
        # Watch the file from outside, as another reader would, until the long answer has been checkpointed twice.
        seen: list[str] = []
        deadline = time.monotonic() + 60  # a guard against a hang, not a measurement
        while len(seen) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            try:
                conn = sqlite3.connect(f"{(history_dir / st.DB_NAME).as_uri()}?mode=ro", uri=True)
                row = conn.execute("SELECT answer FROM turns WHERE prompt='describe en' AND state='streaming'"
                                   ).fetchone()
                conn.close()
            except sqlite3.Error:
                continue  # not created yet
            if row and row[0] and (not seen or row[0] != seen[-1]):
                seen.append(row[0])
        assert len(seen) == 2, "the long answer was never checkpointed twice"
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    lines = out.splitlines()
    answered = next(i for i, line in enumerate(lines) if line.startswith("ANSWER "))
    first_answer = ast.literal_eval(lines[answered][7:])
    streamed = "".join(ast.literal_eval(line[6:]) for line in lines[answered:] if line.startswith("TOKEN "))

    s = HistoryStore.open(history_dir)
    [conv] = list(s.all_conversations())
    done, cut = conv.turns
    assert (done.prompt, done.answer, done.state) == ("caption en", first_answer, st.DONE)
    assert (cut.prompt, cut.state, cut.stop_reason) == ("describe en", st.STOPPED, st.INTERRUPTED)
    assert cut.answer.startswith(seen[-1])  # nothing checkpointed was lost
    assert streamed.startswith(cut.answer)  # and what is there is what was generated, up to the last checkpoint
    assert cut.model["folder"] == str(toy_model_dir) and cut.sampling["max_new_tokens"] == 4096
    s.close()


def test_file_export_writes_the_current_conversation_with_its_boxes(qtbot, make_window, toy_model_dir, photos,
                                                                   tmp_path):
    w = make_window(toy_model_dir)
    drop_file(qtbot, w, photos[2])
    feed_answer(w, ask(qtbot, w, "detect", "cup ; plate"), DETECTION)
    panel_rows(qtbot, w, 1)
    with qtbot.waitSignal(w.history.client.worker.exported, timeout=10_000):
        w.history.client.export("markdown", w.image.key, str(tmp_path / "coffee.md"))  # what File › Export does
    assert "Exported to" in w.notice.text()
    md = (tmp_path / "coffee.md").read_text(encoding="utf-8")
    assert "## 1. detect cup ; plate" in md and "| 1 | cup |" in md and "| 2 | plate |" in md
    assert "](coffee-annotated-1.png)" in md and (tmp_path / "coffee-annotated-1.png").is_file()
    assert (tmp_path / "coffee-image.png").read_bytes() == photos[2].read_bytes()
    export_menu = next(a.menu() for a in w.menuBar().actions() if a.text() == "&File").actions()
    assert any(a.menu() is not None and a.menu().title() == "E&xport" for a in export_menu)


def test_decoded_masks_are_stored_and_come_back_without_the_decoder(qtbot, make_window, toy_model_dir, photos,
                                                                     tmp_path, monkeypatch, history_dir):
    from tests.vae_fixture import write_random_vae

    monkeypatch.setenv("PALIGEMMA_VAE", str(write_random_vae(tmp_path / "vae-oid.npz")))
    w = make_window(toy_model_dir)
    if not hasattr(w, "objects"):
        pytest.skip("the window has no mask decoding yet")
    drop_file(qtbot, w, photos[0])
    seg = "<loc0100><loc0100><loc0900><loc0900>" + "".join(f"<seg{i * 7 % 128:03d}>" for i in range(16)) + " cat"
    feed_answer(w, ask(qtbot, w, "segment", "cat"), seg)
    qtbot.waitUntil(lambda: getattr(w.session.current.turns[-1].current, "masks", None) is not None,
                    timeout=30_000)
    decoded = w.session.current.turns[-1].current.masks[0]

    def stored_mask():
        conn = sqlite3.connect(f"{(history_dir / st.DB_NAME).as_uri()}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT count(*) FROM turns WHERE objects LIKE '%mask64_f16%'").fetchone()[0] > 0
        finally:
            conn.close()

    qtbot.waitUntil(stored_mask, timeout=10_000)
    w.close()

    monkeypatch.setenv("PALIGEMMA_VAE", str(tmp_path / "no-such-decoder.npz"))  # the restored masks need none
    w2 = make_window(toy_model_dir)
    choose(qtbot, w2, panel_rows(qtbot, w2, 1)[0])
    restored = w2.session.current.turns[-1].current.masks[0]
    assert restored is not None and abs(restored - decoded).max() < 1e-2  # stored as float16
    qtbot.waitUntil(lambda: any(m is not None for m in w2.canvas._masks), timeout=10_000)  # drawn, no decoder
    with qtbot.waitSignal(w2.history.client.worker.exported, timeout=10_000):
        w2.history.client.export("png", w2.image.key, str(tmp_path / "cat.png"))
    assert (tmp_path / "cat.png").is_file()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from Python 3.12 on")
def test_the_qt_binding_keeps_its_references_to_none(qtbot):
    """PySide6 6.12.0 drops a reference to None on every void C++ call; the panel's list rebuild (thousands of them
    for a long history) then kills the app with "deallocating None" (pyproject.toml excludes that release)."""
    from PySide6.QtWidgets import QListWidgetItem

    item = QListWidgetItem("x")
    before = sys.getrefcount(None)
    for i in range(2000):
        item.setToolTip(str(i))
    assert sys.getrefcount(None) - before > -100


def row_for(qtbot, window, name, count):
    return next(item for item in panel_rows(qtbot, window, count) if name in item.text())


def test_a_conversation_of_this_session_reopened_from_history_shows_each_turn_once(qtbot, make_window,
                                                                                   toy_model_dir, photos):
    w = make_window(toy_model_dir)
    drop_file(qtbot, w, photos[0])
    ask(qtbot, w, "caption")  # caption chelsea, then open two other images, then click the chelsea row
    drop_file(qtbot, w, photos[1])
    drop_file(qtbot, w, photos[2])
    click_row(qtbot, w, row_for(qtbot, w, "chelsea.png", 1))
    assert "chelsea.png" in w.image_info.text()
    assert len(w.session.current.turns) == 1 and len(w.chat._cards) == 1
    ask(qtbot, w, "ocr")
    click_row(qtbot, w, row_for(qtbot, w, "chelsea.png", 1))
    assert len(w.session.current.turns) == 2 and len(w.chat._cards) == 2


def test_del_after_a_click_on_a_row_deletes_it_and_clears_the_screen(qtbot, make_window, toy_model_dir, photos):
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    w = make_window(toy_model_dir)
    w.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w, timeout=5_000)
    drop_file(qtbot, w, photos[0])
    ask(qtbot, w, "caption")
    drop_file(qtbot, w, photos[1])
    ask(qtbot, w, "caption")
    click_row(qtbot, w, row_for(qtbot, w, "chelsea.png", 2))
    qtbot.waitUntil(lambda: QApplication.focusWidget() is w.history_panel.list, timeout=5_000)
    QTest.keyClick(QApplication.focusWidget(), Qt.Key.Key_Delete)
    [left] = panel_rows(qtbot, w, 1)
    assert "astronaut.png" in left.text()
    # The conversation on screen was the one deleted: the image stays, with no turns and no overlays.
    assert "chelsea.png" in w.image_info.text()
    assert w.session.current.turns == [] and len(w.chat._cards) == 0
    turn = ask(qtbot, w, "ocr")  # and the next question starts a new conversation
    assert len(w.session.current.turns) == 1 and list(w.chat._cards) == [turn.id]
    newest, _ = panel_rows(qtbot, w, 2)
    assert "chelsea.png" in newest.text() and "1 turn " in newest.text()


def test_a_whitespace_only_answer_reads_as_empty_and_copy_as_markdown_says_no_image_is_included(
        qtbot, make_window, toy_model_dir, photos):
    from PySide6.QtGui import QGuiApplication

    w = make_window(toy_model_dir)
    drop_file(qtbot, w, photos[0])
    turn = ask(qtbot, w, "caption")
    feed_answer(w, turn, "  \n" * 130)
    assert w.chat.widget_for(turn.id).answer_label.text() == "(empty answer)"
    [row] = panel_rows(qtbot, w, 1)
    qtbot.waitUntil(lambda: "(empty answer)" in Row(w.history_panel, 0).text(), timeout=10_000)
    panel = w.history_panel
    panel.show_current(w.image.key)
    copy = next(a for a in panel.export_button.menu().actions() if a.text() == "&Copy as Markdown")
    with qtbot.waitSignal(panel.client.worker.markdown_ready, timeout=10_000):
        copy.trigger()
    qtbot.waitUntil(lambda: "(empty answer)" in QGuiApplication.clipboard().text(), timeout=5_000)
    text = QGuiApplication.clipboard().text()
    assert "not included" in text and "file:" not in text and "\n\n\n\n" not in text
