"""Settings: device (only those present, and why the others are not), precision, answer length, sampling, the
models folder, the Hugging Face account and the Local API server."""

from __future__ import annotations

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog,
                               QFormLayout, QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout)

from ..settings import DTYPES, Settings, precision_note
from .account import AccountBox
from .api_settings import ApiServerBox


def device_choices(devices: dict | None) -> tuple[list[str], str]:
    """(the devices to offer, a sentence on the missing ones). Before PyTorch has started, only auto and cpu."""
    if devices is None:
        return ["auto", "cpu"], "GPUs are listed once PyTorch has started (a few seconds after launch)."
    missing = devices.get("missing", {})
    note = "; ".join(f"{name}: {why}" for name, why in missing.items())
    return ["auto", *devices.get("present", ["cpu"])], (f"Not available here — {note}." if note else "")


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, parent=None, devices: dict | None = None):
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
        offered, why_missing = device_choices(devices)
        self.device.addItems(offered)
        self.device.setCurrentText(settings.device if settings.device in offered else "auto")
        self.device_note = QLabel(why_missing)
        self.device_note.setWordWrap(True)
        self.device_note.setVisible(bool(why_missing))
        self.dtype = QComboBox()
        gpu = devices is None or any(d in devices.get("present", ()) for d in ("cuda", "mps"))
        # float16 is a GPU format: on a CPU-only PyTorch it is slow and no better than bfloat16, so it is not
        # offered there (a float16 setting already saved stays visible).
        self.dtype.addItems([d for d in DTYPES if gpu or d != "float16" or settings.dtype == "float16"])
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
        form.addRow("", self.device_note)
        form.addRow("Precision", self.dtype)
        self.precision_note = QLabel(precision_note(((devices or {}).get("auto_dtypes") or {}).get("cpu")))
        self.precision_note.setWordWrap(True)
        form.addRow("", self.precision_note)
        self.cuda_graphs = QCheckBox("Replay each decode step as a CUDA graph (NVIDIA GPUs; faster decoding)")
        self.cuda_graphs.setChecked(settings.cuda_graphs)
        self.cuda_graphs.setToolTip("Off decodes eagerly. Applies when a model is next loaded.")
        form.addRow("", self.cuda_graphs)
        # Only where PyTorch can use an NVIDIA GPU; before PyTorch has said, it stays (the note above says so).
        self.cuda_graphs.setVisible(devices is None or "cuda" in devices.get("present", ()))
        form.addRow("Max new tokens", self.max_new_tokens)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-k", self.top_k)
        form.addRow("Top-p", self.top_p)
        form.addRow("Models folder", folder_row)
        self.account = AccountBox()
        form.addRow("Account", self.account)
        note = QLabel("Changing device or precision asks whether to reload the model now; otherwise they apply "
                      "when a model is next loaded. Greedy decoding is what PaliGemma's task prompts were trained for.")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        self.api = ApiServerBox(settings)
        layout.addWidget(self.api)
        layout.addWidget(buttons)

    def _choose_models_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for downloaded models", self.models_folder.text())
        if path:
            self._models_dir = path
            self.models_folder.setText(path)

    def result_settings(self) -> Settings:
        return self.api.applied(self._form_settings()).validated()

    def _form_settings(self) -> Settings:
        return Settings(self.device.currentText(), self.dtype.currentText(), self.max_new_tokens.value(),
                        self.temperature.value(), self.top_k.value(), self.top_p.value(), self._model_dir,
                        self._models_dir, self.cuda_graphs.isChecked()).validated()
