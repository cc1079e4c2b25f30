"""Nothing lost at closing: answers still waiting to be saved (a full disk, another window holding the history) make
the window try once more and then ask; "Keep the window open" is the default and keeps them, "Quit without saving
them" closes. With nothing waiting, closing asks nothing.

Real disks and processes as in test_history_recovery.py: a 2 MB tmpfs filled to the last byte (needs root, else
skipped), a writer that is a second process, the toy model answering. Every close arms a timer that closes any box
left open, so a question that blocked would fail the test rather than hang the suite."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys

from PySide6.QtWidgets import QMessageBox

from desktop_app.history import store as st
from desktop_app.views.unsaved_answers import KEEP, QUIT
from tests.test_history_app import (ask, click_button, close_asking, drop_file, make_window,  # noqa: F401 - fixtures
                                    open_message_box, settings_path)
from tests.test_history_recovery import (ROOT, WRITER, fill, history_dir, read_back, shown, small_disk,  # noqa: F401
                                         window_with_history_on)


def one_answer_waiting_on_a_full_disk(qtbot, make_window, model, photos, settings_path, disk):  # noqa: F811
    """A window whose history is on `disk`: chelsea's caption saved, then the disk full and coffee's caption
    waiting (its image copy cannot fit). Returns the window and the history folder."""
    w, history = window_with_history_on(disk, make_window, model, settings_path)
    drop_file(qtbot, w, photos[0])
    ask(qtbot, w, "caption")
    qtbot.waitUntil(lambda: [s for _, _, s in read_back(history).get("chelsea.png", [])] == [st.DONE], timeout=15_000)
    fill(disk / "filler")
    drop_file(qtbot, w, photos[2])  # coffee.png, 466 KB
    ask(qtbot, w, "caption")
    qtbot.waitUntil(lambda: "1 answer is waiting to be saved" in w.notice.text(), timeout=15_000)
    return w, history


def test_closing_with_nothing_waiting_asks_nothing(qtbot, make_window, toy_model_dir, photos,
                                                history_dir):  # noqa: F811
    w = make_window(toy_model_dir)
    drop_file(qtbot, w, photos[0])
    ask(qtbot, w, "caption")
    assert close_asking(qtbot, w) is None
    assert not w.isVisible()
    assert [p for p, _, _ in read_back(history_dir)["chelsea.png"]] == ["caption en"]


def test_a_full_disk_at_closing_asks_and_keep_keeps_the_window_until_the_answers_land(
        qtbot, small_disk, make_window, toy_model_dir, photos, settings_path):  # noqa: F811
    w, history = one_answer_waiting_on_a_full_disk(qtbot, make_window, toy_model_dir, photos, settings_path,
                                                   small_disk)
    box = close_asking(qtbot, w)
    assert box is not None and w.isVisible()
    assert box.text() == "<b>1 answer is not saved yet.</b>"
    assert "is full" in box.informativeText() and str(history) in box.informativeText()
    assert "Quitting now loses them" in box.informativeText()
    assert box.defaultButton().text() == KEEP and box.escapeButton().text() == KEEP
    assert box.icon() == QMessageBox.Icon.Warning and box.parent() is w
    click_button(box, KEEP)
    qtbot.waitUntil(lambda: open_message_box() is None, timeout=5_000)
    assert w.isVisible() and w.history.waiting == 1  # kept, still waiting: nothing was dropped

    (small_disk / "filler").unlink()
    qtbot.waitUntil(lambda: "Every answer is saved" in w.notice.text(), timeout=15_000)  # the retry timer
    coffee = w.image.key
    assert read_back(history)["coffee.png"] == shown(w, coffee)
    assert close_asking(qtbot, w) is None and not w.isVisible()  # nothing waits now: no question


def test_quit_without_saving_closes_and_says_how_many_were_lost(qtbot, small_disk, make_window, toy_model_dir,
                                                                  photos, settings_path, caplog):  # noqa: F811
    w, history = one_answer_waiting_on_a_full_disk(qtbot, make_window, toy_model_dir, photos, settings_path,
                                                   small_disk)
    file_menu = next(a.menu() for a in w.menuBar().actions() if a.text() == "&File")
    quit_action = next(a for a in file_menu.actions() if a.text() == "&Quit")
    box = close_asking(qtbot, w, quit_action.trigger)  # File › Quit asks the same question
    assert box is not None and box.text() == "<b>1 answer is not saved yet.</b>"
    with caplog.at_level(logging.ERROR, logger="desktop_app.jobs.history_writer"):
        click_button(box, QUIT)
        qtbot.waitUntil(lambda: not w.isVisible(), timeout=10_000)
    assert "1 answer version could not be saved before closing and is lost" in caplog.text
    (small_disk / "filler").unlink()
    assert "coffee.png" not in read_back(history) and "chelsea.png" in read_back(history)
    assert not w.history.client._thread.isRunning()  # the history thread ended: the close went all the way


def test_a_read_only_window_asks_and_closes_by_itself_once_the_other_window_is_gone(
        qtbot, make_window, toy_model_dir, photos, history_dir):  # noqa: F811
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(history_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert writer.stdout.readline().strip() == "ready"
        writer.stdin.write(json.dumps([str(photos[3]), "rocket-key", "caption en", "a rocket"]) + "\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "saved"
        w = make_window(toy_model_dir)
        qtbot.waitUntil(lambda: "another PaliGemma Desktop window" in w.notice.text(), timeout=10_000)
        drop_file(qtbot, w, photos[0])
        ask(qtbot, w, "caption")
        ask(qtbot, w, "ocr")
        qtbot.waitUntil(lambda: w.history.waiting == 2, timeout=10_000)
        box = close_asking(qtbot, w)
        assert box is not None and box.text() == "<b>2 answers are not saved yet.</b>"
        assert "Another PaliGemma Desktop window has the history open" in box.informativeText()
        chelsea = w.image.key
        expected = shown(w, chelsea)

        os.kill(writer.pid, signal.SIGKILL)  # the other window is gone: its lock is free
        writer.wait(timeout=30)
        # Taken over within a second, every waiting answer written, and the close asked for goes ahead.
        qtbot.waitUntil(lambda: not w.isVisible(), timeout=10_000)
        assert open_message_box() is None
    finally:
        if writer.poll() is None:
            writer.kill()
    stored = read_back(history_dir)
    assert stored["chelsea.png"] == expected and [p for p, _, _ in expected] == ["caption en", "ocr"]
    assert stored["rocket.jpg"] == [("caption en", "a rocket", "done")]
