"""The PaliGemma 2 mix task prompts, built and validated without Qt.

The mix checkpoints were trained on these exact prefixes (big_vision's PaliGemma README):
    caption {lang} | describe {lang} | ocr | answer {lang} {question} | question {lang} {answer} | detect a ; b |
    segment x
Typed text that starts with none of these words is a question, so it goes out as `answer {lang} {question}`;
`/raw` (or the input's Raw toggle) sends text exactly as written.
"""

from __future__ import annotations

from dataclasses import dataclass

# The typed-text rule is shared with the API server, so it lives in vlm_core (no torch there).
from vlm_core.runtime.prompt_rule import (LANGUAGES, RAW_COMMAND, TASK_WORDS, PromptError,  # noqa: F401
                                          free_text_prompt, starts_with_task_word, typed_prompt)


@dataclass(frozen=True)
class Task:
    key: str
    label: str
    needs_text: bool  # the user supplies a question or object names
    uses_language: bool
    hint: str = ""  # placeholder for the input while the task waits for its text


TASKS = {
    t.key: t for t in (
        Task("caption", "Caption", False, True),
        Task("describe", "Describe", False, True),
        Task("ocr", "OCR", False, False),
        Task("answer", "Answer…", True, True, "Your question about the image"),
        Task("detect", "Detect…", True, False, "Objects to find, separated by ;  (e.g. cat ; red car)"),
        Task("segment", "Segment…", True, False, "The object to outline (e.g. dog)"),
    )
}


def build_prompt(task: str, text: str = "", lang: str = "en") -> str:
    if task not in TASKS:
        raise ValueError(f"Unknown task: {task}")
    if lang not in LANGUAGES:
        raise ValueError(f"Unknown language: {lang}")
    text = " ".join(text.split())  # the prompt is one line: newlines would end PaliGemma's prefix early
    if task in ("caption", "describe"):
        return f"{task} {lang}"
    if task == "ocr":
        return "ocr"
    if not text:
        raise PromptError(TASKS[task].hint)
    if task == "answer":
        return f"answer {lang} {text}"
    if task == "detect":
        objects = [o.strip() for o in text.replace(",", ";").split(";") if o.strip()]
        if not objects:
            raise PromptError(TASKS[task].hint)
        return "detect " + " ; ".join(objects)
    return f"segment {text}"


def is_location_task(prompt: str) -> bool:
    return prompt.startswith(("detect ", "segment "))
