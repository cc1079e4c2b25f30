"""What the window offers and says about models, driven with keys and clicks: the first-start offer after the model
in use is deleted, Regenerate without a model, a partial download, the Models table's keys, wording a GUI user can
act on, and the status bar's labels. The real engine on a toy checkpoint and the loopback Hub."""

from __future__ import annotations

from PySide6.QtCore import QSettings, Qt
from PySide6.QtTest import QTest

from desktop_app.views.download_dialog import DownloadDialog, human_size
from desktop_app.views.main_window import MainWindow
from desktop_app.views.model_picker import ModelPicker
from vlm_core.weights import hub
from vlm_core.weights.catalog import CATALOG

from .test_app_models import GOOD, REPO, answer_next_message_box, server  # noqa: F401 - the local Hub fixture
from .test_app_window import LOAD_TIMEOUT, ask, drop_file

MODEL_DOWNLOAD = "Download it (6.1 GB)"


def window_on(qtbot, store_path, **kwargs) -> MainWindow:
    window = MainWindow(settings_store=QSettings(str(store_path), QSettings.Format.IniFormat), **kwargs)
    qtbot.addWidget(window)
    window.show()
    return window


def test_deleting_the_model_in_use_offers_the_first_start_download_and_regenerate_says_why(
        qtbot, server, tmp_path, monkeypatch, photos):  # noqa: F811
    monkeypatch.setenv("HF_TOKEN", GOOD)
    models = tmp_path / "models"
    hub.download(REPO, cache_dir=models)
    store = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    store.setValue("models_dir", str(models))
    window = MainWindow(settings_store=store)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.engine.ready, timeout=LOAD_TIMEOUT)
    window.resize(900, 600)
    drop_file(qtbot, window, photos[0])
    for _ in range(5):  # more turns than the chat shows at once: it is scrolled to the newest
        turn = ask(qtbot, window, "caption")
    card = window.chat.widget_for(turn.id)
    assert card.regenerate_button.isEnabled()

    QTest.keyClick(window, Qt.Key.Key_M, Qt.KeyboardModifier.ControlModifier)  # Models…
    picker = window.models.picker
    qtbot.waitUntil(picker.isVisible)
    answer_next_message_box(qtbot, "Delete and unload", [])
    with qtbot.waitSignal(window.engine.worker.unloaded, timeout=10_000):
        qtbot.mouseClick(picker.delete_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: hub.find_installed(REPO, models) is None, timeout=5_000)
    picker.close()

    # The same offer as a first start, with the conversation still on screen.
    qtbot.waitUntil(lambda: MODEL_DOWNLOAD in window.chat.action_buttons, timeout=5_000)
    assert window.chat.placeholder.isVisible() and "No model yet" in window.chat.placeholder.text()
    button = window.chat.action_buttons[MODEL_DOWNLOAD]
    assert button.isVisible()
    qtbot.waitUntil(lambda: not button.visibleRegion().isEmpty(), timeout=2_000)  # in view, not scrolled away
    assert window.chat.widget_for(turn.id) is card
    # Regenerate cannot answer now: it is disabled and says why.
    assert not card.regenerate_button.isEnabled() and "Load a model first" in card.regenerate_button.toolTip()
    assert not card.edit_button.isEnabled()
    qtbot.mouseClick(card.regenerate_button, Qt.MouseButton.LeftButton)
    assert len(turn.versions) == 1

    # Download again from the offer: the model answers and Regenerate works again.
    qtbot.mouseClick(window.chat.action_buttons[MODEL_DOWNLOAD], Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.engine.ready, timeout=LOAD_TIMEOUT)
    assert card.regenerate_button.isEnabled()
    with qtbot.waitSignal(window.answer_done, timeout=LOAD_TIMEOUT):
        qtbot.mouseClick(card.regenerate_button, Qt.MouseButton.LeftButton)
    assert len(turn.versions) == 2
    window.close()


