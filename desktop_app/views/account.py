"""Settings › Account: which Hugging Face token downloads use, and changing or forgetting it.

The token itself is never shown: only where it comes from and its last four characters, which is how the Hub's own
token page tells tokens apart.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from ..jobs.download import AccountCheck
from .download_dialog import TokenDialog


def current_token() -> str:
    from huggingface_hub import constants

    env = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if env:
        return env.strip()
    try:
        return Path(constants.HF_TOKEN_PATH).read_text().strip()
    except OSError:
        return ""


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
        self.account = ""  # the Hub's name for the token's owner, once asked
        self.check = AccountCheck(self)
        self.check.named.connect(self._on_named)
        self.check.failed.connect(self._on_check_failed)
        self.refresh()

    def refresh(self) -> None:
        source, tail = token_source()
        self.account = ""
        if source:
            self.check.check(current_token())  # names the account (or finds the token refused) in a moment
        if source == "environment":
            self.label.setText(f"Signed in with the token in HF_TOKEN (…{tail}). Unset HF_TOKEN to change it.")
        elif source == "saved":
            self.label.setText(f"Signed in: a Hugging Face token is saved (…{tail}).")
        else:
            self.label.setText("Not signed in. Gated models (all of PaliGemma 2) ask for a token on first download.")
        self.change_button.setText("Change token…" if source else "Sign in…")
        self.change_button.setEnabled(source != "environment")
        self.forget_button.setEnabled(source == "saved")

    def _on_named(self, user: str) -> None:
        source, tail = token_source()
        if not source:
            return
        self.account = user
        where = "the token in HF_TOKEN" if source == "environment" else "a saved token"
        extra = " Unset HF_TOKEN to change it." if source == "environment" else ""
        self.label.setText(f"Signed in as <b>{user}</b> with {where} (…{tail}).{extra}")

    def _on_check_failed(self, kind: str, _message: str) -> None:
        source, tail = token_source()
        if kind != "invalid_token" or not source:
            return  # offline or the Hub unreachable: the token may be fine; the label says it is there
        where = "The token in HF_TOKEN" if source == "environment" else "The saved token"
        self.label.setText(f"{where} (…{tail}) is not accepted by Hugging Face: it may be mistyped, expired or "
                           "revoked. " + ("Set HF_TOKEN to a valid token." if source == "environment"
                                          else "Change it to a new one."))

    def change(self) -> None:
        if TokenDialog("", self).exec():
            self.refresh()
            self.changed.emit()

    def forget(self) -> None:
        forget_token()
        self.refresh()
        self.changed.emit()
