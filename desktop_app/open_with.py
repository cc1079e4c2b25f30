"""Files handed to the running app by the desktop: macOS's Finder ("Open With", a drop on the Dock icon) sends a
QFileOpenEvent to the application object instead of a command-line argument, at launch and while the app runs.
Windows and Linux pass the file on the command line (`paligemma-desktop IMAGE`), which __main__ handles.

A QApplication subclass rather than an event filter on the application: a filter there would see every event of
every widget, in Python."""

from __future__ import annotations

from PySide6.QtCore import QEvent, Signal
from PySide6.QtWidgets import QApplication


class Application(QApplication):
    file_opened = Signal(str)  # a local path; at launch it comes once the event loop runs, so connect before exec()

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.FileOpen:
            if path := event.file() or event.url().toLocalFile():
                self.file_opened.emit(path)
                return True
        return super().event(event)
