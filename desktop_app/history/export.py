"""Exports of stored conversations: Markdown (with the image and annotated PNGs beside it), JSON (every field), the
annotated PNG alone, everything as JSON Lines plus images, and Markdown text for the clipboard.

Plain Python with Pillow and numpy (no Qt, no torch): masks are drawn from the decoder output the store kept, so
exporting never needs the model. What is drawn is the shown version of each turn, as the window shows it; JSON
carries every version.

JSON (format "paligemma-desktop.conversation", format_version 2; each line of `conversations.jsonl` is one):
    {format, format_version, id, name, created, updated (ISO 8601, UTC),
     image: {file (beside the JSON), sha256, width, height, key},
     turns: [{prompt, answer, state ("done" | "stopped" | "failed"), stop_reason, error, stats, model, sampling,
              position (the turn), version (of that turn; regenerate/edit add versions), is_current (shown),
              created, updated,
              objects: [{label, box: [x0, y0, x1, y1] integer pixels of the image (as `vlm_core objects`
                         prints them), mask: COCO RLE {"size": [height, width], "counts": str} at the image's
                         resolution, or null for a box without a decoded mask, seg_codes: the 16 <seg> indices,
                         locs: the 4 <loc> bins y_min, x_min, y_max, x_max}]}]}
A whitespace-only answer is written as it is in JSON and as "(empty answer)" in Markdown.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from vlm_core.runtime import coco_rle
from vlm_core.runtime.annotate import annotate
from vlm_core.runtime.masks import place_mask

from .store import Conversation, HistoryStore, StoredObject, StoredTurn

FORMAT = "paligemma-desktop.conversation"
FORMAT_VERSION = 2  # 2: masks as COCO RLE at the image's resolution, boxes in integer pixels


class ExportError(Exception):
    """The export could not be written; the message says why and what to do."""


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds")


def safe_stem(text: str) -> str:
    """A file-name stem from a free string: letters, digits, - and _, never a path separator."""
    stem = re.sub(r"[^\w\-]+", "_", Path(text).stem, flags=re.UNICODE).strip("_")
    return stem[:60] or "conversation"


# -- drawing ----------------------------------------------------------------------------------------------------
def object_masks(objects: list[StoredObject], width: int, height: int) -> list[np.ndarray | None]:
    """Full-image bool masks from the stored decoder output; None for a box-only object."""
    out = []
    for obj in objects:
        logits = obj.mask_logits()
        out.append(None if logits is None or len(obj.locs) != 4 else place_mask(logits, obj.detection(width, height)))
    return out


def annotated_image(conv: Conversation, turn: StoredTurn) -> Image.Image:
    with Image.open(_image_path(conv)) as im:
        image = im.convert("RGB")
    w, h = image.size
    dets = [o.detection(w, h) for o in turn.objects]
    return annotate(image, dets, object_masks(turn.objects, w, h))


def last_turn_with_objects(conv: Conversation) -> StoredTurn | None:
    return next((t for t in reversed(conv.current_turns()) if t.objects), None)


# -- Markdown ---------------------------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def md_escape(text: str) -> str:
    """Text that renders as itself: PaliGemma's `<loc0123>` tokens would otherwise vanish as HTML tags."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def _link(name: str) -> str:
    return quote(name)


def describe_turn(turn: StoredTurn) -> str:
    """One muted line: model, device, dtype, tokens, speed, how it stopped, sampling."""
    m, s, p = turn.model, turn.stats, turn.sampling
    parts = [m.get("repo_id") or m.get("name") or Path(m.get("folder", "")).name, m.get("device", ""),
             m.get("dtype", "")]
    if s.get("generated_tokens") is not None:
        parts.append(f"{s['generated_tokens']} tokens")
        if s.get("ttft_s") is not None:
            parts.append(f"first token {s['ttft_s']:.2f} s")
        if s.get("decode_tokens_per_s"):
            parts.append(f"{s['decode_tokens_per_s']:.1f} tokens/s")
    if turn.stop_reason:
        parts.append(f"stop: {turn.stop_reason}")
    if p:
        parts.append("greedy" if not p.get("temperature") else
                     f"temperature {p['temperature']}, top-k {p.get('top_k', 0)}, top-p {p.get('top_p', 1.0)}")
    if turn.created:
        parts.append(datetime.fromtimestamp(turn.created).strftime("%Y-%m-%d %H:%M"))
    return " · ".join(str(x) for x in parts if x)


