"""The History list with a big history, driven by keys as a person would: every conversation is reachable by
scrolling, counts and search results are complete, a search finds the image's file name and says when nothing
matches, and each row names its image and starts its answer."""

from __future__ import annotations

import time

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from desktop_app.history.store import HistoryStore
from tests.test_history_app import Row, drop_file, make_window, panel_rows, search, settings_path  # noqa: F401

N = 1500


@pytest.fixture
def history_dir(tmp_path):
    return tmp_path / "history"


def fill(folder, photo, n, name, answer):
    """n conversations of one stored image, conversation i named name(i) with one turn answering answer(i);
    conversation 0 is the oldest. Written in one transaction: a fixture, not what the app does."""
    s = HistoryStore.open(folder)
    sha = s.add_image(photo.read_bytes(), photo.suffix)
    t0 = time.time() - n
    with s.conn:
        for i in range(n):
            cid = s.conn.execute("INSERT INTO conversations (image_key, image_sha256, name, created, updated) "
                                 "VALUES (?, ?, ?, ?, ?)", (f"key-{i}", sha, name(i), t0 + i, t0 + i)).lastrowid
            s.conn.execute("INSERT INTO turns (conversation_id, position, prompt, answer, state, created, updated) "
                           "VALUES (?, 0, 'caption en', ?, 'done', ?, ?)", (cid, answer(i), t0 + i, t0 + i))
    s.close()


def scroll_to_end(qtbot, panel):
    """End, as a person presses it in the list, until the list stops growing (the first End after a new search
    only puts the cursor on the first row, as in any Qt list)."""
    panel.list.setFocus()
    misses = 0
    while misses < 2:
        before = panel.model.rowCount()
        QTest.keyClick(panel.list, Qt.Key.Key_End)
        try:
            qtbot.waitUntil(lambda: panel.model.rowCount() > before, timeout=1_000)
            misses = 0
        except Exception:  # noqa: BLE001 - nothing more to fetch
            misses += 1
    return panel.model.rowCount()


def test_every_conversation_is_reachable_by_scrolling_and_counted(qtbot, make_window, toy_model_dir, photos,
                                                                  history_dir):
    fill(history_dir, photos[0], N, lambda i: f"photo-{i:04d}.png",
         lambda i: "a tabby cat" if i % 4 else "a dog on a mat")
    w = make_window(toy_model_dir, wait_ready=False)
    panel = w.history_panel
    qtbot.waitUntil(lambda: "1,500 conversations" in panel.status.text(), timeout=10_000)
    assert panel.model.rowCount() < N  # a page, not everything, at start-up
    assert scroll_to_end(qtbot, panel) == N
    assert Row(panel, N - 1).text().startswith("photo-0000.png")  # the oldest is there
    assert Row(panel, 0).text().startswith("photo-1499.png")
    bottom = panel.list.verticalScrollBar().value()
    qtbot.waitUntil(lambda: w.engine.ready, timeout=60_000)
    drop_file(qtbot, w, photos[1])  # a new answer while the person reads the end of the list
    with qtbot.waitSignal(w.answer_done, timeout=60_000):
        w.send("caption", "")
    qtbot.waitUntil(lambda: panel.model.rowCount() == N + 1, timeout=10_000)  # reloaded, not cut back to a page
    assert Row(panel, 0).text().startswith("astronaut.png")
    qtbot.waitUntil(lambda: panel.list.verticalScrollBar().value() >= bottom, timeout=5_000)

    search(qtbot, w, "tabby")  # 1,125 matches: more than a page, and more than the old cap of 1,000
    qtbot.waitUntil(lambda: "1,125 matches for “tabby”" in panel.status.text(), timeout=10_000)
    assert scroll_to_end(qtbot, panel) == 1125
    assert all("tabby" in Row(panel, i).text() for i in range(0, 1125, 97))


def test_search_finds_the_image_file_name_and_says_when_nothing_matches(qtbot, make_window, toy_model_dir, photos,
                                                                        tmp_path):
    coffee = tmp_path / "morning coffee.png"
    coffee.write_bytes(photos[2].read_bytes())
    w = make_window(toy_model_dir)
    drop_file(qtbot, w, coffee)
    with qtbot.waitSignal(w.answer_done, timeout=60_000):
        w.send("caption", "")
    drop_file(qtbot, w, photos[0])
    with qtbot.waitSignal(w.answer_done, timeout=60_000):
        w.send("caption", "")
    panel_rows(qtbot, w, 2)
    search(qtbot, w, "coffee")
    [hit] = panel_rows(qtbot, w, 1)
    assert hit.text().startswith("morning coffee.png")
    assert "1 match for “coffee”" in w.history_panel.status.text()
    search(qtbot, w, "zzzz")
    panel_rows(qtbot, w, 0)
    assert w.history_panel.status.isVisible() and "No results for “zzzz”" in w.history_panel.status.text()


def test_rows_name_the_image_and_start_the_answer(qtbot, make_window, toy_model_dir, photos, history_dir):
    answers = ["A brown tabby cat lying on a blanket next to a window on a sunny afternoon, looking at the camera",
               "<loc0100><loc0200><loc0900><loc0800> cat ; <loc0000><loc0000><loc0500><loc0500> blanket", "   \n "]
    fill(history_dir, photos[0], 3, lambda i: ["chelsea.png", "detected.png", "blank.png"][i], answers.__getitem__)
    w = make_window(toy_model_dir, wait_ready=False)
    blank, detected, cat = (r.text().splitlines() for r in panel_rows(qtbot, w, 3))
    assert cat[0].startswith("chelsea.png") and cat[1].startswith("A brown tabby cat lying") and cat[1].endswith("…")
    assert detected[0].startswith("detected.png") and detected[1] == "cat ; blanket"
    assert blank[0].startswith("blank.png") and blank[1] == "(empty answer)"
    assert not any("caption en" == line for line in cat + detected + blank)  # the prompt is not the title
