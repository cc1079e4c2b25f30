"""File › Process a folder…: one task over every image in a folder, into a JSONL or CSV file.

The form validates in batch_state.make_plan (no Qt needed to test it); the run is a BatchJob on the engine's
worker, so the window and its chat stay usable (a chat question waits for one batch at most, and none while the
run is paused). The dialog is modeless and only hides when closed: a run goes on behind it, and reopening the menu
item shows it again.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSize, Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDialog, QFileDialog, QFormLayout,
                               QHBoxLayout, QHeaderView, QLabel, QLineEdit, QProgressBar, QPushButton, QSpinBox,
                               QTableView, QVBoxLayout, QWidget)

from vlm_core.errors import VlmError
from vlm_core.runtime.batch_io import Row, write_rows

from ..batch_state import (BATCH_TASKS, CANCELLED, DONE, FAILED, LISTING, NEEDS_TEXT, PAUSED, RUNNING,
                           USES_LANGUAGE, PlanError, default_output, make_plan)
from .confirm import ask
from .file_dialogs import documents_folder, remember_folder, start_folder
from ..jobs.batch_job import THUMB_PX, BatchJob
from ..prompts import LANGUAGES

HEADERS = ("", "File", "Answer", "Tokens", "Error")
_STATE_WORDS = {LISTING: "Reading the folder…", RUNNING: "Running", PAUSED: "Paused — the chat is free",
                CANCELLED: "Cancelled", DONE: "Done", FAILED: "Stopped by an error"}


class ResultsModel(QAbstractTableModel):
    """The rows of a run with their thumbnails; appended to as batches arrive, never rebuilt."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[Row] = []
        self.thumbs: list[QImage | None] = []

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return len(HEADERS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[section]
        return None

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        row, col = self.rows[index.row()], index.column()
        if role == Qt.ItemDataRole.DecorationRole and col == 0:
            return self.thumbs[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return (None, Path(row.path).name, row.text, row.tokens if row.error is None else "",
                    row.error or "")[col]
        if role == Qt.ItemDataRole.ToolTipRole and col in (1, 2, 4):
            return (row.path, row.text, row.error)[(1, 2, 4).index(col)]
        return None

    def add(self, rows: list[Row], thumbs: list) -> None:
        start = len(self.rows)
        self.beginInsertRows(QModelIndex(), start, start + len(rows) - 1)
        self.rows.extend(rows)
        self.thumbs.extend(_to_qimage(t) for t in thumbs)
        self.endInsertRows()

    def set_thumbs(self, start: int, thumbs: list) -> None:
        """Thumbnails that arrive after their rows (rows carried over by "continue")."""
        end = min(start + len(thumbs), len(self.thumbs))
        for i in range(start, end):
            self.thumbs[i] = _to_qimage(thumbs[i - start])
        if end > start:
            self.dataChanged.emit(self.index(start, 0), self.index(end - 1, 0), [Qt.ItemDataRole.DecorationRole])

    def clear(self) -> None:
        self.beginResetModel()
        self.rows, self.thumbs = [], []
        self.endResetModel()


def _to_qimage(thumb) -> QImage | None:
    if thumb is None:
        return None
    w, h, data = thumb
    return QImage(data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()  # copy: own the bytes


class BatchDialog(QDialog):
    def __init__(self, client, max_new_tokens: int = 128, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Process a folder")
        self.resize(900, 640)
        self.max_new_tokens = max_new_tokens
        self.job = BatchJob(client, self)
        self.model = ResultsModel(self)

        self.folder = QLineEdit()
        self.folder.setPlaceholderText("A folder of images (sub-folders included)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._choose_folder)
        self.task = QComboBox()
        for key, label in BATCH_TASKS.items():
            self.task.addItem(label, key)
        self.text = QLineEdit()
        self.language = QComboBox()
        for code, name in LANGUAGES.items():
            self.language.addItem(f"{name} ({code})", code)
        self.out = QLineEdit()
        self.out.setPlaceholderText("results.jsonl or results.csv")
        choose_out = QPushButton("Choose…")
        choose_out.clicked.connect(self._choose_output)
        self.resume = QCheckBox("If the output file exists, continue it (skip the images already in it)")
        self.resume.setChecked(True)
        self.tokens = QSpinBox()
        self.tokens.setRange(1, 4096)
        self.tokens.setValue(max_new_tokens)
        form = QFormLayout()
        form.addRow("Folder", _row(self.folder, browse))
        form.addRow("Task", self.task)
        form.addRow("Text", self.text)
        form.addRow("Language", self.language)
        form.addRow("Output file", _row(self.out, choose_out))
        form.addRow("", self.resume)
        form.addRow("Max new tokens", self.tokens)

        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.bar = QProgressBar()
        self.bar.setFormat("%v / %m")
        self.summary = QLabel("")
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self._toggle_pause)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.job.cancel)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.others: list[str] = []  # files of the folder that are not images, skipped
        self.others_button = QPushButton()
        self.others_button.setToolTip("List the files that were skipped because they are not images")
        self.others_button.clicked.connect(self.show_others)
        self.others_button.setVisible(False)

        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.table.verticalHeader().setDefaultSectionSize(THUMB_PX + 6)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setWordWrap(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Fixed)
        header.resizeSection(0, THUMB_PX + 8)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        header.resizeSection(1, 150)
        header.resizeSection(3, 60)
        header.resizeSection(4, 240)

        self.export_csv = QPushButton("Export CSV…")
        self.export_csv.clicked.connect(lambda: self.export("csv"))
        self.export_jsonl = QPushButton("Export JSONL…")
        self.export_jsonl.clicked.connect(lambda: self.export("jsonl"))
        close = QPushButton("Close")
        close.clicked.connect(self.hide)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(_row(self.start_button, self.bar, self.pause_button, self.cancel_button, stretch=1))
        layout.addWidget(_row(self.summary, None, self.others_button))
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)
        layout.addWidget(_row(self.export_csv, self.export_jsonl, None, close))

        self.task.currentIndexChanged.connect(self._task_changed)
        self.folder.textChanged.connect(self._folder_changed)
        self.job.state_changed.connect(self._state_changed)
        self.job.rows_added.connect(self.model.add)
        self.job.progress_changed.connect(self._show_progress)
        self.job.message.connect(self.status.setText)
        self.job.skipped_files.connect(self._on_skipped_files)
        self.job.kept_thumbnails.connect(self.model.set_thumbs)
        self._task_changed()
        self._state_changed(self.job.state)

    def may_close_window(self) -> bool:
        """The main window is closing: with a run going, ask whether to stop it (what is done is in the output
        file already) or keep the window. Stopping also closes this dialog, so no window or process is left."""
        if self.job.active:
            p, out = self.job.progress, self.job.plan.out if self.job.plan else ""
            done = f"{p.finished} of {p.total} images are done" if p.total else "The folder is still being read"
            if not ask(self.parentWidget(), "A folder is being processed",
                       f"{done}. Stop the run and quit?",
                       "Stop the run and quit", "Keep the window open",
                       f"The results so far are saved in {out}; starting the same run again with “continue” "
                       "picks up the rest."):
                return False
            self.job.abandon()  # the running chunk stops within a token, so the engine thread ends at once
        self.hide()
        return True

    # -- form --------------------------------------------------------------------------------------------------
    def _choose_folder(self) -> None:
        store = getattr(self.parent(), "store", None)
        folder = QFileDialog.getExistingDirectory(self, "Folder of images", self.folder.text() or start_folder(store))
        if folder:
            remember_folder(folder, store)
            self.folder.setText(folder)

    def _choose_output(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Results file", self.out.text() or documents_folder(),
                                              "JSON lines (*.jsonl);;CSV (*.csv)")
        if path:
            self.out.setText(path)

    def _folder_changed(self, folder: str) -> None:
        # Follow the folder until the user types an output file of their own.
        if not self.out.text() or self.out.text() == self._auto_out:
            self.out.setText(default_output(folder, self.task.currentData(), documents_folder()))
            self._auto_out = self.out.text()
        self._state_changed(self.job.state)  # Start needs a folder

    _auto_out = ""

    def _task_changed(self) -> None:
        task = self.task.currentData()
        self.text.setEnabled(task in NEEDS_TEXT)
        self.text.setPlaceholderText(NEEDS_TEXT.get(task, "Not needed for this task"))
        self.language.setEnabled(task in USES_LANGUAGE)
        if self.out.text() and self.out.text() == self._auto_out:
            self.out.setText(default_output(self.folder.text(), task, documents_folder()))
            self._auto_out = self.out.text()

    def start(self) -> None:
        try:
            plan = make_plan(self.folder.text(), self.task.currentData(), self.text.text(),
                             self.language.currentData(), self.out.text(), self.resume.isChecked())
        except PlanError as e:
            self.status.setText(str(e))
            return
        if not self.job.client.ready:
            self.status.setText("Load a model first (File › Models…).")
            return
        self.model.clear()
        self._on_skipped_files([])
        self.status.setText(f"Prompt: {plan.prompt}  →  {plan.out}")
        self.job.start(plan, self.tokens.value())

    # -- run ---------------------------------------------------------------------------------------------------
    def _toggle_pause(self) -> None:
        (self.job.resume if self.job.state == PAUSED else self.job.pause)()

    def _state_changed(self, state: str) -> None:
        active = self.job.active
        for w in (self.folder, self.task, self.text, self.language, self.out, self.resume, self.tokens,
                  self.start_button):
            w.setEnabled(not active)
        if not active:
            self._task_changed()
        self.start_button.setEnabled(not active and bool(self.folder.text().strip()))
        self.pause_button.setEnabled(state in (RUNNING, PAUSED))
        self.pause_button.setText("Resume" if state == PAUSED else "Pause")
        self.cancel_button.setEnabled(active)
        self.export_csv.setEnabled(not active or state == PAUSED)
        self.export_jsonl.setEnabled(not active or state == PAUSED)
        self._show_progress()

    def _show_progress(self) -> None:
        p = self.job.progress
        self.bar.setMaximum(max(p.total, 1))
        self.bar.setValue(p.finished)
        self.bar.setTextVisible(bool(p.total))  # no "0 / 1" before a run has counted its images
        words = _STATE_WORDS.get(self.job.state, "")
        summary = p.summary(running=self.job.active)
        self.summary.setText(f"{words} · {summary}" if p.total else words)

    def _on_skipped_files(self, others: list) -> None:
        self.others = list(others)
        n = len(self.others)
        self.others_button.setText(f"{n} file{'s' if n != 1 else ''} not images…")
        self.others_button.setVisible(bool(n))

    def show_others(self) -> None:
        """The skipped files, in a box whose details list them all (they can be many)."""
        from PySide6.QtWidgets import QMessageBox

        n = len(self.others)
        box = QMessageBox(QMessageBox.Icon.Information, "Files that are not images",
                          f"{n} file{'s were' if n != 1 else ' was'} skipped: only images are processed "
                          "(PNG, JPEG, WebP, GIF, BMP, TIFF).", QMessageBox.StandardButton.Ok, self)
        box.setDetailedText("\n".join(self.others))
        box.exec()

    def export(self, fmt: str) -> None:
        if not self.model.rows:
            self.status.setText("There are no results to export yet.")
            return
        suggested = str(Path(documents_folder()) / f"results.{fmt}")
        path, _ = QFileDialog.getSaveFileName(self, "Export results", suggested,
                                              "CSV (*.csv)" if fmt == "csv" else "JSON lines (*.jsonl)")
        if path:
            self.export_to(path, fmt)

    def export_to(self, path: str, fmt: str) -> None:
        try:
            write_rows(path, self.model.rows, fmt)
        except VlmError as e:
            self.status.setText(str(e))
            return
        except OSError as e:
            self.status.setText(f"Could not write {path}: {e.strerror or e}")
            return
        self.status.setText(f"Exported {len(self.model.rows)} rows to {path}")


def _row(*widgets, stretch: int | None = None) -> QWidget:
    box = QWidget()
    layout = QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    for i, w in enumerate(widgets):
        if w is None:
            layout.addStretch(1)
        else:
            layout.addWidget(w, stretch if stretch is not None and i == 1 else 0)
    return box


def show_batch_dialog(window) -> BatchDialog:
    """The window's one folder-run dialog, made on first use and shown again after it is closed."""
    dialog = getattr(window, "_batch_dialog", None)
    if dialog is None:
        dialog = window._batch_dialog = BatchDialog(window.engine, window.settings.max_new_tokens, window)
    dialog.show()
    dialog.raise_()
    dialog.activateWindow()
    return dialog
