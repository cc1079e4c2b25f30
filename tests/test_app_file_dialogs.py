"""Where the window's file dialogs start: the Pictures folder at first, then the last folder used, never the
process's working directory; File › Export suggests a file name. Driven through the menus and the real dialogs."""

from __future__ import annotations

import shutil

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication, QFileDialog

from desktop_app.views.main_window import MainWindow


def answer_file_dialog(qtbot, seen: list, choose: str | None = None):
    """When the next file dialog opens, record where it starts (folder, suggested name), then pick `choose` or
    cancel."""

    def act():
        dialog = next((w for w in QApplication.topLevelWidgets() if isinstance(w, QFileDialog) and w.isVisible()),
                      None)
        if dialog is None:
            QTimer.singleShot(20, act)
            return
        seen.append((dialog.directory().absolutePath(), dialog.selectedFiles()))
        if choose:
            dialog.selectFile(choose)
            dialog.accept()
        else:
            dialog.reject()

    QTimer.singleShot(0, act)


def menu_action(window, menu: str, text: str):
    top = next(a.menu() for a in window.menuBar().actions() if a.text().replace("&", "") == menu)
    return top, next(a for a in top.actions() if a.text().replace("&", "") == text)


def test_dialogs_start_in_pictures_then_the_last_folder_and_export_suggests_a_name(qtbot, tmp_path, monkeypatch,
                                                                                      photos):
    home = tmp_path / "home"
    (home / "Pictures").mkdir(parents=True)
    (home / "Documents").mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)  # the working directory, where dialogs must not start
    elsewhere = tmp_path / "trip"
    elsewhere.mkdir()
    shutil.copy(photos[0], elsewhere / "chelsea.png")
    window = MainWindow(settings_store=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.show()
    open_image = menu_action(window, "File", "Open image…")[1]

    seen = []
    answer_file_dialog(qtbot, seen, choose=str(elsewhere / "chelsea.png"))
    with qtbot.waitSignal(window.image_shown, timeout=10_000):
        open_image.trigger()  # File › Open image…
    assert seen[0][0] == str(home / "Pictures")

    answer_file_dialog(qtbot, seen)
    open_image.trigger()
    assert seen[1][0] == str(elsewhere)  # the folder used last

    file_menu = menu_action(window, "File", "Open image…")[0]
    export = next(a.menu() for a in file_menu.actions() if a.menu() and a.text().replace("&", "") == "Export")
    markdown = next(a for a in export.actions() if "Markdown" in a.text() and "Copy" not in a.text())
    answer_file_dialog(qtbot, seen)
    markdown.trigger()
    folder, files = seen[2]
    assert folder == str(elsewhere) and [f.rsplit("/", 1)[-1] for f in files] == ["chelsea conversation.md"]
    window.close()
