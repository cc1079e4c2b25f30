"""Loading a model in the window: a wrong folder never costs the working model, names are repo names, the load
shows progress and can be cancelled, a device that fails is not kept, and the model in use is deleted only when
the person says so. The real engine on toy checkpoints throughout."""

from __future__ import annotations

import shutil

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent

from desktop_app.jobs.model_check import check_model_folder
from desktop_app.model_names import display_name, repo_id_of, window_title
from desktop_app.wording import keep_flags_together
from vlm_core.errors import VlmError
from vlm_core.weights import hub

from .test_app_models import REPO, answer_next_message_box, server  # noqa: F401 - the local Hub fixture
from .test_app_window import LOAD_TIMEOUT, ask, drop_file, make_window, store  # noqa: F401 - fixtures

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def test_names_are_repo_names_never_commit_hashes(tmp_path):
    snap = tmp_path / "models--google--paligemma2-3b-mix-224" / "snapshots" / SNAPSHOT
    assert repo_id_of(snap) == REPO and display_name(snap) == "paligemma2-3b-mix-224"
    assert display_name(tmp_path / "my-model") == "my-model" and repo_id_of(tmp_path / "my-model") == ""
    assert window_title("cat.png", "paligemma2-3b-mix-224", "App") == "cat.png — paligemma2-3b-mix-224 — App"
    assert window_title("", "", "App") == "App"


def test_flags_in_messages_never_break():
    text = keep_flags_together("no CUDA GPU is available; use --device cpu, or -platform xcb.")
    assert "\u2011\u2011device\u00a0cpu" in text and "\u2011platform\u00a0xcb" in text and "--" not in text


@pytest.mark.parametrize("damage, expected", [
    (lambda d: (d / "config.json").unlink(), "no config.json"),
    (lambda d: (d / "config.json").write_text('{"text_config": {'), "config.json"),
    (lambda d: (d / "tokenizer.model").write_bytes(b"not a tokenizer"), "SentencePiece"),
    (lambda d: next(d.glob("model-00002-*.safetensors")).unlink(), "is missing"),
])
def test_a_folder_is_checked_without_torch(toy_model_dir, tmp_path, damage, expected):
    folder = tmp_path / "m"
    shutil.copytree(toy_model_dir, folder)
    check_model_folder(folder)  # the good one passes
    damage(folder)
    with pytest.raises(VlmError, match=expected):
        check_model_folder(folder)


def test_a_wrong_folder_keeps_the_working_model(qtbot, make_window, toy_model_dir, photos, tmp_path):
    window = make_window(toy_model_dir)
    drop_file(qtbot, window, photos[0])
    engine = window.engine.worker.engine
    wrong = tmp_path / "holiday-photos"
    wrong.mkdir()
    with qtbot.waitSignal(window.models.check.failed, timeout=10_000):
        window.load_model(str(wrong))
    assert window.engine.ready and window.engine.worker.engine is engine  # never released
    assert "holiday-photos is not a usable model" in window.notice.text()
    assert f"{toy_model_dir.name} stays loaded" in window.notice.text()
    assert window.chat.input.isEnabled() and window.models.status.label.text().startswith(toy_model_dir.name)


def test_status_title_and_loading_text_use_the_repo_name(qtbot, make_window, toy_model_dir, photos, tmp_path):
    snap = tmp_path / "models--google--paligemma2-3b-mix-224" / "snapshots" / SNAPSHOT
    shutil.copytree(toy_model_dir, snap)
    window = make_window(snap, wait_ready=False)
    shown = []
    window.models.changed.connect(lambda: shown.append((window.chat.placeholder.text(),
                                                        window.models.status.label.text())))
    qtbot.waitUntil(lambda: window.engine.ready, timeout=LOAD_TIMEOUT)
    assert ("<p>Loading <b>paligemma2-3b-mix-224</b>…</p>", "Loading paligemma2-3b-mix-224…") in shown
    window.models.load(str(snap))
    qtbot.waitUntil(lambda: window.models.loading, timeout=10_000)
    drop_file(qtbot, window, photos[0])  # an image opened during a load keeps "Loading…" in the chat
    assert window.engine.ready or "Loading" in window.chat.placeholder.text()
    qtbot.waitUntil(lambda: window.engine.ready and not window.models.loading, timeout=LOAD_TIMEOUT)
    assert window.models.status.label.text().startswith("paligemma2-3b-mix-224 · CPU · "), \
        window.models.status.label.text()
    assert window.windowTitle() == f"{photos[0].name} — paligemma2-3b-mix-224 — PaliGemma Desktop"
    assert SNAPSHOT not in window.windowTitle() + window.models.status.label.text()
    assert not window.chat.placeholder.isVisible()


