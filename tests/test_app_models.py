"""The model store in the window: first run, the download dialog (progress, Cancel, resume), token and licence."""

from __future__ import annotations

import os

import pytest
from PySide6.QtCore import QSettings

from desktop_app.views.download_dialog import DownloadDialog, TokenDialog
from desktop_app.views.main_window import MainWindow
from desktop_app.views.model_picker import ModelPicker

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
    assert not dialog.isVisible() and dialog.total_bar.value() < 1000
    assert list((tmp_path / "models").rglob("*.incomplete")) or list((tmp_path / "models").rglob("blobs/*"))

    dialog = DownloadDialog(REPO, "PaliGemma 2 3B mix", str(tmp_path / "models"))
    qtbot.addWidget(dialog)
    dialog.show()
    with qtbot.waitSignal(dialog.downloaded, timeout=30_000) as done:
        dialog.start()
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
    qtbot.waitUntil(lambda: "refused" in dialog.status.text(), timeout=10_000)
    dialog.field.setText(GOOD)
    with qtbot.waitSignal(dialog.accepted, timeout=10_000):
        dialog._check()
    assert dialog.user == "alice" and dialog.field.text() == ""


def test_picker_shows_installed_models_and_deletes(qtbot, server, tmp_path, monkeypatch):
    from vlm_core.weights import hub

    monkeypatch.setenv("HF_TOKEN", GOOD)
    models = tmp_path / "models"
    hub.download(REPO, cache_dir=models)
    picker = ModelPicker(str(models), current=REPO)
    qtbot.addWidget(picker)
    row = next(r for r in range(picker.table.rowCount()) if picker.table.item(r, 0).data(256) == REPO)
    assert picker.table.item(row, 3).text() == "Installed · in use"
    assert picker.table.item(row, 4).text().endswith("MB")
    assert picker.use_button.text() == "Use" and picker.delete_button.isEnabled()
    monkeypatch.setattr("desktop_app.views.model_picker.QMessageBox.question",
                        lambda *a, **k: __import__("PySide6.QtWidgets").QtWidgets.QMessageBox.StandardButton.Yes)
    picker.delete_selected()
    assert picker.table.item(row, 3).text().startswith("Not installed") and hub.find_installed(REPO, models) is None
