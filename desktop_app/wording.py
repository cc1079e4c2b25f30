"""Text for the window from messages written for a terminal.

A wrapped label may break `--device cpu` after its hyphens or before its value, which reads as a different
command. Non-breaking hyphens (U+2011) and a non-breaking space keep a flag and its value on one line.
"""

from __future__ import annotations

import re

_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)(?: (?=[\w./~:-])([^\s,;)]+))?")


def keep_flags_together(text: str) -> str:
    def unbreakable(m: re.Match) -> str:
        flag = m.group(1).replace("-", "\u2011")
        return f"{flag}\u00a0{m.group(2)}" if m.group(2) else flag

    return _FLAG.sub(unbreakable, text)
