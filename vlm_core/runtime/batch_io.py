"""Batch jobs without torch: which images to run, the result rows, and the files they go to.

Shared by the CLI, the desktop app (whose GUI side never imports torch) and the Ray predictor, so a row means the
same everywhere: `path, prompt, text, objects, tokens, seconds, error` plus `stop_reason` and `path_b64`.

File names are bytes on Linux and need not be UTF-8. In memory a path is Python's str for them (os.fsdecode: an
undecodable byte becomes a lone surrogate), which no UTF-8 file can hold. So a written record's `path` is always
valid text (an undecodable byte shows as U+FFFD), and `path_b64` carries the name's exact bytes (standard base64)
when they are not UTF-8, null otherwise; reading a record back takes `path_b64` first, so `--resume` and every
other reader get the very file again.

Output files are written one complete line (or CSV record) per image and flushed at once, so a run killed at any
moment leaves every finished image on disk; `--resume` reads them back, drops a half-written last line, and skips
those images.
"""

from __future__ import annotations

import base64
import csv
import glob
import io
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import VlmError
from .answers import objects_json, parse_objects

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
FORMATS = ("jsonl", "csv")
COLUMNS = ("path", "prompt", "text", "objects", "tokens", "seconds", "error", "stop_reason", "path_b64")


class InputError(VlmError):
    """The inputs or the output file cannot be used; the message says what to change."""


@dataclass
class Row:
    path: str
    prompt: str
    text: str = ""
    objects: list[dict] = field(default_factory=list)  # as `generate --json`: label, box [x0, y0, x1, y1], mask
    tokens: int = 0  # generated tokens, the final <eos> not counted
    seconds: float = 0.0  # this image's latency within its batch (vision tower to its last token)
    error: str | None = None  # why this image has no answer; None when it has one
    stop_reason: str | None = None  # eos | max_new_tokens (None for an error row)

    def to_dict(self) -> dict:
        """The row as written to a file: every column, only valid text (see the module docstring)."""
        d = asdict(self)
        d["path"], d["path_b64"] = as_text(self.path), path_b64(self.path)
        d["prompt"], d["text"] = as_text(self.prompt), as_text(self.text)
        d["error"] = None if self.error is None else as_text(self.error)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Row":
        fields = {k: d.get(k) for k in COLUMNS if k in d and k != "path_b64"}
        if d.get("path_b64"):
            fields["path"] = os.fsdecode(base64.b64decode(d["path_b64"], validate=True))
        return cls(**fields)


def path_b64(path: str) -> str | None:
    """The file name's exact bytes, base64, when they are not UTF-8 (a str from os.fsdecode with surrogates)."""
    try:
        path.encode("utf-8")
        return None
    except UnicodeEncodeError:
        return base64.b64encode(os.fsencode(path)).decode("ascii")


def as_text(s: str) -> str:
    """Valid text for a UTF-8 file: a byte the OS name could not decode shows as U+FFFD."""
    try:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte (not from os.fsdecode)
        return s.encode("utf-8", "replace").decode("utf-8")


def objects_from_text(text: str, width: int, height: int) -> list[dict]:
    """The detect/segment objects in an answer exactly as `generate --json` lists them (label, box in the image's
    integer pixels, mask None: batches do not decode masks); [] for any other answer."""
    return objects_json(parse_objects(text, width, height))


