"""The window, driven as a person would, with the real engine on a toy checkpoint (no fake engine)."""

from __future__ import annotations

import shutil

import pytest
from PySide6.QtCore import QMimeData, QObject, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDropEvent, QGuiApplication, QImage

from desktop_app.conversation import DONE, STOPPED
from desktop_app.views.main_window import MainWindow
from vlm_core.runtime.engine import Engine
from vlm_core.runtime.generate import SamplingParams

LOAD_TIMEOUT = 60_000
ANSWER_TIMEOUT = 60_000


@pytest.fixture
def store(tmp_path):
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def make_window(qtbot, store):
    windows = []

    def make(model_dir=None, wait_ready=True):
        w = MainWindow(model_dir=str(model_dir) if model_dir else None, settings_store=store)
        qtbot.addWidget(w)
        w.show()
        windows.append(w)
        if wait_ready:
            qtbot.waitUntil(lambda: w.engine.ready, timeout=LOAD_TIMEOUT)
        return w

    yield make
    for w in windows:
        w.close()
        assert not w.engine._thread.isRunning()


def drop(window, mime: QMimeData):
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)


def drop_file(qtbot, window, path):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    with qtbot.waitSignal(window.image_shown, timeout=10_000):
        drop(window, mime)


class SignalLog(QObject):
    """Records the worker's signals on the GUI thread (bound slots are queued; a lambda would run on the worker)."""

    def __init__(self, worker):
        super().__init__()
        self.names = []
        for name in ("started", "token", "finished", "cancelled", "failed"):
            getattr(worker, name).connect(getattr(self, "_" + name))

    def _started(self, *_):
        self.names.append("started")

    def _token(self, *_):
        if self.names[-1] != "token":  # one entry per run of tokens
            self.names.append("token")

    def _finished(self, *_):
        self.names.append("finished")

    def _cancelled(self, *_):
        self.names.append("cancelled")

    def _failed(self, *_):
        self.names.append("failed")


def ask(qtbot, window, task, text="", done="finished"):
    """Send, wait until the window has shown the outcome, and check the worker's signal order."""
    log = SignalLog(window.engine.worker)
    with qtbot.waitSignal(window.answer_done, timeout=ANSWER_TIMEOUT):
        window.send(task, text)
    turn = window.session.current.turns[-1]
    # The window's slot ran first (it connected first); the log's queued copy of the same signal comes next.
    qtbot.waitUntil(lambda: log.names and log.names[-1] == done, timeout=5_000)
    assert log.names == (["started", "token", done] if turn.answer else ["started", done])
    return turn


