"""What the store reads and writes: a turn (one answer version) with its objects, a conversation and its summary.
Plain dataclasses; the JSON form of an object is what the `objects` column holds."""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vlm_core.runtime.answers import Detection

from .schema import STREAMING

if TYPE_CHECKING:
    import numpy as np

@dataclass
class StoredObject:
    """One detected or segmented object, enough to draw it again without the model."""

    label: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the image's pixels
    seg_codes: tuple[int, ...] = ()  # the 16 codebook indices of a segmentation, else ()
    locs: tuple[int, ...] = ()  # the raw <loc> bins: y_min, x_min, y_max, x_max
    mask64: bytes | None = None  # the mask decoder's float[64, 64] output as float16 bytes, once decoded

    def detection(self, width: int, height: int) -> Detection:
        """As the parser would give it for a width x height image."""
        locs = tuple(self.locs) if len(self.locs) == 4 else (0, 0, 0, 0)
        return Detection(self.label, tuple(self.box), tuple(self.seg_codes), locs, (width, height))

    def mask_logits(self) -> np.ndarray | None:
        """float[64, 64], the decoder's output, or None if no mask was decoded."""
        import numpy as np  # here, not at the top: the window imports this module before it is shown

        if self.mask64 is None:
            return None
        return np.frombuffer(self.mask64, dtype=np.float16).reshape(64, 64).astype(np.float32)

    def to_json(self) -> dict:
        d = {"label": self.label, "box": list(self.box), "seg_codes": list(self.seg_codes), "locs": list(self.locs)}
        if self.mask64 is not None:
            d["mask64_f16"] = base64.b64encode(self.mask64).decode("ascii")
        return d

    @staticmethod
    def from_json(d: dict) -> "StoredObject":
        mask = d.get("mask64_f16")
        return StoredObject(str(d.get("label", "")), tuple(float(v) for v in d["box"]),
                            tuple(int(v) for v in d.get("seg_codes", ())), tuple(int(v) for v in d.get("locs", ())),
                            base64.b64decode(mask) if mask else None)


@dataclass
class StoredTurn:
    prompt: str
    answer: str = ""
    state: str = STREAMING
    stop_reason: str = ""
    error: str = ""
    stats: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    sampling: dict = field(default_factory=dict)
    objects: list[StoredObject] = field(default_factory=list)
    position: int = 0
    version: int = 0
    is_current: bool = True
    created: float = 0.0
    updated: float = 0.0
    id: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["objects"] = [o.to_json() for o in self.objects]
        return d


@dataclass
class ConversationSummary:
    id: int
    image_key: str
    image_sha256: str
    name: str
    width: int
    height: int
    created: float
    updated: float
    first_prompt: str
    turn_count: int
    thumb: bytes | None = None
    matches: list[str] = field(default_factory=list)  # for a search: the matching prompts/answers, shortened
    first_answer: str = ""  # the start of the first turn's answer (400 characters at most)


@dataclass
class Conversation:
    summary: ConversationSummary
    image_path: Path
    turns: list[StoredTurn]  # every version, in (position, version) order

    def current_turns(self) -> list[StoredTurn]:
        return [t for t in self.turns if t.is_current]


@dataclass
class Page:
    """Part of a listing: `rows` from position `offset` of `total` conversations (all, or a search's matches)."""

    query: str
    total: int
    offset: int
    rows: list[ConversationSummary]
