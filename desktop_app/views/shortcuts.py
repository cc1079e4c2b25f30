"""Menu shortcuts that work on every platform.

Some standard keys map to nothing on some platforms: Quit is Ctrl+Q on GNOME, KDE and macOS (Cmd+Q) but empty on
Windows and under the offscreen platform; Preferences is Ctrl+, on macOS only. `standard_or` keeps the platform's
own binding and adds the common one beside it, so a menu always shows a key and the key always works.
"""

from __future__ import annotations

from PySide6.QtGui import QKeySequence


def standard_or(key: QKeySequence.StandardKey, fallback: str) -> list[QKeySequence]:
    """The platform's bindings for `key`, then `fallback` unless it is one of them already."""
    keys = [k for k in QKeySequence.keyBindings(key) if not k.isEmpty()]
    extra = QKeySequence(fallback)
    return keys if extra in keys else keys + [extra]
