"""The model picker: the PaliGemma 2 family with size, memory and install state; download, use, delete, or open a
local folder. Nothing here touches the network; downloads go through DownloadDialog."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QFileDialog, QHBoxLayout, QHeaderView, QLabel,
                               QMessageBox, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout)

from vlm_core.weights import hub
from vlm_core.weights.catalog import CATALOG, DEFAULT_REPO, ModelSpec

from .download_dialog import DownloadDialog, human_size


class ModelPicker(QDialog):
    model_chosen = Signal(str)  # a folder to load

    def __init__(self, cache_dir: str, current: str = "", parent=None):
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.resize(860, 560)
        self.cache_dir = cache_dir
        self.current = current
        self.offline = hub.is_offline()
        intro = QLabel("PaliGemma 2 comes in three sizes. <b>mix</b> models answer the task prompts (caption, OCR, "
                       "detect, segment…); <b>pretrained</b> ones are meant for fine-tuning. Memory is for bfloat16 on "
                       "a GPU. The models are gated: the first download asks you to sign in and accept Google's "
                       "Gemma licence on the model's page.")
        intro.setWordWrap(True)
        self.table = QTableWidget(len(CATALOG), 5)
        self.table.setHorizontalHeaderLabels(["Model", "Download", "Memory (bf16)", "Status", "Disk used"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda _item: self.use_or_download())
        self.folder_label = QLabel()
        self.folder_label.setWordWrap(True)
        self.use_button = QPushButton()
        self.use_button.clicked.connect(self.use_or_download)
        self.delete_button = QPushButton("Delete")
        self.delete_button.clicked.connect(self.delete_selected)
        local = QPushButton("Open a local folder…")
        local.clicked.connect(self.open_local)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        row = QHBoxLayout()
        row.addWidget(local)
        row.addStretch(1)
        row.addWidget(self.delete_button)
        row.addWidget(self.use_button)
        row.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.folder_label)
        layout.addLayout(row)
        self.refresh()
        self.select(current if any(m.repo_id == current for m in CATALOG) else DEFAULT_REPO)

    def refresh(self) -> None:
        note = " Offline: models that are not installed need a connection." if self.offline else ""
        self.folder_label.setText(f"Models folder: {self.cache_dir} (change it in Settings).{note}")
        for row, spec in enumerate(CATALOG):
            installed = hub.find_installed(spec.repo_id, Path(self.cache_dir))
            status = "Installed" if installed else ("Needs a connection" if self.offline else "Not installed")
            if spec.repo_id == self.current:
                status += " · in use"
            used = hub.disk_usage(spec.repo_id, Path(self.cache_dir))
            cells = [spec.title + ("  (recommended)" if spec.repo_id == DEFAULT_REPO else ""),
                     human_size(spec.download_bytes), human_size(spec.memory_bytes), status,
                     human_size(used) if used else ""]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, spec.repo_id)
                if col:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                self.table.setItem(row, col, item)
        self._update_buttons()

    def select(self, repo_id: str) -> None:
        for row, spec in enumerate(CATALOG):
            if spec.repo_id == repo_id:
                self.table.selectRow(row)

    def selected(self) -> ModelSpec | None:
        rows = self.table.selectionModel().selectedRows()
        return CATALOG[rows[0].row()] if rows else None

    def _update_buttons(self) -> None:
        spec = self.selected()
        installed = spec is not None and hub.find_installed(spec.repo_id, Path(self.cache_dir)) is not None
        self.use_button.setText("Use" if installed else "Download")
        self.use_button.setEnabled(spec is not None and (installed or not self.offline))
        self.delete_button.setEnabled(spec is not None and hub.disk_usage(spec.repo_id, Path(self.cache_dir)) > 0)

    def use_or_download(self) -> None:
        spec = self.selected()
        if spec is None:
            return
        if path := hub.find_installed(spec.repo_id, Path(self.cache_dir)):
            self.model_chosen.emit(str(path))
            self.accept()
            return
        if self.offline:
            return
        dialog = DownloadDialog(spec.repo_id, spec.title, self.cache_dir, self)
        dialog.downloaded.connect(lambda path: (self.model_chosen.emit(path), self.accept()))
        dialog.start()
        dialog.exec()
        self.refresh()

    def delete_selected(self) -> None:
        spec = self.selected()
        if spec is None:
            return
        answer = QMessageBox.question(self, "Delete model", f"Delete {spec.title} from {self.cache_dir}? "
                                      f"This frees {human_size(hub.disk_usage(spec.repo_id, Path(self.cache_dir)))}.")
        if answer == QMessageBox.StandardButton.Yes:
            hub.delete_model(spec.repo_id, Path(self.cache_dir))
            self.refresh()

    def open_local(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a PaliGemma 2 model folder")
        if path:
            self.model_chosen.emit(path)
            self.accept()
