"""Assets are plain files under resources/, found the same way from source and from a frozen build."""

from __future__ import annotations

import sys
from pathlib import Path


def resources_dir() -> Path:
    frozen_root = getattr(sys, "_MEIPASS", None)  # PyInstaller unpacks data files here
    if frozen_root:
        return Path(frozen_root) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def asset(name: str) -> Path:
    path = resources_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"missing asset {name} (looked in {resources_dir()})")
    return path
