"""The model picker: the PaliGemma family with size, memory, whether it fits this machine, and install state;
download, use, delete, check an installed model's files and repair them (views/model_files.py), or open a local
folder. Nothing here touches the network; downloads and repairs are started by the window (DownloadDialog), so the
picker can close while they run."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QFileDialog, QHBoxLayout, QHeaderView, QLabel,
                               QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout)

from vlm_core.weights import hub
from vlm_core.weights.catalog import CATALOG, DEFAULT_REPO, ModelSpec
from vlm_core.weights.vae import MASK_DECODER_TITLE, find_mask_decoder

from ..machine import FITS, TIGHT, TOO_LARGE, fit
from .confirm import confirm
from .download_dialog import human_size
from .model_files import ModelFiles

COLUMNS = ["Model", "Download", "Memory", "On this machine", "Status", "Disk used", "int8 · int4 weights"]
FIT_COLUMN, STATUS_COLUMN = 3, 4
_FIT_WORDS = {FITS: "Fits", TIGHT: "Tight", TOO_LARGE: "Too large"}


def memory_sentence(where: str, total: int, factor: float) -> str:
    """What the Memory column means on this machine: RAM on a CPU-only one (float32 doubles it), GPU memory on a
    GPU, unified memory on a Mac; never GPU words where there is no GPU."""
    precision = "float32" if factor == 2.0 else "bfloat16"
    if not where:
        return "Memory is what the model needs in bfloat16."
    if where.startswith("RAM"):
        head = f"Memory is the RAM the model needs on this machine's CPU, in {precision}."
    elif "unified" in where:
        head = f"Memory is what the model needs of {where}, in {precision}."
    else:
        head = f"Memory is the GPU memory the model needs on {where}, in {precision}."
    return head + (f" This machine: {human_size(total)} of {where}." if total else "")


class ModelTable(QTableWidget):
    """Rows are the unit here: Home and End go to the first and last model (a plain table moves along the row)."""

    def keyPressEvent(self, event) -> None:
        if event.key() in (Qt.Key.Key_Home, Qt.Key.Key_End) and self.rowCount():
            row = 0 if event.key() == Qt.Key.Key_Home else self.rowCount() - 1
            self.selectRow(row)
            self.setCurrentCell(row, 0)
            return
        super().keyPressEvent(event)


class ModelPicker(QDialog):
    model_chosen = Signal(str)  # a folder to load
    download_requested = Signal(str)  # repo id
    delete_in_use_requested = Signal(str)  # repo id of the loaded model: the window unloads it, then deletes
    mask_decoder_requested = Signal()  # download the segmentation mask decoder (not a model: nothing to load)
    mask_decoder_file_chosen = Signal(str)  # a vae-oid.npz the person has: used instead of a download
    repair_requested = Signal(str, str)  # repo id, the models folder that holds it: fetch its damaged files again

    def __init__(self, cache_dir: str, current: str = "", parent=None, memory: tuple[str, int] = ("", 0),
                 memory_factor: float = 1.0, decoder_file: str = ""):
        """memory: (where the model would run, its bytes), e.g. ("NVIDIA H100", 80e9) or ("RAM (CPU)", 32e9);
        memory_factor: what the chosen precision costs relative to bfloat16 (2 for float32)."""
        super().__init__(parent)
        self.setWindowTitle("Models")
        screen = (parent.screen() if parent is not None else self.screen()).availableGeometry()
        self.resize(min(940, screen.width() - 20), min(560, screen.height() - 40))  # fits an 800 x 600 screen
        self.cache_dir = cache_dir
        self.current = current
        self.decoder_file = decoder_file  # chosen by hand (or --vae); "" for the store's downloaded copy
        self.memory_where, self.memory_bytes = memory
        self.memory_factor = memory_factor
        self.offline = hub.is_offline()
        intro = QLabel("PaliGemma 2 comes in three sizes, PaliGemma (1) in one. <b>mix</b> models answer the task "
                       "prompts (caption, OCR, detect, segment…); <b>pretrained</b> ones are meant for fine-tuning. "
                       f"{memory_sentence(self.memory_where, self.memory_bytes, memory_factor)} The models are "
                       "gated: the first download asks you to sign in and accept Google's Gemma licence on the "
                       "model's page.")
        intro.setWordWrap(True)
        self.table = ModelTable(len(CATALOG), len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setTabKeyNavigation(False)  # Tab leaves the table for the buttons
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        # activated: Enter on the selection, or a double-click (one signal, so a double-click never acts twice)
        self.table.activated.connect(lambda _index: self.use_or_download())
        self.files = ModelFiles(self.offline)  # Check files, then Repair: for the selected installed model
        self.files.repair_requested.connect(self._repair)
        self.files.check.checked.connect(lambda *_: self.refresh())  # Status says "damaged" until repaired
        self.folder_label = QLabel()
        self.folder_label.setWordWrap(True)
        # The mask decoder is no model of its own: `segment` answers need it to turn <seg> codes into masks.
        self.decoder_label = QLabel()
        self.decoder_label.setWordWrap(True)
        self.decoder_button = QPushButton("Download")
        self.decoder_button.setAutoDefault(False)
        self.decoder_button.clicked.connect(self._download_decoder)
        self.decoder_file_button = QPushButton("Choose a file…")
        self.decoder_file_button.setAutoDefault(False)
        self.decoder_file_button.setToolTip("Use a vae-oid.npz you already have (checked when masks are drawn)")
        self.decoder_file_button.clicked.connect(self._choose_decoder_file)
        decoder_row = QHBoxLayout()
        decoder_row.addWidget(self.decoder_label, 1)
        decoder_row.addWidget(self.decoder_button)
        decoder_row.addWidget(self.decoder_file_button)
        self.use_button = QPushButton()
        self.use_button.clicked.connect(self.use_or_download)
        self.delete_button = QPushButton("Delete")
        self.delete_button.clicked.connect(self.delete_selected)
        local = QPushButton("Open a local folder…")
        local.clicked.connect(self.open_local)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        for b in (self.use_button, self.delete_button, local, close):
            b.setAutoDefault(False)  # Enter belongs to the table: it uses or downloads the selected row
        row = QHBoxLayout()
        row.addWidget(local)
        row.addStretch(1)
        row.addWidget(self.delete_button)
        row.addWidget(self.use_button)
        row.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.files)
        layout.addWidget(self.folder_label)
        layout.addLayout(decoder_row)
        layout.addLayout(row)
        self.refresh()
        self.select(current if any(m.repo_id == current for m in CATALOG) else DEFAULT_REPO)
        self.table.setFocus()

    def fit_of(self, spec: ModelSpec) -> str:
        return fit(int(spec.memory_bytes * self.memory_factor), self.memory_bytes)

    def quant_cell(self, spec: ModelSpec) -> str:
        """Memory and fit with int8 and with int4 decoder weights, e.g. "3.8 GiB fits · 2.8 GiB fits"."""
        float_bytes = 4 if self.memory_factor >= 2 else 2  # the CPU computes in float32: the float parts double
        cells = []
        for scheme in ("int8", "int4"):
            need = spec.scheme_memory_bytes(scheme, float_bytes)
            word = _FIT_WORDS.get(fit(need, self.memory_bytes), "").lower()
            cells.append(f"{human_size(need)} {word}".strip())
        return " · ".join(cells)

    def refresh(self) -> None:
        note = " Offline: models that are not installed need a connection." if self.offline else ""
        self.folder_label.setText(f"Models folder: {self.cache_dir} (change it in Settings).{note}")
        self._refresh_decoder()
        for row, spec in enumerate(CATALOG):
            installed = hub.find_installed(spec.repo_id, Path(self.cache_dir))
            status = "Installed" if installed else ("Needs a connection" if self.offline else "Not installed")
            if installed and self.files.results.get(str(installed)):
                status += " · damaged"
            if spec.repo_id == self.current:
                status += " · in use"
            used = hub.disk_usage(spec.repo_id, Path(self.cache_dir))
            verdict = self.fit_of(spec)
            cells = [spec.title + ("  (recommended)" if spec.repo_id == DEFAULT_REPO else ""),
                     human_size(spec.download_bytes), human_size(spec.memory_bytes * self.memory_factor),
                     _FIT_WORDS.get(verdict, "—"),
                     status, human_size(used) if used else "", self.quant_cell(spec)]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, spec.repo_id)
                if col:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                if col == FIT_COLUMN and verdict:
                    needed = human_size(spec.memory_bytes * self.memory_factor)
                    item.setToolTip(f"Needs about {needed}; {self.memory_where} has {human_size(self.memory_bytes)}. "
                                    "Fits: under 80% of it. Tight: it may run, slowly or pushing other programs "
                                    "out. Too large: it will not load.")
                self.table.setItem(row, col, item)
        self._update_buttons()

    def _refresh_decoder(self) -> None:
        installed = find_mask_decoder(Path(self.cache_dir)) is not None
        state = (f"using {self.decoder_file}" if self.decoder_file else "installed" if installed else "not installed")
        self.decoder_label.setText(f"{MASK_DECODER_TITLE}, for segment answers: {state}")
        self.decoder_button.setVisible(not installed and not self.decoder_file)
        self.decoder_button.setEnabled(not self.offline)

    def _choose_decoder_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "The mask decoder (vae-oid.npz)", str(Path.home()),
                                              "Mask decoder (*.npz);;All files (*)")
        if path:
            self.decoder_file = path
            self.mask_decoder_file_chosen.emit(path)
            self._refresh_decoder()

    def _download_decoder(self) -> None:
        self.mask_decoder_requested.emit()
        self.accept()

    def select(self, repo_id: str) -> None:
        for row, spec in enumerate(CATALOG):
            if spec.repo_id == repo_id:
                self.table.selectRow(row)
                self.table.setCurrentCell(row, 0)

    def selected(self) -> ModelSpec | None:
        rows = self.table.selectionModel().selectedRows()
        return CATALOG[rows[0].row()] if rows else None

    def _update_buttons(self) -> None:
        spec = self.selected()
        path = hub.find_installed(spec.repo_id, Path(self.cache_dir)) if spec is not None else None
        self.use_button.setText("Use" if path else "Download")
        self.use_button.setEnabled(spec is not None and (path is not None or not self.offline))
        self.delete_button.setEnabled(spec is not None and hub.disk_usage(spec.repo_id, Path(self.cache_dir)) > 0)
        self.files.show_model(spec.repo_id if spec else "", spec.title if spec else "", str(path or ""))

    def use_or_download(self) -> None:
        spec = self.selected()
        if spec is None:
            return
        if path := hub.find_installed(spec.repo_id, Path(self.cache_dir)):
            self.model_chosen.emit(str(path))
            self.accept()
        elif not self.offline:
            self.download_requested.emit(spec.repo_id)  # the window runs it; the picker's job is done
            self.accept()

    def _repair(self, repo_id: str, cache_dir: str) -> None:
        self.repair_requested.emit(repo_id, cache_dir)  # the window runs it, as a download; the picker's job is done
        self.accept()

    def done(self, result: int) -> None:
        self.files.stop()  # a check still hashing stops within one chunk
        super().done(result)

    def delete_selected(self) -> None:
        spec = self.selected()
        if spec is None:
            return
        size = human_size(hub.disk_usage(spec.repo_id, Path(self.cache_dir)))
        if spec.repo_id == self.current:
            if confirm(self, "Delete the model in use", f"<b>{spec.title}</b> is the model in use.",
                       "Delete and unload", f"Deleting it unloads it now and frees {size}; until you download or "
                       "choose another model, the app cannot answer."):
                self.delete_in_use_requested.emit(spec.repo_id)
            return
        if confirm(self, "Delete model", f"Delete <b>{spec.title}</b>?", "Delete",
                   f"This frees {size} in {self.cache_dir}."):
            hub.delete_model(spec.repo_id, Path(self.cache_dir))
            self.refresh()

    def deleted_in_use(self) -> None:
        """The window unloaded and deleted the model that was in use."""
        self.current = ""
        self.refresh()

    def open_local(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a PaliGemma 2 model folder", str(Path.home()))
        if path:
            self.model_chosen.emit(path)
            self.accept()
