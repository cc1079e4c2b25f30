"""Per-image prompts for a batch job: a manifest (CSV or JSON Lines) of image and prompt, and the rows it asks for.

    image,prompt                                   {"image": "cat.jpg", "prompt": "detect cat"}
    cat.jpg,detect cat                             {"image": "scans/p1.png", "prompt": "ocr"}
    scans/p1.png,ocr                               {"image": "/data/dog.jpg", "prompt": null}
    /data/dog.jpg,

CSV has a header line naming its columns; JSON Lines has one object a line. Keys: `image`, a path, absolute or
relative to the caller's base folder (the CLI's: the --inputs folder, else the manifest's own); `image_b64` instead
of it for a name that is not UTF-8, its exact bytes in standard base64 as in the result rows' `path_b64` (JSON Lines
may also carry such a name as the surrogate escapes that Python's json.dumps(os.fsdecode(name)) writes); and
`prompt`. An empty or missing prompt means the default prompt (the CLI's --prompt); without one that line is an
error. One image may have several lines with different prompts (a row each); the same image and prompt twice is an
error. Any other key or column is refused, so a misspelt `prompt` is never silently ignored. CSV must be UTF-8 (a
BOM is fine: spreadsheets write one).

Every problem raises an InputError naming the file and line and saying what to change, before any model loads.
No torch here, as in batch_io.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .batch_io import InputError, as_text, list_inputs, path_key

KEYS = ("image", "image_b64", "prompt")
EXAMPLE = {"csv": "image,prompt", "jsonl": '{"image": "cat.jpg", "prompt": "caption en"}'}


@dataclass(frozen=True)
class Entry:
    image: str  # resolved against the base folder; any bytes the OS allows (os.fsdecode's str)
    prompt: str | None  # None: the default prompt
    line: int  # where the line starts in the manifest, from 1


def manifest_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise InputError(f"--prompts {os.fspath(path)}: give a .csv or .jsonl file (one image and its prompt a line)")


def read_manifest(path: str | os.PathLike, base: str | os.PathLike) -> list[Entry]:
    """The manifest's lines, images resolved against `base` -> entries in file order."""
    p = Path(path)
    fmt = manifest_format(p)
    if not p.is_file():
        raise InputError(f"--prompts {p} does not exist" if not p.exists() else f"--prompts {p} is not a file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"--prompts {p} cannot be read ({e.strerror or e})") from None
    text = _utf8(p, data)
    entries = _read_csv(p, text) if fmt == "csv" else _read_jsonl(p, text)
    if not entries:
        raise InputError(f"{p} lists no images: one image and its prompt a line, e.g. {EXAMPLE[fmt]}")
    return [Entry(image if os.path.isabs(image) else str(Path(base) / image), prompt, line)
            for image, prompt, line in entries]


def plan(entries: Sequence[Entry], manifest: str | os.PathLike, default_prompt: str | None,
         inputs: Sequence[str] | None = None, inputs_spec: str | None = None) -> list[tuple[str, str]]:
    """The (path, prompt) rows to run: the manifest's lines in order; or, given `inputs` (what --inputs listed,
    `inputs_spec` as typed), each of those images in their order with its manifest prompts (a row per line) or else
    the default prompt.

    An image the manifest names must exist, and be among `inputs` when given; an image of `inputs` with no line
    needs a default prompt. Otherwise an InputError says which line or image, and what to do."""
    known = {path_key(p): p for p in inputs} if inputs is not None else None
    seen: dict[tuple[str, str], int] = {}
    rows, by_image = [], {}
    for e in entries:
        where = f"{manifest} line {e.line}"
        prompt = e.prompt if e.prompt is not None else default_prompt
        if prompt is None:
            raise InputError(f"{where} has no prompt: write one there, or give --prompt for lines without one")
        key = path_key(e.image)
        if not os.path.lexists(e.image) or (known is not None and key not in known):
            why = "does not exist" if not os.path.lexists(e.image) else f"is not among the images of {inputs_spec}"
            raise InputError(f"{where}: {as_text(e.image)} {why}; fix the path or remove the line")
        if (first := seen.setdefault((key, prompt), e.line)) != e.line:
            raise InputError(f"{where} repeats line {first} (the same image and prompt): remove one of them")
        rows.append((e.image, prompt))
        if known is not None:
            by_image.setdefault(key, []).append((known[key], prompt))  # spelt as --inputs lists it
    if known is None:
        return rows
    rows, missing = [], []
    for p in inputs:
        if (listed := by_image.get(path_key(p))) is not None:
            rows.extend(listed)
        elif default_prompt is not None:
            rows.append((p, default_prompt))
        else:
            missing.append(p)
    if missing:
        raise InputError(f"{len(missing)} of the images of {inputs_spec} have no line in {manifest} (the first: "
                         f"{as_text(missing[0])}) and there is no --prompt for them: give --prompt, list them in "
                         f"{manifest}, or leave out --inputs to run just the manifest's images")
    return rows


def batch_jobs(inputs: str | None, manifest: str | None, prompt: str | None
               ) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """--inputs, --prompts and --prompt as typed (the CLI's batch, the Ray example) -> the (path, prompt) rows to
    run, and where each prompt comes from ("--prompt" or "FILE line N", for a message about it). A relative image
    in the manifest is read from the --inputs folder, else from the manifest's own folder."""
    listed = list_inputs(inputs) if inputs is not None else None
    if manifest is None:
        return [(path, prompt) for path in listed], {prompt: "--prompt"}
    base = inputs if inputs is not None and Path(inputs).is_dir() else Path(manifest).parent
    entries = read_manifest(manifest, base)
    sources = {prompt: "--prompt"} if prompt is not None else {}
    for e in entries:
        if e.prompt is not None:
            sources.setdefault(e.prompt, f"{manifest} line {e.line}")
    return plan(entries, manifest, prompt, listed, inputs), sources


def _utf8(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise InputError(f"{path} line {line} is not UTF-8 text (byte 0x{data[e.start]:02x}): save it as UTF-8; "
                         "a file name that is not UTF-8 goes in an image_b64 column, as base64 of its bytes") from None


def _read_csv(path: Path, text: str) -> list[tuple[str, str | None, int]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    entries, start, header = [], 1, None
    try:
        for record in reader:
            line, start = start, reader.line_num + 1  # a quoted field may span lines: report where it began
            if not record:
                continue  # a blank line
            if header is None:
                header = _check_keys(path, line, [c.strip() for c in record], "column")
                continue
            if len(record) != len(header):
                raise InputError(f"{path} line {line} has {len(record)} fields and the header {len(header)}: quote a "
                                 'prompt that holds a comma ("detect cat, dog"), one image and prompt a line')
            d = dict(zip(header, record))
            entries.append((*_image_and_prompt(path, line, d.get("image") or None, d.get("image_b64") or None,
                                               d.get("prompt") or None), line))
    except csv.Error as e:
        raise InputError(f"{path} line {reader.line_num} is not valid CSV ({e}): quote a field that holds a quote, "
                         "a comma or a line break, doubling the quotes inside it") from None
    if header is None:
        raise InputError(f"{path} is empty: the first line names the columns ({EXAMPLE['csv']}), then one image a line")
    return entries


def _read_jsonl(path: Path, text: str) -> list[tuple[str, str | None, int]]:
    entries = []
    for line, raw in enumerate(text.split("\n"), 1):
        if not raw.strip():
            continue
        try:
            d = json.loads(raw)
        except ValueError as e:
            raise InputError(f"{path} line {line} is not JSON ({e}): one object a line, e.g. "
                             f"{EXAMPLE['jsonl']}") from None
        if not isinstance(d, dict):
            raise InputError(f"{path} line {line} is a JSON {type(d).__name__}, not an object: one object a line, "
                             f"e.g. {EXAMPLE['jsonl']}")
        _check_keys(path, line, list(d), "key")
        for key, value in d.items():
            if value is not None and not isinstance(value, str):
                raise InputError(f"{path} line {line}: {key} is a {type(value).__name__}; it must be a string")
        entries.append((*_image_and_prompt(path, line, d.get("image") or None, d.get("image_b64") or None,
                                           d.get("prompt") or None), line))
    return entries


def _check_keys(path: Path, line: int, keys: list[str], what: str) -> list[str]:
    if unknown := [k for k in keys if k not in KEYS]:
        raise InputError(f"{path} line {line}: unknown {what} {unknown[0]!r} (the {what}s are image or image_b64, "
                         f"and prompt; e.g. {EXAMPLE[manifest_format(path)]})")
    if "image" not in keys and "image_b64" not in keys:
        raise InputError(f"{path} line {line} has no image {what} (it has {', '.join(map(repr, keys)) or 'none'}): "
                         f"name the image, e.g. {EXAMPLE[manifest_format(path)]}")
    if what == "column" and "prompt" not in keys:
        raise InputError(f"{path} line {line} has no prompt column (it has {', '.join(map(repr, keys))}): the first "
                         f"line names the columns, e.g. {EXAMPLE['csv']}")
    if len(set(keys)) != len(keys):
        raise InputError(f"{path} line {line} names a {what} twice: keep one")
    return keys


def _image_and_prompt(path: Path, line: int, image: str | None, image_b64: str | None,
                      prompt: str | None) -> tuple[str, str | None]:
    if image_b64 is not None:
        try:
            image = os.fsdecode(base64.b64decode(image_b64, validate=True))
        except (binascii.Error, ValueError):
            raise InputError(f"{path} line {line}: image_b64 is not base64; it holds a file name's bytes, e.g. "
                             "base64.b64encode(os.fsencode(name))") from None
    if image is None:
        raise InputError(f"{path} line {line} has no image: give its path (or image_b64), or remove the line")
    try:
        os.fsencode(image)
    except UnicodeEncodeError:
        raise InputError(f"{path} line {line}: the image name holds a character no file name can (a lone "
                         "surrogate that is no escaped byte); give image_b64 instead") from None
    if prompt is not None:
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"{path} line {line}: the prompt is not valid text (a lone surrogate)") from None
    return image, prompt
