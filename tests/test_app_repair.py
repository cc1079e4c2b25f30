"""A downloaded model damaged on disk: the window says it cannot load it, finds the damaged file off the GUI thread,
offers "Repair", and the repair fetches that file alone from the loopback Hub, then the model loads. The Models
dialog's "Check files" finds damage in an installed model (in use or not) and its "Repair" does the same."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtTest import QTest

from desktop_app.views.main_window import MainWindow
from desktop_app.views.model_picker import STATUS_COLUMN
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


def click(widget) -> None:
    QTest.mouseClick(widget, Qt.MouseButton.LeftButton)


def click_row(picker, repo_id: str) -> None:
    row = next(r for r in range(picker.table.rowCount()) if picker.table.item(r, 0).data(256) == repo_id)
    rect = picker.table.visualItemRect(picker.table.item(row, 0))
    QTest.mouseClick(picker.table.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     rect.center())


def open_models_dialog(qtbot, window):
    file_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&File")
    next(a for a in file_menu.actions() if a.text() == "&Models…").trigger()
    picker = window.models.picker
    qtbot.waitExposed(picker)
    return picker


def damage(path: Path) -> None:
    """Flip bytes in the middle of the file on disk: same size, wrong hash (as a bad sector or a bad copy)."""
    blob = path.resolve()
    with open(blob, "r+b") as f:
        f.seek(blob.stat().st_size // 2)
        old = f.read(16)
        f.seek(-len(old), 1)
        f.write(bytes(b ^ 0xFF for b in old))


def models_window(qtbot, server, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_TOKEN", GOOD)
    snap = hub.download(REPO, cache_dir=tmp_path / "models", endpoint=server.url)
    store = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    store.setValue("models_dir", str(tmp_path / "models"))
    window = MainWindow(settings_store=store)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.engine.ready, timeout=60_000)
    return window, snap


def test_the_models_dialog_checks_the_model_in_use_and_repairs_its_damaged_shard(qtbot, server, tmp_path,  # noqa: F811
                                                                                 monkeypatch):
    window, snap = models_window(qtbot, server, tmp_path, monkeypatch)
    picker = open_models_dialog(qtbot, window)
    files = picker.files
    assert picker.selected().repo_id == REPO and files.button.text() == "Check files" and files.button.isEnabled()
    click(files.button)
    qtbot.waitUntil(lambda: "Every file matches its checksum" in files.label.text(), timeout=30_000)

    shard = sorted(p.name for p in snap.glob("*.safetensors"))[0]
    damage(snap / shard)
    before = len(server.state.log)
    seen = []
    files.check.progressed.connect(lambda _s, done, total: seen.append((done, total)))
    click(files.button)  # checking again finds it (the hashing runs on the thread pool)
    qtbot.waitUntil(lambda: files.button.text() == "Repair", timeout=30_000)
    assert f"1 file is damaged ({shard})" in files.label.text() and not files.bar.isVisible()
    assert picker.table.item(picker.table.currentRow(), STATUS_COLUMN).text() == "Installed · damaged · in use"
    assert seen and seen[-1][0] == seen[-1][1] == sum(p.resolve().stat().st_size for p in snap.iterdir())
    assert len(server.state.log) == before  # checking needs no network

    click(files.button)
    assert picker.result() == picker.DialogCode.Accepted
    assert window.download_dialog.windowTitle().startswith("Repairing")
    qtbot.waitUntil(lambda: window.download_dialog.outcome == "done", timeout=60_000)
    qtbot.waitUntil(lambda: window.engine.ready and not window.models.loading, timeout=60_000)  # loaded again
    fetched = [p.rsplit("/", 1)[1] for m, p, _ in server.state.log[before:] if m == "GET" and "/resolve/" in p]
    assert fetched == [shard]
    assert hub.damaged_files(snap) == []
    window.close()


def test_repairing_another_model_keeps_the_model_in_use(qtbot, server, toy_model_dir, tmp_path,  # noqa: F811
                                                        monkeypatch):
    other = "google/paligemma2-3b-pt-224"
    server.state.add_folder(other, toy_model_dir, gated=True, allowed_tokens={GOOD})
    window, snap = models_window(qtbot, server, tmp_path, monkeypatch)
    other_snap = hub.download(other, cache_dir=tmp_path / "models", endpoint=server.url)
    damage(other_snap / "config.json")
    picker = open_models_dialog(qtbot, window)
    click_row(picker, other)
    assert picker.selected().repo_id == other
    click(picker.files.button)
    qtbot.waitUntil(lambda: picker.files.button.text() == "Repair", timeout=30_000)
    click_row(picker, REPO)  # each row shows its own result
    assert picker.files.button.text() == "Check files" and "damaged" not in picker.files.label.text()
    click_row(picker, other)
    assert "1 file is damaged (config.json)" in picker.files.label.text()
    click(picker.files.button)
    qtbot.waitUntil(lambda: window.download_dialog.outcome == "done", timeout=60_000)
    assert hub.damaged_files(other_snap) == []
    qtbot.waitUntil(lambda: "is repaired" in window.statusBar().currentMessage(), timeout=5_000)
    assert window.models.loaded_path == str(snap) and window.engine.ready and not window.models.loading
    window.close()


def test_a_check_reports_its_progress_and_stops_within_a_chunk(qtbot, tmp_path):
    from desktop_app.jobs.repair_check import RepairCheck

    # A 2 GB weight file, sparse (no disk used), linked as the Hub's layout links it: hashing it takes seconds.
    blobs, snap = tmp_path / "models--g--m" / "blobs", tmp_path / "models--g--m" / "snapshots" / "c"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    blob = blobs / ("ab" * 32)
    with open(blob, "wb") as f:
        f.truncate(2 * 2**30)
    (snap / "model.safetensors").symlink_to(blob)
    check = RepairCheck()
    seen, outcome = [], []
    check.progressed.connect(lambda _s, done, total: seen.append((done, total)))
    check.checked.connect(lambda *a: outcome.append(("checked", a)))
    check.aborted.connect(lambda s: outcome.append(("aborted", s)))
    check.check(str(snap))
    qtbot.waitUntil(lambda: bool(seen), timeout=10_000)  # the GUI thread runs on while the pool hashes
    check.cancel()
    qtbot.waitUntil(lambda: bool(outcome), timeout=10_000)
    assert outcome == [("aborted", str(snap))] and check.running == ""
    assert seen[-1][1] == 2 * 2**30 and seen[-1][0] < seen[-1][1]
