"""File › Process a folder…: the real window, the real engine worker and the toy model.

A folder run gives the CLI's rows (a corrupt image reported), pausing frees the chat, and a cancelled run continues
without redoing what it finished. The form's validation and the progress arithmetic are tested without Qt.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt

from desktop_app.batch_state import (CANCELLED, DONE, PAUSED, BatchProgress, PlanError, default_output,
                                     make_plan)
from desktop_app.jobs.batch_job import FIRST_CHUNK
from desktop_app.views.main_window import MainWindow
from tests.test_batch_cli import make_folder
from vlm_core.cli import main as cli_main
from vlm_core.runtime.batch_io import read_rows

TIMEOUT = 120_000
COMPARED = ("path", "prompt", "text", "objects", "tokens", "error", "stop_reason")


@pytest.fixture
def window(qtbot, tmp_path, toy_model_dir):
    store = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(model_dir=str(toy_model_dir), settings_store=store)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.engine.ready, timeout=TIMEOUT)
    yield w
    w.close()


def open_dialog(window):
    action = next(a for a in window.menuBar().actions()[0].menu().actions() if a.text() == "Process a &folder…")
    action.trigger()
    return window._batch_dialog


def fill(dialog, folder: Path, out: Path, tokens: int, task: str = "caption", text: str = "") -> None:
    dialog.folder.setText(str(folder))
    dialog.task.setCurrentIndex(dialog.task.findData(task))
    dialog.text.setText(text)
    dialog.out.setText(str(out))
    dialog.tokens.setValue(tokens)


def cli_rows(model_dir, folder: Path, out: Path, tokens: int, prompt: str = "caption en") -> list[dict]:
    assert cli_main(["batch", "--model", str(model_dir), "--inputs", str(folder), "--prompt", prompt, "--out",
                     str(out), "--max-new-tokens", str(tokens), "--device", "cpu", "--no-progress"]) == 0
    return [{k: r[k] for k in COMPARED} for r in map(json.loads, out.read_text().splitlines())]


def app_rows(out: Path) -> list[dict]:
    return [{k: getattr(r, k) for k in COMPARED} for r in read_rows(out, "jsonl")]


def test_a_folder_of_200_images_with_a_corrupt_one_gives_the_cli_rows(qtbot, window, tmp_path, toy_model_dir):
    folder = tmp_path / "imgs"
    paths = make_folder(folder, 200, corrupt=117)
    expected = cli_rows(toy_model_dir, folder, tmp_path / "cli.jsonl", 8)
    dialog = open_dialog(window)
    assert dialog.isVisible()
    fill(dialog, folder, tmp_path / "app.jsonl", 8)
    with qtbot.waitSignal(dialog.job.state_changed, timeout=TIMEOUT, check_params_cb=lambda s: s == DONE):
        dialog.start_button.click()

    assert app_rows(tmp_path / "app.jsonl") == expected
    assert [r["path"] for r in expected] == [str(p) for p in paths]
    assert "damaged" in expected[117]["error"]
    model = dialog.model
    assert len(model.rows) == 200
    assert model.thumbs[117] is None and all(t is not None and not t.isNull() for i, t in enumerate(model.thumbs)
                                             if i != 117)
    assert "200 / 200 images" in dialog.summary.text() and "1 unreadable" in dialog.summary.text()
    assert dialog.start_button.isEnabled() and not dialog.cancel_button.isEnabled()

    dialog.export_to(str(tmp_path / "export.csv"), "csv")
    assert [{k: getattr(r, k) for k in COMPARED} for r in read_rows(tmp_path / "export.csv", "csv")] == expected


def test_pause_frees_the_chat_and_resume_finishes_the_run(qtbot, window, tmp_path, toy_model_dir):
    folder = tmp_path / "imgs"
    paths = make_folder(folder, 24)
    dialog = open_dialog(window)
    fill(dialog, folder, tmp_path / "app.jsonl", 30, task="detect", text="cat ; dog")
    with qtbot.waitSignal(dialog.job.rows_added, timeout=TIMEOUT):
        dialog.start_button.click()
    with qtbot.waitSignal(dialog.job.state_changed, timeout=TIMEOUT, check_params_cb=lambda s: s == PAUSED):
        dialog.pause_button.click()
    done_while_paused = len(read_rows(tmp_path / "app.jsonl", "jsonl"))
    assert 0 < done_while_paused < len(paths)
    assert dialog.pause_button.text() == "Resume" and "Paused" in dialog.summary.text()

    request = window.engine.ask(str(paths[0]), "caption en", {"max_new_tokens": 5})  # the chat, meanwhile
    assert request is not None
    with qtbot.waitSignal(window.engine.worker.finished, timeout=TIMEOUT):
        pass
    assert len(read_rows(tmp_path / "app.jsonl", "jsonl")) == done_while_paused  # the run stayed paused

    with qtbot.waitSignal(dialog.job.state_changed, timeout=TIMEOUT, check_params_cb=lambda s: s == DONE):
        dialog.pause_button.click()
    assert app_rows(tmp_path / "app.jsonl") == cli_rows(toy_model_dir, folder, tmp_path / "cli.jsonl", 30,
                                                        prompt="detect cat ; dog")


def test_a_cancelled_run_continues_without_redoing_finished_images(qtbot, window, tmp_path, toy_model_dir):
    folder = tmp_path / "imgs"
    make_folder(folder, 24, corrupt=3)
    out = tmp_path / "app.jsonl"
    dialog = open_dialog(window)
    fill(dialog, folder, out, 30)
    with qtbot.waitSignal(dialog.job.rows_added, timeout=TIMEOUT):
        dialog.start_button.click()
    with qtbot.waitSignal(dialog.job.state_changed, timeout=TIMEOUT, check_params_cb=lambda s: s == CANCELLED):
        dialog.cancel_button.click()
    first = out.read_text().splitlines()
    assert 0 < len(first) < 24
    assert "Cancelled" in dialog.summary.text() and "ETA" not in dialog.summary.text()  # nothing is left to time

    assert dialog.resume.isChecked()
    with qtbot.waitSignal(dialog.job.state_changed, timeout=TIMEOUT, check_params_cb=lambda s: s == DONE):
        dialog.start_button.click()
    assert out.read_text().splitlines()[:len(first)] == first  # finished rows kept as they were, not redone
    assert f"{len(first)} done before" in dialog.summary.text()
    assert app_rows(out) == cli_rows(toy_model_dir, folder, tmp_path / "cli.jsonl", 30)
    assert len(dialog.model.rows) == 24  # the rows read back are listed too
    thumbs = dialog.model.thumbs  # ... with their thumbnails (made after the run started); the damaged image has none
    qtbot.waitUntil(lambda: all(t is not None for i, t in enumerate(thumbs) if i != 3), timeout=TIMEOUT)
    assert all((t is None) == (i == 3) for i, t in enumerate(thumbs))
    assert all(t is None or not t.isNull() for t in thumbs)
    assert "ETA" not in dialog.summary.text()


def test_before_a_folder_is_chosen_nothing_can_start_and_non_images_are_counted_and_listed(qtbot, window, tmp_path):
    from PySide6.QtCore import QTimer
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication, QMessageBox

    folder = tmp_path / "photos"
    make_folder(folder, 3)
    (folder / "notes.txt").write_text("not a picture")
    (folder / "sub").mkdir()
    (folder / "sub" / "scan.pdf").write_bytes(b"%PDF-1.4")
    dialog = open_dialog(window)
    assert not dialog.start_button.isEnabled() and not dialog.bar.isTextVisible()  # no "0 / 1"
    dialog.folder.setFocus()
    QTest.keyClicks(dialog.folder, str(folder))
    assert dialog.start_button.isEnabled()
    out = Path(dialog.out.text())
    assert out.suffix == ".jsonl" and folder not in out.parents and out.parent != folder  # not among the photos
    dialog.out.setText(str(tmp_path / "results.jsonl"))
    dialog.tokens.setValue(4)
    with qtbot.waitSignal(dialog.job.state_changed, timeout=TIMEOUT, check_params_cb=lambda s: s == DONE):
        qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    assert dialog.bar.isTextVisible() and dialog.bar.text() == "3 / 3"
    assert dialog.others_button.isVisible() and dialog.others_button.text() == "2 files not images…"
    shown = []

    def read_box():
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(20, read_box)
            return
        shown.append((box.text(), box.detailedText()))
        box.accept()

    QTimer.singleShot(0, read_box)
    qtbot.mouseClick(dialog.others_button, Qt.MouseButton.LeftButton)
    assert "2 files were skipped" in shown[0][0]
    assert shown[0][1].splitlines() == [str(folder / "notes.txt"), str(folder / "sub" / "scan.pdf")]


def test_the_form_says_what_to_fix(tmp_path):
    (tmp_path / "imgs").mkdir()
    good = dict(folder=str(tmp_path / "imgs"), task="caption", text="", lang="fr", out=str(tmp_path / "r.jsonl"))
    assert make_plan(**good).prompt == "caption fr"
    assert make_plan(**{**good, "task": "ocr"}).prompt == "ocr"
    assert make_plan(**{**good, "task": "detect", "text": "cat, red car"}).prompt == "detect cat ; red car"
    assert make_plan(**{**good, "task": "custom", "text": "answer en  how\nmany?"}).prompt == "answer en how many?"
    assert make_plan(**{**good, "out": str(tmp_path / "r.csv")}).fmt == "csv"
    for change, message in [({"folder": ""}, "Choose the folder"), ({"folder": str(tmp_path / "no")}, "not a folder"),
                            ({"task": "detect"}, "Objects to find"), ({"task": "custom"}, "Type"),
                            ({"out": ""}, "Choose the output file"), ({"out": str(tmp_path)}, "is a folder"),
                            ({"out": str(tmp_path / "no" / "r.jsonl")}, "does not exist")]:
        with pytest.raises(PlanError, match=message):
            make_plan(**{**good, **change})
    assert default_output(str(tmp_path / "imgs"), "ocr", str(tmp_path / "docs")) == str(
        tmp_path / "docs" / "paligemma-ocr-imgs.jsonl")


def test_progress_leaves_paused_time_out_of_the_rate_and_eta():
    now = [0.0]
    p = BatchProgress(clock=lambda: now[0])
    p.start(total=110, skipped=10)
    assert p.images_per_s is None and p.eta_s is None
    now[0] = 10.0
    from vlm_core.runtime.batch_io import Row

    p.add([Row("a", "ocr")] * 19 + [Row("b", "ocr", error="bad")])
    assert p.images_per_s == 2.0 and p.eta_s == 40.0 and p.finished == 30
    p.pause()
    now[0] = 1000.0  # an hour paused changes nothing
    assert p.images_per_s == 2.0
    p.resume()
    now[0] = 1010.0
    p.add([Row("c", "ocr")] * 20)
    assert p.images_per_s == 2.0 and p.eta_s == 30.0
    assert p.summary() == "50 / 110 images · 2.00 images/s · ETA 0:30 · 10 done before · 1 unreadable"
    assert p.summary(running=False) == "50 / 110 images · 2.00 images/s · 10 done before · 1 unreadable"


def test_closing_the_window_during_a_run_asks_then_stops_it_and_closes_everything(qtbot, tmp_path, toy_model_dir):
    from .test_app_models import answer_next_message_box

    store = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(model_dir=str(toy_model_dir), settings_store=store)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.engine.ready, timeout=TIMEOUT)
    make_folder(tmp_path / "imgs", 40)
    dialog = open_dialog(w)
    fill(dialog, tmp_path / "imgs", tmp_path / "app.jsonl", 400)  # the second chunk: 400 steps, seconds
    with qtbot.waitSignal(dialog.job.rows_added, timeout=TIMEOUT):
        dialog.start_button.click()
    outcomes = []  # what the worker's chunks returned, recorded on the worker thread itself
    w.engine.worker.batch_done.connect(lambda _job, result: outcomes.append(result), Qt.ConnectionType.DirectConnection)
    qtbot.wait(300)  # the worker is inside the second chunk now

    seen = []
    answer_next_message_box(qtbot, "Keep the window open", seen)
    w.close()  # as the window manager's close button does
    assert "Stop the run and quit" in seen[0]["buttons"] and seen[0]["default"] == "Keep the window open"
    assert f"{FIRST_CHUNK} of 40 images are done" in seen[0]["text"] and "app.jsonl" in seen[0]["text"]
    assert w.isVisible() and dialog.isVisible() and dialog.job.active and w.engine._thread.isRunning()

    answer_next_message_box(qtbot, "Stop the run and quit", seen)
    w.close()  # waits for the engine thread: it ends at once because the running chunk was told to stop
    assert not w.isVisible() and not dialog.isVisible()  # no window is left to keep the process alive
    assert not w.engine._thread.isRunning()
    assert dialog.job.state == CANCELLED
    assert outcomes == [None]  # stopped, not run to its end
    assert len(read_rows(tmp_path / "app.jsonl", "jsonl")) == FIRST_CHUNK
