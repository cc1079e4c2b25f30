"""Where file dialogs start: the last folder the person used, else their Pictures folder, else home; never the
process's working directory (from a desktop menu that is / or the install folder). Export suggests a file name."""

from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import QSettings, QStandardPaths

LAST_FOLDER = "dialogs/last_folder"


def _standard(kind: QStandardPaths.StandardLocation) -> str:
    path = QStandardPaths.writableLocation(kind)
    return path if path and Path(path).is_dir() else str(Path.home())


def pictures_folder() -> str:
    return _standard(QStandardPaths.StandardLocation.PicturesLocation)


def documents_folder() -> str:
    return _standard(QStandardPaths.StandardLocation.DocumentsLocation)


def start_folder(store: QSettings | None = None) -> str:
    last = str((store or QSettings()).value(LAST_FOLDER, "") or "")
    return last if last and Path(last).is_dir() else pictures_folder()


def remember_folder(path: str, store: QSettings | None = None) -> None:
    """Remember the folder of a chosen file (or a chosen folder itself) for the next dialog."""
    p = Path(path)
    (store or QSettings()).setValue(LAST_FOLDER, str(p if p.is_dir() else p.parent))


def suggested_name(image_name: str, suffix: str) -> str:
    """'IMG_0042.jpg' exported as Markdown -> 'IMG_0042 conversation.md'; a pasted image -> 'conversation.md'."""
    stem = re.sub(r'[\\/:*?"<>|]+', "_", Path(image_name or "").stem).strip(" .")
    stem = "" if stem in ("pasted image", "dropped image") else stem
    return f"{stem} conversation{suffix}" if stem else f"conversation{suffix}"


def export_suggestion(window, target, file_filter: str) -> str:
    """Where File › Export's dialog starts: the last folder, with a name from the image when `target` (a
    conversation id or an image key) is the one on screen."""
    image = getattr(window, "image", None)
    name = image.name if image is not None and target == image.key else ""
    suffix = m[1] if (m := re.search(r"\*(\.\w+)", file_filter)) else ""
    return str(Path(start_folder(getattr(window, "store", None))) / suggested_name(name, suffix))