def test_a_load_shows_a_busy_indicator_then_progress_and_can_be_cancelled(qtbot, make_window, make_checkpoint):
    from vlm_core.weights.toy import MEDIUM_TEXT, MEDIUM_VISION

    import torch

    medium = make_checkpoint(text=MEDIUM_TEXT, vision=MEDIUM_VISION, dtype=torch.float32, shards=3)
    window = make_window(None, wait_ready=False)
    window.load_model(str(medium))
    assert window.models.status.busy  # the indicator moves on its own before any byte is read
    assert window.models.status.cancel.isVisible()
    with qtbot.waitSignal(window.engine.worker.load_progress, timeout=LOAD_TIMEOUT):
        pass
    with qtbot.waitSignal(window.engine.worker.load_failed, timeout=LOAD_TIMEOUT) as failed:
        window.models.status.cancel.click()
    assert failed.args[1] == "cancelled" and not window.engine.ready
    qtbot.waitUntil(lambda: "cancelled" in window.chat.placeholder.text(), timeout=5_000)
    assert "Load it again" in window.chat.action_buttons
    with qtbot.waitSignal(window.engine.worker.model_ready, timeout=LOAD_TIMEOUT):
        window.chat.action_buttons["Load it again"].click()


def test_a_device_that_fails_is_not_kept(qtbot, make_window, toy_model_dir, store, photos):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    store.setValue("device", "cuda")
    window = make_window(toy_model_dir, wait_ready=False)
    qtbot.waitUntil(lambda: window.engine.ready, timeout=LOAD_TIMEOUT)  # loaded after falling back to auto
    assert window.settings.device == "auto" and store.value("device") == "auto"
    assert "back to auto" in window.notice.text() and window.notice.isVisible()
    assert "--device" not in window.notice.text().replace("\u2011", "-")  # a window has no command line
    assert window.engine.devices["present"] == ["cpu"] and "cuda" in window.engine.devices["missing"]
    assert window.engine.devices["auto_dtypes"]["cpu"] in ("float32", "bfloat16")
    drop_file(qtbot, window, photos[0])
    assert window.notice.isVisible()  # said until the model has answered on the CPU
    ask(qtbot, window, "caption")
    assert not window.notice.isVisible()


def test_the_command_line_device_is_used_and_never_saved(qtbot, store, toy_model_dir):
    from desktop_app.views.main_window import MainWindow

    window = MainWindow(model_dir=str(toy_model_dir), settings_store=store, device="cpu", dtype="bfloat16")
    qtbot.addWidget(window)
    # The engine's own ready flag and the window's model info come from two queued slots of one signal.
    qtbot.waitUntil(lambda: window.engine.ready and window.model_info is not None, timeout=LOAD_TIMEOUT)
    assert window.model_info["dtype"] == "bfloat16" and window.model_info["device"] == "CPU"
    assert store.value("dtype") == "auto" and store.value("device") == "auto"
    window.close()


def test_deleting_the_model_in_use_asks_unloads_and_offers_the_download_next_time(
        qtbot, server, store, tmp_path, monkeypatch):  # noqa: F811
    from desktop_app.views.main_window import MainWindow

    monkeypatch.setenv("HF_TOKEN", "hf_alice_accepted_the_licence")
    models = tmp_path / "models"
    hub.download(REPO, cache_dir=models)
    store.setValue("models_dir", str(models))
    window = MainWindow(settings_store=store)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: bool(window.models.name), timeout=LOAD_TIMEOUT)
    window.open_model_picker()
    picker = window.models.picker
    assert picker.selected().repo_id == REPO, window.models.loaded_path
    seen = []
    answer_next_message_box(qtbot, "Cancel", seen)
    picker.delete_selected()
    assert "model in use" in seen[0]["text"] and seen[0]["default"] == "Cancel" and "Yes" not in seen[0]["buttons"]
    assert window.engine.ready and hub.find_installed(REPO, models) is not None
    answer_next_message_box(qtbot, "Delete and unload", seen)
    with qtbot.waitSignal(window.engine.worker.unloaded, timeout=10_000):
        picker.delete_selected()
    qtbot.waitUntil(lambda: hub.find_installed(REPO, models) is None, timeout=5_000)
    assert not window.engine.ready and window.engine.worker.engine is None
    assert "Download it (6.1 GB)" in window.chat.action_buttons and store.value("model_dir") == ""
    window.close()
    again = MainWindow(settings_store=store)
    qtbot.addWidget(again)
    qtbot.waitUntil(lambda: "Download it (6.1 GB)" in getattr(again.chat, "action_buttons", {}), timeout=5_000)
    again.close()


def first_start_offering_the_download(qtbot, store, tmp_path, monkeypatch):
    """A first start with an empty models folder and a signed-in token: the window offers the download."""
    from desktop_app.views.main_window import MainWindow

    monkeypatch.setenv("HF_TOKEN", "hf_alice_accepted_the_licence")
    store.setValue("models_dir", str(tmp_path / "models"))
    window = MainWindow(settings_store=store)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: "Download it (6.1 GB)" in getattr(window.chat, "action_buttons", {}), timeout=5_000)
    return window