def list_inputs(spec: str | os.PathLike) -> list[str]:
    """A folder (its images, sub-folders included, sorted), a glob pattern, a .txt list (one path a line, relative
    to the list's folder; blank lines and # comments skipped) or one image file -> image paths in a stable order.

    Files in a folder or glob with a non-image extension are left out; a list file's entries are kept as they are,
    so a missing or unreadable one becomes an error row instead of vanishing. So does a link with an image
    extension that leads nowhere (dangling, or a symlink loop). Names are kept exactly as the OS gives them (str
    from os.fsdecode), whatever their encoding.
    """
    spec = os.fspath(spec)
    p = Path(spec)
    if p.is_dir():
        found = sorted(str(f) for f in p.rglob("*")
                       if (f.is_file() or f.is_symlink()) and f.suffix.lower() in IMAGE_EXTENSIONS
                       and not any(part.startswith(".") for part in f.relative_to(p).parts))
        if not found:
            raise InputError(f"{spec} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return found
    if p.is_file() and p.suffix.lower() == ".txt":
        paths = []
        for line in p.read_text(encoding="utf-8", errors="surrogateescape").splitlines():  # names as bytes
            line = line.strip()
            if line and not line.startswith("#"):
                paths.append(line if Path(line).is_absolute() else str(p.parent / line))
        if not paths:
            raise InputError(f"{spec} lists no images: put one path a line")
        return paths
    if p.is_file():
        return [spec]
    if glob.has_magic(spec):
        found = sorted(f for f in glob.glob(spec, recursive=True)
                       if (os.path.isfile(f) or os.path.islink(f)) and Path(f).suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise InputError(f"no images match {spec}")
        return found
    raise InputError(f"{spec} does not exist: give a folder, a glob pattern (quoted), a .txt list or an image")


def path_key(path: str) -> str:
    """What makes two spellings of one file the same image for --resume."""
    return os.path.normcase(os.path.abspath(path))


def format_for(out: str | os.PathLike, fmt: str | None) -> str:
    if fmt is None:
        fmt = "csv" if Path(out).suffix.lower() == ".csv" else "jsonl"
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}: use jsonl or csv")
    return fmt


def read_rows(path: str | os.PathLike, fmt: str) -> list[Row]:
    """Every complete row of an output file; a half-written last record (a killed run) is left out."""
    p = Path(path)
    if not p.exists():
        return []
    text = p.read_text(encoding="utf-8")
    cut = bool(text) and not text.endswith("\n")  # every record this module writes ends with a newline
    try:
        if fmt == "jsonl":
            lines = text.splitlines()
            rows = [Row.from_dict(json.loads(line)) for line in (lines[:-1] if cut else lines) if line.strip()]
        else:
            records = list(csv.DictReader(io.StringIO(text, newline="")))
            if records and (cut or None in records[-1].values()):  # a field cut off, or fields missing
                records.pop()
            rows = [_row_from_csv(rec) for rec in records]
    except (ValueError, TypeError, KeyError) as e:  # binascii.Error (bad path_b64) is a ValueError
        raise InputError(f"{p} is not a results file this command wrote ({type(e).__name__}: {e}); "
                         "give another --out or remove it") from None
    return rows


def _row_from_csv(rec: dict) -> Row:
    return Row.from_dict({"path": rec["path"], "prompt": rec["prompt"], "text": rec["text"] or "",
                          "objects": json.loads(rec["objects"] or "[]"), "tokens": int(rec["tokens"] or 0),
                          "seconds": float(rec["seconds"] or 0), "error": rec["error"] or None,
                          "stop_reason": rec["stop_reason"] or None, "path_b64": rec.get("path_b64") or None})


class ResultWriter:
    """Appends rows to a JSONL or CSV file, one flushed record per image."""

    def __init__(self, path: str | os.PathLike, fmt: str, resume: bool):
        self.path, self.fmt = Path(path), fmt
        if self.path.is_dir():
            raise InputError(f"--out {self.path} is a folder: give a file name, e.g. results.{fmt}")
        if not self.path.parent.exists():
            raise InputError(f"the folder for {self.path} does not exist")
        self.kept = read_rows(self.path, fmt) if resume else []
        if self.kept:
            # Rewritten from the rows read back, so a half-written last record is gone before anything is
            # appended; through a temporary file and a rename, so a kill during it loses nothing.
            tmp = self.path.with_name(self.path.name + ".partial")
            self._open(tmp, "w")
            for row in self.kept:
                self.write(row)
            self._file.close()
            os.replace(tmp, self.path)
            self._open(self.path, "a")
        else:
            self._open(self.path, "w")

    def _open(self, path: Path, mode: str) -> None:
        self._file = path.open(mode, encoding="utf-8", newline="")
        self._csv = csv.DictWriter(self._file, COLUMNS) if self.fmt == "csv" else None
        if self._csv is not None and mode == "w":
            self._csv.writeheader()
        self._file.flush()

    def write(self, row: Row) -> None:
        d = row.to_dict()
        if self._csv is not None:
            d["objects"] = json.dumps(d["objects"], ensure_ascii=False)
            self._csv.writerow(d)
        else:
            self._file.write(json.dumps(d, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_rows(path: str | os.PathLike, rows: Iterable[Row], fmt: str | None = None) -> None:
    """Write a whole result set at once (the app's export)."""
    with ResultWriter(path, format_for(path, fmt), resume=False) as w:
        for row in rows:
            w.write(row)
