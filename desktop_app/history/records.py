"""Between the chat's turns (desktop_app.conversation) and the store's rows. Plain Python, no Qt.

A chat turn keeps its answers as versions; the store keeps one row per version, at the turn's position, with the
version the chat shows marked current. Restoring groups the rows back into turns.
"""

from __future__ import annotations

from ..conversation import DONE, FAILED, STOPPED, STREAMING, WAITING, Turn, Version
from .store import INTERRUPTED, Conversation, StoredObject, StoredTurn
from .store import STREAMING as STORED_STREAMING


def stored_objects(version: Version) -> list[StoredObject]:
    """The version's objects; with the mask decoder's output where the app decoded one (`version.masks`: one
    float[64, 64] or None per detection)."""
    import numpy as np  # here, not at the top: the window imports this module before it is shown

    masks = list(getattr(version, "masks", None) or [])
    out = []
    for i, d in enumerate(version.detections):
        logits = masks[i] if i < len(masks) else None
        mask64 = np.asarray(logits, dtype=np.float16).tobytes() if logits is not None else None
        out.append(StoredObject(d.label, tuple(float(v) for v in d.box), tuple(d.seg_codes),
                                tuple(getattr(d, "locs", ()) or ()), mask64))
    return out


def stored_state(version: Version) -> str:
    """A version that has not finished is stored as streaming: read back after a crash, it is "interrupted"."""
    return version.state if version.state in (DONE, STOPPED, FAILED) else STORED_STREAMING


def to_stored(turn: Turn, index: int, model: dict, sampling: dict, created: float) -> StoredTurn:
    """Version `index` of `turn` as a row; `model` and `sampling` are what it was asked with."""
    v = turn.versions[index]
    return StoredTurn(prompt=v.prompt, answer=v.text, state=stored_state(v), stop_reason=v.stop_reason,
                      error=v.error, stats=dict(v.stats or {}), model=dict(model), sampling=dict(sampling),
                      objects=stored_objects(v) if v.state in (DONE, STOPPED) else [], version=index,
                      is_current=index == turn.shown, created=created)


def fingerprint(turn: Turn, index: int) -> tuple:
    """What decides whether a version needs writing again: its state, its text's length, whether it is shown, and
    how many of its masks have been decoded."""
    v = turn.versions[index]
    masks = getattr(v, "masks", None) or []
    return v.state, len(v.text), index == turn.shown, sum(m is not None for m in masks)


def to_version(row: StoredTurn, width: int, height: int) -> Version:
    state = row.state if row.state in (DONE, STOPPED, FAILED) else STOPPED
    stop_reason = INTERRUPTED if row.stop_reason == INTERRUPTED else row.stop_reason
    v = Version(row.prompt, row.answer, state, stop_reason, dict(row.stats) or None, row.error,
                [o.detection(width, height) for o in row.objects])
    if any(o.mask64 is not None for o in row.objects):
        v.masks = [o.mask_logits() for o in row.objects]  # views/objects.py draws these without the decoder
    return v


def to_turns(conv: Conversation) -> tuple[list[Turn], dict[tuple[int, int], StoredTurn], dict[int, int]]:
    """The chat turns of a stored conversation, plus the row behind each (turn id, version index) and each turn's
    position, so later answers to a restored turn are added to the same place."""
    by_position: dict[int, list[StoredTurn]] = {}
    for row in conv.turns:
        by_position.setdefault(row.position, []).append(row)
    turns, rows, positions = [], {}, {}
    w, h = conv.summary.width, conv.summary.height
    for position in sorted(by_position):
        group = sorted(by_position[position], key=lambda r: r.version)
        shown = next((i for i, r in enumerate(group) if r.is_current), len(group) - 1)
        turn = Turn([to_version(r, w, h) for r in group], shown=shown)
        turns.append(turn)
        positions[turn.id] = position
        for i, r in enumerate(group):
            rows[(turn.id, i)] = r
    return turns, rows, positions


def is_live(version: Version) -> bool:
    return version.state in (WAITING, STREAMING)
