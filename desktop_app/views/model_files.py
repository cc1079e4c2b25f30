"""The Models dialog's "Check files" row: hashes the selected installed model's files off the GUI thread
(jobs/repair_check.py), shows how far it got, says what it found, and offers "Repair" when files are damaged. The
repair itself is the window's download of that model into the folder that holds it, which fetches only the files
that are wrong (vlm_core.weights.hub checks size, then hash, of what is there)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from ..jobs.repair_check import RepairCheck
from .download_dialog import human_size

CHECK, STOP, REPAIR = "Check files", "Stop checking", "Repair"


def cache_of(snapshot: str) -> str:
    """The models folder a snapshot (<cache>/models--org--name/snapshots/<commit>) lives in: repaired there."""
    return str(Path(snapshot).parents[2])


def _names(files: list[str]) -> str:
    return ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")


def found_words(bad: list[str], unchecked: list[str] = ()) -> str:
    if bad:
        said = (f"{len(bad)} file{'s are' if len(bad) != 1 else ' is'} damaged ({_names(bad)}). Repair downloads "
                f"{'those' if len(bad) != 1 else 'it'} again, and nothing else.")
    elif unchecked:
        said = "The files that could be checked match their checksums."
    else:
        return "Every file matches its checksum."
    if unchecked:  # copies (no symlinks on this system) carry no checksum in their name: a match would be a guess
        said += (f" {len(unchecked)} file{'s' if len(unchecked) != 1 else ''} ({_names(unchecked)}) could not be "
                 "checked: stored as copies, with no checksum to compare against. If the model misbehaves, delete "
                 "it and download it again.")
    return said


class ModelFiles(QWidget):
    """show(repo_id, title, snapshot or "") follows the selected row; repair_requested(repo_id, models folder)."""

    repair_requested = Signal(str, str)

    def __init__(self, offline: bool, parent=None):
        super().__init__(parent)
        self.offline = offline
        self.repo_id = self.title = self.snapshot = ""
        self.results: dict[str, list[str] | str] = {}  # snapshot -> damaged files, or what went wrong
        self.unchecked: dict[str, list[str]] = {}  # snapshot -> files stored as copies, which have no checksum
        self.progress = (0, 0)  # of the running check: bytes hashed, bytes in all
        self.check = RepairCheck(self)
        self.check.progressed.connect(self._on_progress)
        self.check.checked.connect(self._on_checked)
        self.check.errored.connect(self._on_errored)
        self.check.aborted.connect(lambda _snapshot: self._refresh())
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setMaximumWidth(160)
        self.button = QPushButton(CHECK)
        self.button.setAutoDefault(False)  # Enter belongs to the table
        self.button.clicked.connect(self._clicked)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.label, 1)
        row.addWidget(self.bar)
        row.addWidget(self.button)
        self._refresh()

    def show_model(self, repo_id: str, title: str, snapshot: str) -> None:
        self.repo_id, self.title, self.snapshot = repo_id, title, snapshot
        self._refresh()

    def stop(self) -> None:
        self.check.cancel()

    def _clicked(self) -> None:
        result = self.results.get(self.snapshot)
        if self.check.running == self.snapshot:
            self.check.cancel()
        elif isinstance(result, list) and result:
            self.repair_requested.emit(self.repo_id, cache_of(self.snapshot))
        else:
            self.results.pop(self.snapshot, None)
            self.check.check(self.snapshot)
            self.progress = (0, 0)
            self._refresh()

    def _refresh(self) -> None:
        running, result = self.check.running, self.results.get(self.snapshot)
        checking = bool(running) and running == self.snapshot
        self.bar.setVisible(checking)
        damaged = isinstance(result, list) and bool(result)
        self.button.setText(STOP if checking else REPAIR if damaged else CHECK)
        self.button.setEnabled(bool(self.snapshot) and running in ("", self.snapshot)
                               and not (damaged and self.offline))
        self.button.setToolTip("Only an installed model can be checked" if not self.snapshot else
                               "Repair needs a connection" if damaged and self.offline else
                               "One check at a time" if running not in ("", self.snapshot) else
                               "Compare every file with the checksum it was downloaded with (reads all of it; no "
                               "network)")
        if checking:
            self._on_progress(running, *self.progress)
        elif not self.snapshot:
            self.label.setText("")
        elif isinstance(result, list):
            self.label.setText(f"{self.title}: {found_words(result, self.unchecked.get(self.snapshot, []))}")
        elif result:
            self.label.setText(f"{self.title}: its files could not be read ({result}).")
        else:
            self.label.setText("Check files compares every file of the selected model with its checksum.")

    def _on_progress(self, snapshot: str, done: int, total: int) -> None:
        self.progress = (done, total)
        if snapshot == self.snapshot:
            self.bar.setValue(done * 1000 // max(total, 1))
            self.label.setText(f"Checking the files of {self.title}…" +
                               (f" {human_size(done)} of {human_size(total)}" if total else ""))

    def _on_checked(self, snapshot: str, bad: list, unchecked: list) -> None:
        self.results[snapshot] = bad
        self.unchecked[snapshot] = unchecked
        self._refresh()

    def _on_errored(self, snapshot: str, message: str) -> None:
        self.results[snapshot] = message
        self._refresh()
