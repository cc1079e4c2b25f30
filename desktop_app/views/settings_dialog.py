"""Settings: device, dtype, answer length and sampling."""

from __future__ import annotations

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout)

from ..settings import DEVICES, DTYPES, Settings


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self._model_dir = settings.model_dir
        self._models_dir = settings.models_dir
        self.models_folder = QLabel(settings.models_folder())
        self.models_folder.setWordWrap(True)
        change = QPushButton("Change…")
        change.clicked.connect(self._choose_models_dir)
        self.manage = QPushButton("Manage models…")  # sizes on disk, delete: the model picker
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.models_folder, 1)
        folder_row.addWidget(change)
        folder_row.addWidget(self.manage)
        form = QFormLayout()
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setCurrentText(settings.device)
        self.dtype = QComboBox()
        self.dtype.addItems(DTYPES)
        self.dtype.setCurrentText(settings.dtype)
        self.max_new_tokens = QSpinBox()
        self.max_new_tokens.setRange(1, 4096)
        self.max_new_tokens.setValue(settings.max_new_tokens)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 5.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setSpecialValueText("greedy")
        self.temperature.setValue(settings.temperature)
        self.top_k = QSpinBox()
        self.top_k.setRange(0, 1000)
        self.top_k.setSpecialValueText("off")
        self.top_k.setValue(settings.top_k)
        self.top_p = QDoubleSpinBox()
        self.top_p.setRange(0.01, 1.0)
        self.top_p.setSingleStep(0.05)
        self.top_p.setValue(settings.top_p)
        form.addRow("Device", self.device)
        form.addRow("Precision", self.dtype)
        form.addRow("Max new tokens", self.max_new_tokens)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-k", self.top_k)
        form.addRow("Top-p", self.top_p)
        form.addRow("Models folder", folder_row)
        note = QLabel("Device and precision apply when the model is next loaded. "
                      "Greedy decoding is what PaliGemma's task prompts were trained for.")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(buttons)

    def _choose_models_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for downloaded models", self.models_folder.text())
        if path:
            self._models_dir = path
            self.models_folder.setText(path)

    def result_settings(self) -> Settings:
        return Settings(self.device.currentText(), self.dtype.currentText(), self.max_new_tokens.value(),
                        self.temperature.value(), self.top_k.value(), self.top_p.value(), self._model_dir,
                        self._models_dir).validated()
