"""What to call a model folder on screen: the repo's name, never a snapshot's commit hash.

A download lives at `<cache>/models--google--paligemma2-3b-mix-224/snapshots/<40-hex commit>/`; the folder's own
name is the commit, which says nothing to a person. Plain Python (no Qt, no torch).
"""

from __future__ import annotations

from pathlib import Path


def repo_id_of(path: str | Path) -> str:
    """`google/paligemma2-3b-mix-224` for a folder inside a Hub cache, "" for any other folder."""
    parts = Path(path).parts
    for i, part in enumerate(parts):
        if part.startswith("models--") and i + 2 < len(parts) and parts[i + 1] == "snapshots":
            return part.removeprefix("models--").replace("--", "/", 1)
    return ""


def display_name(path: str | Path) -> str:
    """`paligemma2-3b-mix-224` for a download, the folder's name for a local model folder."""
    if repo := repo_id_of(path):
        return repo.split("/", 1)[-1]
    return Path(path).name or str(path)


def window_title(image: str, model: str, app: str) -> str:
    """`photo.jpg — paligemma2-3b-mix-224 — PaliGemma Desktop`, leaving out what is not there yet."""
    return " — ".join(part for part in (image, model, app) if part)
