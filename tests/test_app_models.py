"""The model store in the window: first run, the download dialog (progress, Cancel, resume), token and licence."""

from __future__ import annotations

import os

import pytest
from PySide6.QtCore import QSettings

from desktop_app.views.download_dialog import DownloadDialog, TokenDialog, human_size
from desktop_app.views.main_window import MainWindow
from desktop_app.views.model_picker import FIT_COLUMN, STATUS_COLUMN, ModelPicker

from .hub_server import HubServer
from .test_app_window import ask, drop_file

REPO = "google/paligemma2-3b-mix-224"
GOOD, NO_LICENCE = "hf_alice_accepted_the_licence", "hf_bob_did_not_accept"


@pytest.fixture
def server(toy_model_dir, monkeypatch, tmp_path):
    from huggingface_hub import constants

    with HubServer() as s:
        s.state.add_folder(REPO, toy_model_dir, gated=True, allowed_tokens={GOOD})
        s.state.users.update({GOOD: "alice", NO_LICENCE: "bob"})
        monkeypatch.setenv("HF_ENDPOINT", s.url)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-token"))
        monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-stored-tokens"))
        yield s


def test_first_run_offers_the_download_then_answers(qtbot, server, tmp_path, monkeypatch, photos):
    monkeypatch.setenv("HF_TOKEN", GOOD)
    store = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    store.setValue("models_dir", str(tmp_path / "models"))
    window = MainWindow(settings_store=store)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: "Download it (6.1 GB)" in getattr(window.chat, "action_buttons", {}), timeout=5_000)
    assert "6.1 GB download" in window.chat.placeholder.text()
    window.chat.action_buttons["Download it (6.1 GB)"].click()
    qtbot.waitUntil(lambda: window.engine.ready, timeout=60_000)
    assert window.download_dialog.outcome == "done"
    assert window.settings.model_dir.endswith(os.path.join("snapshots", "0123456789abcdef0123456789abcdef01234567"))
    drop_file(qtbot, window, photos[0])
    assert ask(qtbot, window, "caption").state == "done"
    window.close()

    again = MainWindow(settings_store=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(again)
    qtbot.waitUntil(lambda: again.engine.ready, timeout=60_000)  # next start: no download, no request
    again.close()


def test_progress_cancel_and_resume(qtbot, server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", GOOD)
    dialog = DownloadDialog(REPO, "PaliGemma 2 3B mix", str(tmp_path / "models"))
    qtbot.addWidget(dialog)
    dialog.show()

    def cancel_mid_shard(p):
        if p["filename"].endswith(".safetensors") and p["file_done"] > 0:
            dialog.cancel_button.click()

    dialog.start()
    dialog.job.progress.connect(cancel_mid_shard)
    qtbot.waitUntil(lambda: dialog.outcome == "cancelled", timeout=30_000)
    assert dialog.total_bar.value() < 1000
    assert list((tmp_path / "models").rglob("*.incomplete")) or list((tmp_path / "models").rglob("blobs/*"))
    # The dialog stays, says how much is kept, and resumes from there.
    kept = human_size(dialog.bytes_done)
    assert dialog.isVisible() and dialog.file_label.text().startswith(f"{kept} downloaded — Resume")
    assert dialog.retry_button.isVisible() and dialog.retry_button.text() == "Resume"
    assert dialog.cancel_button.text() == "Close" and not dialog.hide_button.isVisible()
    qtbot.wait(10)
    assert dialog.file_label.height() >= dialog.file_label.heightForWidth(dialog.file_label.width())  # not cut
    dialog.job.progress.disconnect(cancel_mid_shard)
    with qtbot.waitSignal(dialog.downloaded, timeout=30_000) as done:
        dialog.retry_button.click()
    assert done.args[0].endswith("0123456789abcdef0123456789abcdef01234567")
    assert dialog.total_bar.value() == 1000 and "of" in dialog.total_label.text() and "/s" in dialog.total_label.text()
    files = server.state.repos[REPO].files
    assert all(server.state.served[n] >= len(d) for n, d in files.items())


def test_no_token_asks_for_one_and_continues(qtbot, server, tmp_path):
    reasons = []

    def sign_in(reason):
        reasons.append(reason)
        from vlm_core.weights import hub

        hub.check_and_save_token(GOOD)  # what TokenDialog does when the person pastes a good token
        return True

    dialog = DownloadDialog(REPO, "PaliGemma 2 3B mix", str(tmp_path / "models"), ask_token=sign_in)
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.downloaded, timeout=30_000):
        dialog.start()
    assert reasons and "gated model" in reasons[0] and GOOD not in reasons[0]


def test_licence_not_accepted_links_to_the_model_page(qtbot, server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", NO_LICENCE)
    dialog = DownloadDialog(REPO, "PaliGemma 2 3B mix", str(tmp_path / "models"), ask_token=lambda _r: False)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.start()
    qtbot.waitUntil(lambda: dialog.outcome == "licence", timeout=30_000)
    assert "<a href='https://huggingface.co/google/paligemma2-3b-mix-224'>" in dialog.message.text()
    assert dialog.retry_button.isVisible() and NO_LICENCE not in dialog.message.text()


def test_token_dialog_checks_the_token(qtbot, server):
    dialog = TokenDialog("Sign in to download.")
    qtbot.addWidget(dialog)
    dialog.field.setText("hf_not_a_real_token_at_all")
    dialog._check()
    qtbot.waitUntil(lambda: "did not accept" in dialog.status.text(), timeout=10_000)  # never "expired?"
    dialog.field.setText(GOOD)
    with qtbot.waitSignal(dialog.accepted, timeout=10_000):
        dialog._check()
    assert dialog.user == "alice" and dialog.field.text() == ""


def answer_next_message_box(qtbot, button_text: str, seen: list):
    """Click a button of the next modal message box the way a person would, recording what it showed."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    def click():
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(20, click)
            return
        seen.append({"text": box.text() + " " + box.informativeText(), "default": box.defaultButton().text(),
                     "buttons": [b.text() for b in box.buttons()]})
        next(b for b in box.buttons() if b.text() == button_text).click()

    QTimer.singleShot(0, click)


def test_picker_shows_installed_models_and_deletes(qtbot, server, tmp_path, monkeypatch):
    from vlm_core.weights import hub

    monkeypatch.setenv("HF_TOKEN", GOOD)
    models = tmp_path / "models"
    hub.download(REPO, cache_dir=models)
    picker = ModelPicker(str(models), current="", memory=("RAM (CPU)", 16 * 10**9))
    qtbot.addWidget(picker)
    row = next(r for r in range(picker.table.rowCount()) if picker.table.item(r, 0).data(256) == REPO)
    assert picker.table.item(row, STATUS_COLUMN).text() == "Installed"
    assert picker.table.item(row, 5).text().endswith("MB")
    assert picker.use_button.text() == "Use" and picker.delete_button.isEnabled()
    seen = []
    answer_next_message_box(qtbot, "Cancel", seen)
    picker.delete_selected()  # the safe answer is the default: nothing is deleted
    assert seen[0]["default"] == "Cancel" and hub.find_installed(REPO, models) is not None
    answer_next_message_box(qtbot, "Delete", seen)
    picker.delete_selected()
    assert picker.table.item(row, STATUS_COLUMN).text().startswith("Not installed")
    assert hub.find_installed(REPO, models) is None


def test_picker_says_what_fits_this_machine_and_enter_acts_on_the_selection(qtbot, tmp_path):
    from PySide6.QtCore import Qt

    from vlm_core.weights.catalog import CATALOG, find_spec

    picker = ModelPicker(str(tmp_path / "models"), memory=("NVIDIA test GPU", 24 * 10**9))
    qtbot.addWidget(picker)
    picker.show()
    qtbot.waitExposed(picker)
    verdicts = {spec.repo_id: picker.table.item(r, FIT_COLUMN).text() for r, spec in enumerate(CATALOG)}
    # 3B needs ~7 GB (fits in 24 GB), 10B ~21 GB (over 80%: tight), 28B ~61 GB (too large)
    assert verdicts[REPO] == "Fits" and verdicts["google/paligemma2-10b-mix-224"] == "Tight"
    assert verdicts["google/paligemma2-28b-mix-224"] == "Too large"
    assert "24.0 GB" in picker.table.item(0, FIT_COLUMN).toolTip()
    on_cpu = ModelPicker(str(tmp_path / "models"), memory=("RAM (CPU)", 32 * 10**9), memory_factor=2.0)
    qtbot.addWidget(on_cpu)
    assert on_cpu.fit_of(find_spec(REPO)) == "fits" and on_cpu.fit_of(find_spec("google/paligemma2-10b-mix-224")) \
        == "too large"  # float32 on the CPU costs twice the bf16 figure
    # The Status column shows its longest text whole.
    status = picker.table.item(0, STATUS_COLUMN)
    width = picker.table.fontMetrics().horizontalAdvance("Not installed · in use")
    assert picker.table.columnWidth(STATUS_COLUMN) >= min(width, picker.table.fontMetrics().horizontalAdvance(
        status.text()))
    assert picker.focusWidget() is picker.table
    requested = []
    picker.download_requested.connect(requested.append)
    qtbot.keyClick(picker.table, Qt.Key.Key_Return)
    assert requested == [REPO] and picker.result() == picker.DialogCode.Accepted


def test_picker_offers_the_mask_decoder_and_says_once_it_is_installed(qtbot, tmp_path):
    from vlm_core.weights import hub as hub_module
    from vlm_core.weights.vae import MASK_DECODER_REPO, MASK_DECODER_REPO_TYPE, OFFICIAL_FILENAME, OFFICIAL_SIZE

    models = tmp_path / "models"
    picker = ModelPicker(str(models), memory=("RAM (CPU)", 16 * 10**9))
    qtbot.addWidget(picker)
    picker.show()
    assert "not installed" in picker.decoder_label.text() and picker.decoder_button.isVisible()
    with qtbot.waitSignal(picker.mask_decoder_requested, timeout=1000):
        picker.decoder_button.click()
    snapshot = hub_module.typed_repo_folder(models, MASK_DECODER_REPO, MASK_DECODER_REPO_TYPE) / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    with open(snapshot / OFFICIAL_FILENAME, "wb") as f:
        f.truncate(OFFICIAL_SIZE)  # found by its official size; the checksum is checked when it is loaded
    again = ModelPicker(str(models), memory=("RAM (CPU)", 16 * 10**9))
    qtbot.addWidget(again)
    again.show()
    assert "installed" in again.decoder_label.text() and "not" not in again.decoder_label.text()
    assert not again.decoder_button.isVisible()
