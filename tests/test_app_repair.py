"""A downloaded model damaged on disk: the window says it cannot load it, finds the damaged file off the GUI thread,
offers "Repair", and the repair fetches that file alone from the loopback Hub, then the model loads."""

from __future__ import annotations

from PySide6.QtCore import QSettings

from desktop_app.views.main_window import MainWindow
from vlm_core.weights import hub

from .test_app_models import GOOD, REPO, server  # noqa: F401 - the fixture


def test_a_damaged_download_is_offered_a_repair_that_fetches_only_the_bad_file(qtbot, server, tmp_path,  # noqa: F811
                                                                                monkeypatch):
    monkeypatch.setenv("HF_TOKEN", GOOD)
    snap = hub.download(REPO, cache_dir=tmp_path / "models", endpoint=server.url)
    (snap / "config.json").resolve().write_bytes(b'{"model_type": "paligemma", "damaged')  # a cut-off copy
    store = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    store.setValue("models_dir", str(tmp_path / "models"))
    before = len(server.state.log)

    window = MainWindow(settings_store=store)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: "Repair" in getattr(window.chat, "action_buttons", {}), timeout=30_000)
    assert "could not be loaded" in window.chat.placeholder.text()
    assert "config.json" in window.chat.placeholder.text()
    assert len(server.state.log) == before  # finding the damage needs no network
    window.chat.action_buttons["Repair"].click()
    qtbot.waitUntil(lambda: window.engine.ready, timeout=60_000)
    fetched = [p.rsplit("/", 1)[1] for m, p, _ in server.state.log[before:] if m == "GET" and "/resolve/" in p]
    assert fetched == ["config.json"]
    assert hub.damaged_files(snap) == []
    window.close()