def test_drop_a_file_then_ask_streams_what_vlm_core_generates(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    drop_file(qtbot, window, photos[0])
    assert window.canvas.has_image()
    assert "chelsea.png — 451 × 300 px" in window.image_info.text()

    turn = ask(qtbot, window, "caption")
    expected = Engine.load(toy_model_dir, device="cpu").generate(photos[0], "caption en", SamplingParams())
    assert turn.prompt == "caption en" and turn.state == DONE
    assert turn.answer == expected.text
    assert turn.stats["generated_tokens"] == len(expected.token_ids) and turn.stats["ttft_s"] > 0
    widget = window.chat.widget_for(turn.id)
    assert widget.answer_label.text().replace("\u200b", "") == (expected.text or "(empty answer)")
    assert "tokens" in widget.stats_label.text()


def test_drop_image_data_and_paste(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    mime = QMimeData()
    mime.setImageData(QImage(str(photos[1])))
    with qtbot.waitSignal(window.image_shown, timeout=10_000):
        drop(window, mime)
    assert window.image.size == (512, 512) and window.image.name == "dropped image"

    QGuiApplication.clipboard().setImage(QImage(str(photos[2])))
    with qtbot.waitSignal(window.image_shown, timeout=10_000):
        window.paste()
    assert window.image.size == (600, 400)

    clip = QMimeData()
    clip.setUrls([QUrl.fromLocalFile(str(photos[3]))])  # a file copied in the file manager
    QGuiApplication.clipboard().setMimeData(clip)
    with qtbot.waitSignal(window.image_shown, timeout=10_000):
        window.paste()
    assert window.image.name == "rocket.jpg"


def test_task_buttons_that_need_text_wait_for_it(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    drop_file(qtbot, window, photos[2])
    window.chat.task_buttons["detect"].click()  # nothing typed yet: the input asks for the objects
    assert window.chat.task_chip.isVisible() and "separated by ;" in window.chat.input.placeholderText().replace("\u00a0", " ")
    window.stop()  # Esc with no answer running leaves the task
    assert not window.chat.task_chip.isVisible()
    window.chat.task_buttons["detect"].click()
    window.chat.input.setPlainText("cup, saucer")
    with qtbot.waitSignal(window.answer_done, timeout=ANSWER_TIMEOUT):
        window.chat.input.submitted.emit(window.chat.input.toPlainText())  # Enter
    assert window.session.current.turns[-1].prompt == "detect cup ; saucer"
    assert not window.chat.task_chip.isVisible() and window.chat.input.toPlainText() == ""


def test_paste_an_image_while_typing_opens_it(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    window.chat.input.setFocus()
    window.chat.input.setPlainText("draft question")
    QGuiApplication.clipboard().setImage(QImage(str(photos[2])))
    with qtbot.waitSignal(window.image_shown, timeout=10_000):
        window.chat.input.paste()  # what Ctrl+V does when the input has the focus
    assert window.image.size == (600, 400) and window.chat.input.toPlainText() == "draft question"
    QGuiApplication.clipboard().setText("plain words")
    window.chat.input.paste()
    assert "plain words" in window.chat.input.toPlainText()  # text still pastes as text


def test_bad_drop_keeps_image_and_conversation(qtbot, make_window, toy_model_dir, photos, tmp_path):
    window = make_window(toy_model_dir)
    drop_file(qtbot, window, photos[0])
    ask(qtbot, window, "ocr")
    before = (window.image.key, list(window.session.current.turns))
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(not_image))])
    with qtbot.waitSignal(window.loader.failed, timeout=10_000):
        drop(window, mime)
    assert "not an image format" in window.notice.text() and "unchanged" in window.notice.text()
    assert (window.image.key, window.session.current.turns) == before
    assert window.canvas.has_image() and window.chat.widget_for(before[1][0].id) is not None


def test_stop_mid_stream_keeps_what_was_written(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    window.settings.max_new_tokens = 2000
    drop_file(qtbot, window, photos[1])
    # Stop is pressed as soon as the first text reaches the window.
    window.engine.worker.token.connect(window.stop)  # a bound QObject method: delivered on the GUI thread
    turn = ask(qtbot, window, "", "what is this?", done="cancelled")
    assert turn.state == STOPPED and turn.answer
    assert 1 <= turn.stats["generated_tokens"] < 2000
    assert "stopped" in window.chat.widget_for(turn.id).stats_label.text()
    assert not window.engine.busy and window.chat.send_button.text() == "Send"


def start_long_answer(qtbot, make_window, model_dir, photo, until: str):
    """A window busy with a long answer, returned once the worker has emitted `until` for it."""
    window = make_window(model_dir)
    window.settings.max_new_tokens = 4000
    drop_file(qtbot, window, photo)
    with qtbot.waitSignal(getattr(window.engine.worker, until), timeout=ANSWER_TIMEOUT):
        window.send("", "describe everything")
    return window


def test_a_second_request_while_busy_is_refused_visibly(qtbot, make_window, toy_model_dir, photos):
    window = start_long_answer(qtbot, make_window, toy_model_dir, photos[1], "started")
    window.send("caption", "")
    assert "still being written" in window.notice.text()
    assert len(window.session.current.turns) == 1
    with qtbot.waitSignal(window.answer_done, timeout=ANSWER_TIMEOUT):
        window.stop()


def test_close_during_generation_exits_cleanly(qtbot, make_window, toy_model_dir, photos):
    window = start_long_answer(qtbot, make_window, toy_model_dir, photos[0], "token")
    window.close()
    assert not window.engine._thread.isRunning()


def test_detection_answer_draws_boxes_per_label(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    drop_file(qtbot, window, photos[2])  # 600 x 400
    turn = ask(qtbot, window, "detect", "cup ; plate")
    answer = "<loc0256><loc0128><loc0768><loc0512> cup ; <loc0000><loc0512><loc1023><loc1023> plate"
    # Feed a known answer through the same slots the worker's signals reach.
    window._requests[999] = (turn.id, window.image.key)
    turn.latest.text = ""
    window.chat.update_turn(turn)
    window._on_token(999, answer)
    window._on_finished(999, turn.stats)
    rects = [(r.x(), r.y(), r.width(), r.height()) for r in window.canvas.overlay_rects()]
    # boxes are loc / 1023 of the image, as big_vision's evaluator scales them
    assert rects == [pytest.approx((128 / 1023 * 600, 256 / 1023 * 400, 384 / 1023 * 600, 512 / 1023 * 400)),
                     pytest.approx((512 / 1023 * 600, 0.0, 511 / 1023 * 600, 400.0))]
    labels = [d.label for d in window.canvas.detections]
    assert labels == ["cup", "plate"]
    widget = window.chat.widget_for(turn.id)
    assert widget.answer_label.text() == "Found 2 objects: cup, plate"
    assert "• cup — x 75–300, y 100–300" in widget.detail_label.text() and "• plate" in widget.detail_label.text()
    assert window.boxes_toggle.isVisible()
    window.boxes_toggle.setChecked(False)
    assert not any(item.isVisible() for item in window.canvas._overlay)


def test_unparseable_answer_is_raw_text(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    drop_file(qtbot, window, photos[2])
    turn = ask(qtbot, window, "caption")
    assert window.canvas.overlay_rects() == []
    shown = window.chat.widget_for(turn.id).answer_label.text().replace("\u200b", "")
    assert shown in (turn.answer, "(empty answer)")


def test_going_back_to_an_earlier_image_brings_its_turns_back(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    drop_file(qtbot, window, photos[0])
    first = ask(qtbot, window, "ocr")
    drop_file(qtbot, window, photos[1])
    assert window.session.current.turns == [] and window.chat.widget_for(first.id) is None
    drop_file(qtbot, window, photos[0])
    assert window.session.current.turns == [first] and window.chat.widget_for(first.id) is not None


def test_the_engine_runs_on_the_worker_thread(qtbot, make_window, toy_model_dir, photos):
    import threading

    window = make_window(toy_model_dir)
    drop_file(qtbot, window, photos[0])
    threads = set()
    original = window.engine.worker.engine.stream

    def spy(*args, **kwargs):
        threads.add(threading.get_ident())
        yield from original(*args, **kwargs)

    window.engine.worker.engine.stream = spy
    ask(qtbot, window, "caption")
    assert threads and threading.get_ident() not in threads


def test_load_failure_is_shown(qtbot, make_window, toy_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(toy_model_dir, broken)
    shard = sorted(broken.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:500])
    window = make_window(broken, wait_ready=False)
    qtbot.waitUntil(lambda: window.notice.isVisible(), timeout=LOAD_TIMEOUT)
    assert "could not be loaded" in window.notice.text() and "truncated" in window.notice.text()
    assert window.model_button.isVisible() and not window.engine.ready


def test_no_model_says_what_is_missing_and_how_to_fix_it(qtbot, make_window):
    window = make_window(None, wait_ready=False)
    qtbot.waitUntil(lambda: window.model_button.isVisible(), timeout=5_000)
    text = window.chat.placeholder.text()
    assert "No model yet" in text and "google/paligemma2-3b-mix-224" in text
    assert "model DIR" not in text.replace("\u2011", "-").replace("\u00a0", " ")  # a window has no command line
    assert "Open a local folder" in text and "Open a local folder…" in window.chat.action_buttons
    assert not window.chat.input.isEnabled()


def test_close_while_the_model_loads(qtbot, make_window, make_checkpoint):
    from vlm_core.weights.toy import MEDIUM_TEXT, MEDIUM_VISION

    import torch

    medium = make_checkpoint(text=MEDIUM_TEXT, vision=MEDIUM_VISION, dtype=torch.float32, shards=3)
    window = make_window(medium, wait_ready=False)
    with qtbot.waitSignal(window.engine.worker.load_progress, timeout=LOAD_TIMEOUT):
        pass
    window.close()  # cancels between tensors, quits the thread, waits
    assert not window.engine._thread.isRunning() and not window.engine.ready


def test_out_of_memory_is_explained_and_the_next_question_works(qtbot, make_window, toy_model_dir, photos):
    import torch

    window = make_window(toy_model_dir)
    drop_file(qtbot, window, photos[0])
    engine = window.engine.worker.engine
    original, calls = engine.model.forward, {"n": 0}

    def forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(*args, **kwargs)

    engine.model.forward = forward
    turn = ask(qtbot, window, "caption", done="failed")
    assert turn.state == "failed" and "ran out of memory" in turn.error and "memory is freed" in turn.error
    assert "ran out of memory" in window.notice.text() and "Traceback" not in window.notice.text()
    assert ask(qtbot, window, "caption").state == "done"
