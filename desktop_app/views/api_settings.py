"""Settings › Local API server: on/off, port, the URL to copy, and "Allow other devices on my network", which
always comes with an API key (generated here, shown and copyable). The server itself: desktop_app/jobs/api_server.py."""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (QCheckBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton,
                               QSpinBox)

from ..settings import Settings


def new_api_key() -> str:
    import secrets

    return "pg-" + secrets.token_urlsafe(24)


def api_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1"


class ApiServerBox(QGroupBox):
    def __init__(self, settings: Settings, parent=None):
        super().__init__("Local API server", parent)
        self.enabled = QCheckBox("Answer other programs through an OpenAI- and Ollama-compatible API")
        self.enabled.setChecked(settings.api_server)
        self.port = QSpinBox()
        self.port.setRange(1024, 65535)
        self.port.setValue(settings.api_port)
        self.url = QLineEdit()
        self.url.setReadOnly(True)
        self.copy_url = QPushButton("Copy")
        self.copy_url.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.url.text()))
        self.network = QCheckBox("Allow other devices on my network (they need the API key shown then)")
        self.network.setChecked(settings.api_network and bool(settings.api_key))
        self.key = QLineEdit(settings.api_key)
        self.key.setReadOnly(True)
        self.key.setPlaceholderText("made when you allow other devices")
        self.key.setToolTip("Other programs send it as `Authorization: Bearer KEY` (README › Use it from other tools)")
        self.copy_key = QPushButton("Copy")
        self.copy_key.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.key.text()))
        self.new_key = QPushButton("New key")
        self.new_key.setToolTip("Replace the key: programs using the old one must be given the new one")
        self.new_key.clicked.connect(lambda: self.key.setText(new_api_key()))
        self.history = QCheckBox("Keep API requests in History")
        self.history.setChecked(settings.api_history)
        url_row, key_row = QHBoxLayout(), QHBoxLayout()  # port and URL on one row: the dialog fits 600 px
        url_row.addWidget(self.port)
        url_row.addWidget(self.url, 1)
        url_row.addWidget(self.copy_url)
        key_row.addWidget(self.key, 1)
        key_row.addWidget(self.copy_key)
        key_row.addWidget(self.new_key)
        form = QFormLayout(self)
        form.addRow(self.enabled)
        form.addRow("Port, URL", url_row)
        form.addRow(self.network)
        self._key_row = form.rowCount()
        form.addRow("API key", key_row)
        form.addRow(self.history)
        self._form = form
        # The key row shows only with other devices allowed, and the box says the rest in a tooltip: the whole
        # dialog stays under 600 px high.
        self.setToolTip("Serves the model loaded in this window; your own questions go first.")
        self.port.valueChanged.connect(self._refresh)
        self.network.toggled.connect(self._network_toggled)
        self._refresh()

    def _network_toggled(self, on: bool) -> None:
        if on and not self.key.text():
            self.key.setText(new_api_key())  # never on the network without a key
        self._refresh()

    def _refresh(self) -> None:
        self._form.setRowVisible(self._key_row, self.network.isChecked())
        self.url.setText(api_url(self.port.value()))
        self.url.setToolTip("Other devices use this computer's network address instead of 127.0.0.1"
                            if self.network.isChecked() else "Only programs on this computer can reach it")

    def applied(self, settings: Settings) -> Settings:
        return replace(settings, api_server=self.enabled.isChecked(), api_port=self.port.value(),
                       api_network=self.network.isChecked() and bool(self.key.text()), api_key=self.key.text(),
                       api_history=self.history.isChecked())
