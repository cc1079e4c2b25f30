"""Process a folder: the plan (folder, task, prompt, output file) validated in plain functions, and the progress
of a running batch (count, images/s, ETA, pause time left out), all testable without Qt or torch."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vlm_core.runtime.batch_io import Row

from .prompts import LANGUAGES, PromptError, build_prompt, free_text_prompt

# The tasks a folder run offers: the mix checkpoints' task prompts, plus a prompt typed by hand.
BATCH_TASKS = {"caption": "Caption", "describe": "Describe", "ocr": "OCR", "detect": "Detect…",
               "segment": "Segment…", "custom": "Custom prompt…"}
NEEDS_TEXT = {"detect": "Objects to find, separated by ;  (e.g. cat ; red car)", "segment": "The object to outline",
              "custom": "The prompt, e.g. answer en how many people are there?"}
USES_LANGUAGE = {"caption", "describe"}

IDLE, LISTING, RUNNING, PAUSED, CANCELLED, DONE, FAILED = (
    "idle", "listing", "running", "paused", "cancelled", "done", "failed")


class PlanError(ValueError):
    """The form cannot start a run; the message says what to fix."""


@dataclass(frozen=True)
class BatchPlan:
    folder: str
    prompt: str
    out: str
    fmt: str  # jsonl | csv
    resume: bool  # skip the images already in `out`


def make_plan(folder: str, task: str, text: str, lang: str, out: str, resume: bool = True) -> BatchPlan:
    folder, out = folder.strip(), out.strip()
    if not folder:
        raise PlanError("Choose the folder of images to process")
    if not Path(folder).is_dir():
        raise PlanError(f"{folder} is not a folder")
    if task not in BATCH_TASKS:
        raise ValueError(f"Unknown task: {task}")
    if lang not in LANGUAGES:
        raise ValueError(f"Unknown language: {lang}")
    try:
        prompt = free_text_prompt(text) if task == "custom" else build_prompt(task, text, lang)
    except PromptError as e:
        raise PlanError(str(e) or NEEDS_TEXT.get(task, "Type the task's text")) from None
    if not out:
        raise PlanError("Choose the output file")
    out_path = Path(out)
    if out_path.is_dir():
        raise PlanError(f"{out} is a folder: choose a file name such as results.jsonl")
    if not out_path.parent.is_dir():
        raise PlanError(f"The folder for {out} does not exist")
    fmt = "csv" if out_path.suffix.lower() == ".csv" else "jsonl"
    return BatchPlan(folder, prompt, out, fmt, resume)


def default_output(folder: str, task: str, base: str) -> str:
    """The results file a run suggests: in `base` (the user's Documents folder), never inside the photo folder
    (a results file there mixes with the photos and is synced or backed up with them); named after both."""
    return str(Path(base) / f"paligemma-{task}-{Path(folder).name or 'images'}.jsonl") if folder.strip() else ""


def non_images(folder: str, images: list[str]) -> list[str]:
    """The visible files of a folder run that are not images (skipped by list_inputs), sorted."""
    root, taken = Path(folder), set(images)
    return sorted(str(f) for f in root.rglob("*") if f.is_file() and str(f) not in taken
                  and not any(part.startswith(".") for part in f.relative_to(root).parts))


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class BatchProgress:
    """Counts and rate of one run. Time spent paused is not running time: it counts neither in images/s nor in
    the ETA. Images skipped on resume are counted as done but not in the rate."""

    total: int = 0
    skipped: int = 0  # already in the output file when the run started
    done: int = 0  # rows received this run (errors included)
    errors: int = 0
    _running_s: float = 0.0
    _since: float | None = None  # when the current running stretch began
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def start(self, total: int, skipped: int) -> None:
        self.total, self.skipped, self.done, self.errors, self._running_s = total, skipped, 0, 0, 0.0
        self._since = self.clock()

    def pause(self) -> None:
        if self._since is not None:
            self._running_s += self.clock() - self._since
            self._since = None

    def resume(self) -> None:
        if self._since is None:
            self._since = self.clock()

    def add(self, rows: list[Row]) -> None:
        self.done += len(rows)
        self.errors += sum(r.error is not None for r in rows)

    @property
    def finished(self) -> int:
        return self.skipped + self.done

    @property
    def running_s(self) -> float:
        return self._running_s + (self.clock() - self._since if self._since is not None else 0.0)

    @property
    def images_per_s(self) -> float | None:
        t = self.running_s
        return self.done / t if self.done and t > 0 else None

    @property
    def eta_s(self) -> float | None:
        rate = self.images_per_s
        return (self.total - self.finished) / rate if rate else None

    def summary(self, running: bool = True) -> str:
        """running=False (cancelled, done, failed): no time left to estimate, so no ETA."""
        rate = self.images_per_s
        parts = [f"{self.finished} / {self.total} images",
                 f"{rate:.2f} images/s" if rate else "-- images/s"]
        if running:
            parts.append(f"ETA {format_duration(self.eta_s)}")
        if self.skipped:
            parts.append(f"{self.skipped} done before")
        if self.errors:
            parts.append(f"{self.errors} unreadable" if self.errors != 1 else "1 unreadable")
        return " · ".join(parts)