def test_a_cancelled_download_is_offered_as_a_resume_with_its_size(qtbot, server, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_TOKEN", GOOD)
    store = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    store.setValue("models_dir", str(tmp_path / "models"))
    window = MainWindow(settings_store=store)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: MODEL_DOWNLOAD in window.chat.action_buttons, timeout=5_000)
    assert "--model" not in window.chat.placeholder.text().replace("\u2011", "-")  # no command line in a window
    assert "Open a local folder" in window.chat.placeholder.text()
    qtbot.mouseClick(window.chat.action_buttons[MODEL_DOWNLOAD], Qt.MouseButton.LeftButton)
    dialog = window.download_dialog

    def cancel_mid_shard(p):
        if p["filename"].endswith(".safetensors") and p["file_done"] > 0 and dialog.cancel_button.isEnabled():
            qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)

    dialog.job.progress.connect(cancel_mid_shard)
    qtbot.waitUntil(lambda: dialog.outcome == "cancelled", timeout=30_000)
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)  # now "Close"
    assert not dialog.isVisible()
    on_disk = hub.disk_usage(REPO, tmp_path / "models")
    assert on_disk > 0
    label = f"Resume download ({human_size(on_disk)} of 6.1 GB)"
    qtbot.waitUntil(lambda: label in window.chat.action_buttons, timeout=5_000)
    assert MODEL_DOWNLOAD not in window.chat.action_buttons
    qtbot.mouseClick(window.chat.action_buttons[label], Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.engine.ready, timeout=LOAD_TIMEOUT)
    window.close()


def test_a_failed_download_says_only_what_is_true_about_what_is_kept(qtbot, server, tmp_path,  # noqa: F811
                                                                      monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_bob_did_not_accept")
    dialog = DownloadDialog(REPO, "PaliGemma 2 3B mix", str(tmp_path / "models"))
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.start()
    qtbot.waitUntil(lambda: dialog.outcome == "licence", timeout=30_000)
    assert dialog.bytes_done == 0
    assert "kept" not in dialog.file_label.text()  # nothing was fetched, so nothing is kept
    assert "licence" in dialog.message.text().lower()


def test_end_and_home_in_the_models_table_go_to_the_last_and_first_model(qtbot, tmp_path):
    picker = ModelPicker(str(tmp_path / "models"), memory=("RAM (CPU)", 16 * 10**9))
    qtbot.addWidget(picker)
    picker.show()
    picker.table.setFocus()
    QTest.keyClick(picker.table, Qt.Key.Key_End)
    assert picker.selected() is CATALOG[-1] and picker.table.currentRow() == len(CATALOG) - 1
    QTest.keyClick(picker.table, Qt.Key.Key_Home)
    assert picker.selected() is CATALOG[0]


def test_the_status_bar_keeps_memory_and_model_apart(qtbot, tmp_path, toy_model_dir):
    window = window_on(qtbot, tmp_path / "s.ini", model_dir=str(toy_model_dir))
    qtbot.waitUntil(lambda: window.engine.ready, timeout=LOAD_TIMEOUT)
    status = window.models.status
    qtbot.waitUntil(lambda: "in use" in status.memory.text(), timeout=5_000)
    assert status.separator.isVisible()
    assert status.memory.geometry().right() < status.separator.geometry().left()
    assert status.separator.geometry().right() < status.label.geometry().left()
    window.close()


def test_a_cpu_only_machine_sees_no_gpu_words(qtbot, tmp_path):
    import torch
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from desktop_app.views.settings_dialog import SettingsDialog

    from .test_app_file_dialogs import menu_action

    if torch.cuda.is_available():
        import pytest

        pytest.skip("needs a machine without CUDA")
    store = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    store.setValue("models_dir", str(tmp_path / "models"))
    window = MainWindow(settings_store=store)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.engine.devices is not None and "of RAM" in window.chat.placeholder.text(),
                    timeout=LOAD_TIMEOUT)  # the first-start offer, once PyTorch has said what this machine has
    assert "GPU" not in window.chat.placeholder.text()

    menu_action(window, "File", "Models…")[1].trigger()
    picker = window.models.picker
    qtbot.waitUntil(picker.isVisible)
    intro = picker.findChildren(type(picker.decoder_label))[0].text()
    assert "GPU" not in intro and "RAM" in intro
    assert "GPU" not in picker.table.item(0, 3).toolTip()
    picker.close()

    seen = []

    def look():
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, SettingsDialog):
            QTimer.singleShot(20, look)
            return
        seen.append(([dialog.dtype.itemText(i) for i in range(dialog.dtype.count())],
                     dialog.cuda_graphs.isVisible()))
        dialog.reject()

    QTimer.singleShot(0, look)
    menu_action(window, "File", "Settings…")[1].trigger()
    offered, graphs_shown = seen[0]
    assert "float16" not in offered and "bfloat16" in offered and not graphs_shown
    window.close()
