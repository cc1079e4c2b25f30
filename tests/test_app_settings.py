"""Settings that never break a working setup, the account, shortcuts, and what the window remembers."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtTest import QTest

from desktop_app.machine import FITS, TIGHT, TOO_LARGE, fit, memory_factor, memory_target, ram_bytes
from desktop_app.views.account import AccountBox, forget_token, token_source
from desktop_app.views.download_dialog import TokenDialog, without_token_instructions
from desktop_app.views.settings_dialog import SettingsDialog, device_choices
from desktop_app.settings import Settings

from .test_app_models import GOOD, answer_next_message_box, server  # noqa: F401 - the local Hub fixture
from .test_app_window import LOAD_TIMEOUT, drop_file, make_window, store  # noqa: F401 - fixtures

NO_GPU = {"present": ["cpu"], "missing": {"cuda": "this PyTorch build has no CUDA support (a CPU-only wheel)",
                                         "mps": "Metal (MPS) exists only on Macs"}, "gpu": {}}


def test_only_present_devices_are_offered_and_the_others_are_explained(qtbot):
    dialog = SettingsDialog(Settings(device="cuda"), devices=NO_GPU)
    qtbot.addWidget(dialog)
    offered = [dialog.device.itemText(i) for i in range(dialog.device.count())]
    assert offered == ["auto", "cpu"] and dialog.device.currentText() == "auto"  # a saved cuda is not offered
    assert "cuda: this PyTorch build has no CUDA support" in dialog.device_note.text()
    assert "mps: Metal (MPS) exists only on Macs" in dialog.device_note.text()
    with_gpu = {"present": ["cpu", "cuda"], "missing": {"mps": "Metal (MPS) exists only on Macs"},
                "gpu": {"name": "NVIDIA H100", "memory_bytes": 80 * 10**9}}
    assert device_choices(with_gpu)[0] == ["auto", "cpu", "cuda"]
    assert device_choices(None) == (["auto", "cpu"], "GPUs are listed once PyTorch has started (a few seconds "
                                                     "after launch).")


def test_fits_tight_too_large_and_where_memory_comes_from():
    assert fit(7 * 10**9, 16 * 10**9) == FITS and fit(14 * 10**9, 16 * 10**9) == TIGHT
    assert fit(17 * 10**9, 16 * 10**9) == TOO_LARGE and fit(1, 0) == ""
    ram = ram_bytes()
    assert ram > 2**30  # from /proc/meminfo on Linux
    assert memory_target(None, "auto") == ("RAM (CPU)", ram)
    gpu = {"present": ["cpu", "cuda"], "missing": {}, "gpu": {"name": "NVIDIA H100", "memory_bytes": 80 * 10**9}}
    assert memory_target(gpu, "auto") == ("NVIDIA H100", 80 * 10**9)
    assert memory_target(gpu, "cpu") == ("RAM (CPU)", ram)
    gpu["auto_dtypes"] = {"cpu": "float32", "cuda": "bfloat16"}
    assert memory_factor(gpu, "NVIDIA H100", "auto") == 1.0 and memory_factor(gpu, "RAM (CPU)", "auto") == 2.0
    assert memory_factor(gpu, "NVIDIA H100", "float32") == 2.0 and memory_factor(None, "RAM (CPU)", "bfloat16") == 1.0


def test_changing_the_device_asks_before_reloading(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    qtbot.waitUntil(lambda: bool(window.models.name), timeout=LOAD_TIMEOUT)
    engine = window.engine.worker.engine
    old = (window.settings.device, window.settings.dtype)
    window.settings.dtype = "bfloat16"
    seen = []
    answer_next_message_box(qtbot, "Later", seen)
    window.models.settings_changed(*old)
    assert seen[0]["default"] == "Later" and "Reload" in seen[0]["text"]
    assert window.engine.worker.engine is engine and window.engine.ready  # nothing reloaded
    answer_next_message_box(qtbot, "Reload now", seen)
    with qtbot.waitSignal(window.engine.worker.model_ready, timeout=LOAD_TIMEOUT) as ready:
        window.models.settings_changed(*old)
    assert ready.args[0]["dtype"] == "bfloat16"


def test_the_account_can_change_or_forget_the_saved_token(qtbot, server, monkeypatch):  # noqa: F811
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    box = AccountBox()
    qtbot.addWidget(box)
    assert token_source() == ("", "") and "Not signed in" in box.label.text() and not box.forget_button.isEnabled()
    Path(constants.HF_TOKEN_PATH).write_text(GOOD)
    box.refresh()
    assert token_source() == ("saved", GOOD[-4:]) and GOOD not in box.label.text()
    assert box.change_button.text() == "Change token…" and box.forget_button.isEnabled()
    box.forget_button.click()
    assert token_source() == ("", "") and not Path(constants.HF_TOKEN_PATH).exists()
    monkeypatch.setenv("HF_TOKEN", GOOD)
    box.refresh()
    assert "HF_TOKEN" in box.label.text() and not box.change_button.isEnabled()
    forget_token()  # nothing saved: no error


def test_the_sign_in_dialog_says_its_instructions_once_and_never_cuts_them(qtbot):
    reason = ("google/paligemma2-3b-mix-224 is a gated model: sign in with a Hugging Face access token first "
              "(huggingface.co/settings/tokens, Read access).")
    assert without_token_instructions(reason) == ("google/paligemma2-3b-mix-224 is a gated model: sign in with a "
                                                  "Hugging Face access token first.")
    assert without_token_instructions("The Hugging Face token was refused (expired or revoked?). Paste a new one "
                                      "from huggingface.co/settings/tokens.") == \
        "The Hugging Face token was refused (expired or revoked?)."
    dialog = TokenDialog(reason)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    text = dialog.intro.text()
    assert text.count("settings/tokens") == 2  # once as the link target, once as its text: one instruction
    for width in (dialog.width(), dialog.minimumWidth()):
        dialog.resize(width, 10)  # even squeezed, the layout keeps the height the wrapped text needs
        qtbot.wait(10)
        assert dialog.intro.height() >= dialog.intro.heightForWidth(dialog.intro.width())
    dialog.status.setText("That does not look like a Hugging Face access token (they start with hf_). Create one "
                          "at huggingface.co/settings/tokens (Read access is enough).")
    qtbot.wait(10)
    assert dialog.status.height() >= dialog.status.heightForWidth(dialog.status.width())


def test_settings_shortcut_on_every_platform(qtbot, make_window):
    window = make_window(None, wait_ready=False)
    shortcuts = window.settings_action.shortcuts()
    assert QKeySequence("Ctrl+,") in shortcuts
    for key in QKeySequence.keyBindings(QKeySequence.StandardKey.Preferences):
        assert key in shortcuts


def test_every_menu_key_is_bound_under_every_platform(qtbot, make_window):
    """Standard keys that map to nothing here (Quit under offscreen and on Windows) get the common key beside."""
    window = make_window(None, wait_ready=False)
    actions = {a.text().replace("&", ""): a for menu in window.menuBar().actions() if menu.menu()
               for a in menu.menu().actions()}
    expected = {"Open image…": "Ctrl+O", "Settings…": "Ctrl+,", "Quit": "Ctrl+Q", "Paste image": "Ctrl+V"}
    for text, key in expected.items():
        assert QKeySequence(key) in actions[text].shortcuts(), text
    standard = {"Open image…": QKeySequence.StandardKey.Open, "Quit": QKeySequence.StandardKey.Quit,
                "Paste image": QKeySequence.StandardKey.Paste}
    for text, key in standard.items():  # the platform's own binding is kept
        assert all(k in actions[text].shortcuts() for k in QKeySequence.keyBindings(key)), text


def test_ctrl_q_closes_the_window(qtbot, make_window):
    window = make_window(None, wait_ready=False)
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)  # a menu shortcut goes to the active window
    QTest.keyClick(window, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=5_000)
    assert not window.engine._thread.isRunning()  # closed the way File › Quit closes it: threads shut down


def test_the_window_size_and_splitter_are_remembered(qtbot, tmp_path):
    from desktop_app.views.main_window import MainWindow

    path = str(tmp_path / "layout.ini")
    window = MainWindow(settings_store=QSettings(path, QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.show()
    window.resize(790, 560)  # the offscreen screen is 800 wide; restoreGeometry keeps a window on its screen
    qtbot.wait(10)
    size = (window.width(), window.height())
    window.splitter.setSizes([260, size[0] - 260])
    sizes = window.splitter.sizes()
    assert size != (1280, 800) and sizes != [720, 520]  # not the defaults, or the test proves nothing
    window.close()
    again = MainWindow(settings_store=QSettings(path, QSettings.Format.IniFormat))
    qtbot.addWidget(again)
    again.show()
    assert (again.width(), again.height()) == size and again.splitter.sizes() == sizes
    again.close()


def test_a_narrow_first_window_starts_with_history_closed_and_then_remembers_it(qtbot, tmp_path):
    from desktop_app.views.main_window import MainWindow

    path = str(tmp_path / "docks.ini")
    window = MainWindow(settings_store=QSettings(path, QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.resize(800, 600)
    window._restore_layout()  # what a first start does, at the size a small screen gives
    window.show()
    qtbot.wait(10)
    assert not window.history_panel.isVisible()  # the image column keeps its width at 800 x 600
    assert window.canvas.width() > 200
    window.history_panel.toggleViewAction().trigger()  # the person opens it (View › History)
    window.close()
    again = MainWindow(settings_store=QSettings(path, QSettings.Format.IniFormat))
    qtbot.addWidget(again)
    again.show()
    qtbot.wait(10)
    assert again.history_panel.isVisible()


def test_cuda_graphs_setting_round_trips_and_reaches_the_dialog(qtbot, tmp_path):
    from desktop_app.settings import load_settings, save_settings

    store = QSettings(str(tmp_path / "graphs.ini"), QSettings.Format.IniFormat)
    assert load_settings(store).cuda_graphs is True  # on by default: it only acts on CUDA
    save_settings(store, Settings(cuda_graphs=False))
    again = load_settings(QSettings(str(tmp_path / "graphs.ini"), QSettings.Format.IniFormat))
    assert again.cuda_graphs is False
    dialog = SettingsDialog(again, devices=NO_GPU)
    qtbot.addWidget(dialog)
    assert not dialog.cuda_graphs.isChecked()
    dialog.cuda_graphs.setChecked(True)
    assert dialog.result_settings().cuda_graphs is True


def test_the_status_bar_says_what_auto_chose_and_why(make_window, toy_model_dir):
    window = make_window(toy_model_dir)
    why = window.models.status.label.toolTip()
    assert "float32" in why or "bfloat16" in why  # the precision and its reason (native bf16 or not)
    assert "thread" in why  # threads = physical cores
    assert window.model_info["choices"] == why


def test_history_gives_way_to_the_image_when_the_window_is_narrow(qtbot, tmp_path):
    from PySide6.QtTest import QTest

    from desktop_app.views.main_window import MIN_IMAGE_PX, MainWindow

    window = MainWindow(settings_store=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.resize(1400, 900)
    window.show()
    dock = window.history_panel
    dock.show()
    qtbot.waitUntil(lambda: dock.isVisible() and window.canvas.width() > MIN_IMAGE_PX)
    window.resize(800, 600)  # the person makes the window small
    qtbot.waitUntil(lambda: not dock.isVisible(), timeout=2_000)
    qtbot.wait(20)
    assert window.canvas.width() >= MIN_IMAGE_PX
    assert "Ctrl+H" in window.statusBar().currentMessage()

    window.activateWindow()
    qtbot.waitUntil(lambda: window.isActiveWindow(), timeout=2_000)
    QTest.keyClick(window, Qt.Key.Key_H, Qt.KeyboardModifier.ControlModifier)  # opened by hand while narrow
    qtbot.waitUntil(lambda: dock.isVisible() and dock.isFloating(), timeout=2_000)  # over the window, not beside
    qtbot.wait(20)
    assert window.canvas.width() >= MIN_IMAGE_PX
    window.close()


def test_the_account_row_names_the_account_and_a_never_valid_token_is_not_called_expired(qtbot, server,  # noqa: F811
                                                                                         monkeypatch):
    from huggingface_hub import constants
    from PySide6.QtTest import QTest

    monkeypatch.delenv("HF_TOKEN", raising=False)
    Path(constants.HF_TOKEN_PATH).write_text(GOOD)
    box = AccountBox()
    qtbot.addWidget(box)
    qtbot.waitUntil(lambda: "alice" in box.label.text(), timeout=10_000)  # whoami, asked in the background
    assert "Signed in as" in box.label.text() and GOOD not in box.label.text()

    Path(constants.HF_TOKEN_PATH).write_text("hf_never_a_real_token_0000")
    box.refresh()
    qtbot.waitUntil(lambda: "not accepted" in box.label.text(), timeout=10_000)
    assert "expired or revoked?" not in box.label.text()

    dialog = TokenDialog("")
    qtbot.addWidget(dialog)
    dialog.show()
    QTest.keyClicks(dialog.field, "hf_pasted_but_never_valid")
    QTest.keyClick(dialog.field, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: "did not accept" in dialog.status.text(), timeout=10_000)
    assert "expired" not in dialog.status.text() and "revoked" not in dialog.status.text()


def test_clear_all_history_defaults_to_cancel(qtbot, tmp_path):
    from PySide6.QtCore import QTimer
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication, QMessageBox

    from desktop_app.views.main_window import MainWindow

    window = MainWindow(settings_store=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.resize(1400, 900)
    window.show()
    panel = window.history_panel
    panel.show()
    clear = next(a for a in panel.more_button.menu().actions() if a.text() == "Clear all…")
    seen = []

    def press_enter():  # Enter on the box, as a person who does not read it would
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(20, press_enter)
            return
        seen.append((box.defaultButton().text(), [b.text() for b in box.buttons()]))
        QTest.keyClick(box, Qt.Key.Key_Return)

    QTimer.singleShot(0, press_enter)
    cleared = []
    panel.client.clear_all = lambda: cleared.append(True)  # what the store would do; Enter must not get there
    clear.trigger()
    assert seen[0][0] == "Cancel" and "Clear all" in seen[0][1] and "Yes" not in seen[0][1]
    assert cleared == []
    window.close()