def markdown(conv: Conversation, image_link: str | None, annotated_links: dict[int, str] | None = None) -> str:
    """The conversation as Markdown; `annotated_links` maps a turn id to its annotated PNG's link. Without an
    `image_link` the text says that no image is included."""
    annotated_links = annotated_links or {}
    s = conv.summary
    picture = (f"![{md_escape(s.name)}]({image_link})" if image_link else
               f"*The image ({md_escape(s.name)}) is not included: File › Export › Markdown writes it beside the "
               "text.*")
    lines = [f"# {md_escape(s.name)}", "", picture, "",
             f"*{s.width} × {s.height} px · {len(conv.current_turns())} turns · "
             f"{datetime.fromtimestamp(s.created).strftime('%Y-%m-%d %H:%M')} · PaliGemma Desktop*", ""]
    versions_at: dict[int, int] = {}
    for t in conv.turns:
        versions_at[t.position] = versions_at.get(t.position, 0) + 1
    for i, turn in enumerate(conv.current_turns(), 1):
        lines += [f"## {i}. {md_escape(turn.prompt)}", ""]
        if turn.objects:
            lines += [f"Found {len(turn.objects)} object{'s' if len(turn.objects) != 1 else ''}.", "",
                      "| # | Label | x0 | y0 | x1 | y1 | Mask |", "|---|---|---|---|---|---|---|"]
            for n, o in enumerate(turn.objects, 1):
                x0, y0, x1, y1 = (round(v) for v in o.box)
                mask = "yes" if o.mask64 is not None else ("codes" if o.seg_codes else "")
                lines.append(f"| {n} | {md_escape(o.label) or '(no label)'} | {x0} | {y0} | {x1} | {y1} | {mask} |")
            lines.append("")
            if turn.id in annotated_links:
                lines += [f"![Objects found in turn {i}]({annotated_links[turn.id]})", ""]
            lines += ["```text", turn.answer, "```", ""]
        else:
            lines += [md_escape(turn.answer) if turn.answer.strip() else
                      "*(empty answer)*" if turn.answer else "*(no answer)*", ""]
        if turn.error:
            lines += [f"> ⚠ {md_escape(turn.error)}", ""]
        meta = describe_turn(turn)
        if versions_at.get(turn.position, 1) > 1:
            meta += f" · version {turn.version + 1} of {versions_at[turn.position]}"
        lines += [f"*{md_escape(meta)}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def export_markdown(conv: Conversation, dest: str | Path) -> list[Path]:
    """dest.md, dest-image.<ext> (the original file) and dest-annotated-N.png per turn with objects."""
    dest = Path(dest).with_suffix(".md")
    folder, stem = dest.parent, safe_stem(dest.stem)
    source = _image_path(conv)
    image = folder / f"{stem}-image{source.suffix}"
    written = [_copy(source, image)]
    links = {}
    for i, turn in enumerate(conv.current_turns(), 1):
        if turn.objects:
            png = folder / f"{stem}-annotated-{i}.png"
            _save(annotated_image(conv, turn), png)
            links[turn.id] = _link(png.name)
            written.append(png)
    _write_text(dest, markdown(conv, _link(image.name), links))
    return [dest] + written


def clipboard_markdown(conv: Conversation) -> str:
    """Markdown for the clipboard: text only. A link into history's private folder would break once pasted
    anywhere else, and most places that take pasted Markdown drop embedded (data:) images, so it says so."""
    return markdown(conv, None)


# -- JSON -------------------------------------------------------------------------------------------------------
def conversation_dict(conv: Conversation, image_file: str) -> dict:
    s = conv.summary
    turns = []
    for t in conv.turns:
        d = t.to_dict()
        d["created"], d["updated"] = iso(t.created), iso(t.updated)
        d["objects"] = [object_dict(o, s.width, s.height) for o in t.objects]
        turns.append(d)
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "id": s.id, "name": s.name,
            "created": iso(s.created), "updated": iso(s.updated),
            "image": {"file": image_file, "sha256": s.image_sha256, "width": s.width, "height": s.height,
                      "key": s.image_key},
            "turns": turns}


