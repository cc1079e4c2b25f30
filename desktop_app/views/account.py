"""Settings › Account: which Hugging Face token downloads use, and changing or forgetting it.

The token itself is never shown: only where it comes from and its last four characters, which is how the Hub's own
token page tells tokens apart.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from .download_dialog import TokenDialog


def token_source() -> tuple[str, str]:
    """("environment" | "saved" | "", last four characters)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if env:
        return "environment", env.strip()[-4:]
    try:
        saved = Path(constants.HF_TOKEN_PATH).read_text().strip()
    except OSError:
        saved = ""
    return ("saved", saved[-4:]) if saved else ("", "")


def forget_token() -> None:
    """Delete the saved token (the file `hf auth login` and this app write), and the copies saved under a name."""
    from huggingface_hub import constants

    for path in (constants.HF_TOKEN_PATH, constants.HF_STORED_TOKENS_PATH):
        Path(path).unlink(missing_ok=True)


class AccountBox(QWidget):
    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.change_button = QPushButton()
        self.change_button.clicked.connect(self.change)
        self.forget_button = QPushButton("Forget token")
        self.forget_button.clicked.connect(self.forget)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.label, 1)
        row.addWidget(self.change_button)
        row.addWidget(self.forget_button)
        self.refresh()

    def refresh(self) -> None:
        source, tail = token_source()
        if source == "environment":
            self.label.setText(f"Signed in with the token in HF_TOKEN (…{tail}). Unset HF_TOKEN to change it.")
        elif source == "saved":
            self.label.setText(f"Signed in: a Hugging Face token is saved (…{tail}).")
        else:
            self.label.setText("Not signed in. Gated models (all of PaliGemma 2) ask for a token on first download.")
        self.change_button.setText("Change token…" if source else "Sign in…")
        self.change_button.setEnabled(source != "environment")
        self.forget_button.setEnabled(source == "saved")

    def change(self) -> None:
        if TokenDialog("", self).exec():
            self.refresh()
            self.changed.emit()

    def forget(self) -> None:
        forget_token()
        self.refresh()
        self.changed.emit()