def test_a_download_can_be_hidden_while_the_app_stays_usable(qtbot, server, store, tmp_path, monkeypatch):  # noqa: F811
    window = first_start_offering_the_download(qtbot, store, tmp_path, monkeypatch)
    window.chat.action_buttons["Download it (6.1 GB)"].click()
    dialog = window.download_dialog
    assert not dialog.isModal()
    dialog.hide_button.click()
    assert not dialog.isVisible() and window.models.download_status.isVisible()
    qtbot.waitUntil(lambda: window.engine.ready, timeout=LOAD_TIMEOUT)  # finished behind the status bar
    assert not window.models.download_status.isVisible()
    window.close()


def test_dragging_over_the_window_highlights_the_drop_target(qtbot, make_window, photos):
    window = make_window(None, wait_ready=False)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(photos[0]))])
    enter = QDragEnterEvent(QPointF(20, 20).toPoint(), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    window.dragEnterEvent(enter)
    assert enter.isAccepted() and window.drop_highlight.isVisible()
    assert window.drop_highlight.geometry() == window.centralWidget().rect()
    drop_file(qtbot, window, photos[0])
    assert not window.drop_highlight.isVisible()  # the drop ends it


def test_opening_an_image_says_so_until_it_is_decoded(qtbot, make_window, photos):
    window = make_window(None, wait_ready=False)
    with qtbot.waitSignal(window.image_shown, timeout=10_000):
        window.open_image(str(photos[3]))
        assert window.image_info.text() == f"Opening {photos[3].name}…"  # before the decode has returned
    assert window.image_info.text().startswith(f"{photos[3].name} — ")


def test_the_display_image_has_the_same_pixels_in_the_native_format(photos):
    from PySide6.QtGui import QColor, QImage

    from desktop_app.jobs.images import decode

    image = decode(photos[0], "cat")
    assert image.qimage.format() == QImage.Format.Format_RGB32
    for xy in ((0, 0), (123, 45), (image.size[0] - 1, image.size[1] - 1)):
        c = QColor(image.qimage.pixel(*xy))
        assert (c.red(), c.green(), c.blue(), c.alpha()) == (*image.pil.getpixel(xy), 255)


def test_the_window_fits_an_800_by_600_screen_with_a_long_file_name(qtbot, make_window, toy_model_dir, photos,
                                                                      tmp_path):
    long_name = tmp_path / ("holiday photo from the beach at sunset with the whole family " * 2 + ".png")
    shutil.copy(photos[0], long_name)
    window = make_window(toy_model_dir)
    window.resize(800, 600)
    drop_file(qtbot, window, long_name)
    qtbot.wait(50)
    assert window.minimumSizeHint().width() <= 800 and window.width() == 800
    assert window.image_info.text().startswith(long_name.name)  # all of it, shortened only on screen


def test_a_second_load_supersedes_the_first(qtbot, make_window, toy_model_dir, make_checkpoint, tmp_path):
    other = tmp_path / "other-model"
    shutil.copytree(toy_model_dir, other)
    window = make_window(None, wait_ready=False)
    window.models.load(str(toy_model_dir))
    qtbot.waitUntil(lambda: window.models.loading, timeout=10_000)  # the first is on its way
    window.models.load(str(other))
    # The second load starts once its folder is checked (off the GUI thread); the toy's first load may finish in the
    # meantime and show its name (a loaded CI machine did), so wait for the second one itself
    qtbot.waitUntil(lambda: window.models.loaded_path == str(other), timeout=LOAD_TIMEOUT)
    qtbot.wait(200)  # whatever the first load sends late must not undo the second
    assert window.models.loaded_path == str(other) and window.models.name == "other-model"
    assert window.engine.ready and not window.models.loading
    assert window.models.status.label.text().startswith("other-model · ")


def test_a_cancelled_hidden_download_says_what_is_kept_in_the_status_bar(qtbot, server, store, tmp_path,
                                                                          monkeypatch):  # noqa: F811
    from desktop_app.views.download_dialog import human_size

    window = first_start_offering_the_download(qtbot, store, tmp_path, monkeypatch)
    window.download_model(REPO)
    dialog = window.download_dialog
    dialog.hide_button.click()

    def cancel_mid_shard(p):
        if p["filename"].endswith(".safetensors") and p["file_done"] > 0:
            dialog.job.cancel()

    dialog.job.progress.connect(cancel_mid_shard)
    qtbot.waitUntil(lambda: dialog.outcome == "cancelled", timeout=30_000)
    status = window.models.download_status
    assert status.isVisible() and status.button.text() == f"{human_size(dialog.bytes_done)} downloaded — Resume"
    assert dialog.bytes_done > 0
    status.button.click()  # brings the dialog back, with Resume
    assert dialog.isVisible() and dialog.retry_button.text() == "Resume" and not status.isVisible()
    window.close()
