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


_CLI_ADVICE = re.compile(r"[;,]?\s*(?:use|pass it with|run with|try)\s+--[A-Za-z][\w-]*(?:\s+[^\s.;,)]+)?\s*(?=[.;]|$)")


def without_cli_advice(text: str) -> str:
    """A terminal's advice ("…; use --device cpu") means nothing in the window, which offers its own way (the
    device setting, a button): drop it. "No CUDA GPU is available; use --device cpu" -> "No CUDA GPU is available"."""
    return _CLI_ADVICE.sub("", text).strip()


def for_the_window(text: str) -> str:
    """A message written for the CLI, with the window's way to do what its flag does."""
    text = text.replace("pass it with --vae PATH", "choose it with “Choose a file…” in the Models dialog")
    return without_cli_advice(text)