def object_dict(o: StoredObject, width: int, height: int) -> dict:
    """An object as the CLI gives it (vlm_core.runtime.answers.objects_json: the integer pixel box), its mask as COCO
    RLE over the whole image (placed as vlm_core.runtime.masks.place_mask places it), and its raw tokens."""
    if len(o.locs) == 4:
        box = list(o.detection(width, height).pixel_box)
    else:  # no <loc> bins kept: the stored box, as integers the same way
        box = [int(v) for v in o.box]
    [mask] = object_masks([o], width, height)
    return {"label": o.label or None, "box": box, "mask": coco_rle.encode(mask) if mask is not None else None,
            "seg_codes": list(o.seg_codes), "locs": list(o.locs)}


def export_json(conv: Conversation, dest: str | Path) -> list[Path]:
    """dest.json with every field of every version, and the image beside it."""
    dest = Path(dest).with_suffix(".json")
    source = _image_path(conv)
    image = dest.parent / f"{safe_stem(dest.stem)}-image{source.suffix}"
    _copy(source, image)
    _write_text(dest, json.dumps(conversation_dict(conv, image.name), indent=2, ensure_ascii=False) + "\n")
    return [dest, image]


def export_annotated_png(conv: Conversation, dest: str | Path) -> Path:
    """The objects of the newest turn that has any, drawn over the image (what the canvas shows)."""
    turn = last_turn_with_objects(conv)
    if turn is None:
        raise ExportError("This conversation has no detected objects to draw. Ask Detect or Segment first, or "
                          "export it as Markdown or JSON.")
    dest = Path(dest).with_suffix(".png")
    _save(annotated_image(conv, turn), dest)
    return dest


def export_all(store: HistoryStore, folder: str | Path) -> int:
    """folder/conversations.jsonl (one conversation a line, every field) and folder/images/<sha256>.<ext>."""
    folder = Path(folder)
    images = folder / "images"
    count = 0
    try:
        images.mkdir(parents=True, exist_ok=True)
        with open(folder / "conversations.jsonl", "w", encoding="utf-8") as f:
            for conv in store.all_conversations():
                source = _image_path(conv)
                target = images / source.name
                if not target.exists():
                    shutil.copyfile(source, target)
                f.write(json.dumps(conversation_dict(conv, f"images/{source.name}"), ensure_ascii=False) + "\n")
                count += 1
    except OSError as e:
        raise ExportError(f"Could not write to {folder} ({e.strerror or e}). Choose another folder.") from e
    return count


# -- files ------------------------------------------------------------------------------------------------------
def _image_path(conv: Conversation) -> Path:
    if conv.image_path is None or not conv.image_path.is_file():
        raise ExportError("History's copy of this image is missing (history is off, or its folder was changed), "
                          "so it cannot be exported.")
    return conv.image_path


def _copy(source: Path, target: Path) -> Path:
    try:
        if source.resolve() != target.resolve():
            shutil.copyfile(source, target)
    except OSError as e:
        raise ExportError(f"Could not write {target} ({e.strerror or e}). Choose another folder.") from e
    return target


def _save(image: Image.Image, target: Path) -> None:
    try:
        image.save(target, "PNG")
    except OSError as e:
        raise ExportError(f"Could not write {target} ({e.strerror or e}). Choose another folder.") from e


def _write_text(target: Path, text: str) -> None:
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as e:
        raise ExportError(f"Could not write {target} ({e.strerror or e}). Choose another folder.") from e
