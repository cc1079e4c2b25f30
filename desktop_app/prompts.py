"""The PaliGemma 2 mix task prompts, built and validated without Qt.

The mix checkpoints were trained on these exact prefixes (big_vision's PaliGemma README):
    caption {lang} | describe {lang} | ocr | answer {lang} {question} | question {lang} {answer} | detect a ; b |
    segment x
Typed text that starts with none of these words is a question, so it goes out as `answer {lang} {question}`;
`/raw` (or the input's Raw toggle) sends text exactly as written.
"""

from __future__ import annotations

from dataclasses import dataclass

LANGUAGES = {
    "en": "English", "es": "Spanish", "fr": "French", "de": "German", "it": "Italian", "pt": "Portuguese",
    "nl": "Dutch", "pl": "Polish", "ru": "Russian", "uk": "Ukrainian", "tr": "Turkish", "ar": "Arabic",
    "hi": "Hindi", "bn": "Bengali", "id": "Indonesian", "vi": "Vietnamese", "th": "Thai", "ja": "Japanese",
    "ko": "Korean", "zh": "Chinese", "sw": "Swahili",
}


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


class PromptError(ValueError):
    """The input cannot make this task's prompt; the message says what to type."""


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


def free_text_prompt(text: str) -> str:
    """A typed prompt goes to the model as it is, on one line."""
    prompt = " ".join(text.split())
    if not prompt:
        raise PromptError("Type a question or pick a task")
    return prompt


# The first words of the prompts PaliGemma (1 and 2) was trained on; `cap` is PaliGemma 1's short caption prefix.
# Matched case-sensitively: the prefixes are lowercase, and "Describe the cat" is a question, not the prefix.
TASK_WORDS = ("caption", "cap", "describe", "ocr", "answer", "question", "detect", "segment")
RAW_COMMAND = "/raw"


def starts_with_task_word(prompt: str) -> bool:
    words = prompt.split(maxsplit=1)
    return bool(words) and words[0] in TASK_WORDS


def typed_prompt(text: str, lang: str = "en", raw: bool = False) -> str:
    """What Enter sends for typed text: a question becomes `answer {lang} {question}` (what the mix checkpoints
    are trained on); text that already starts with a task word, text after a leading `/raw`, or any text with
    `raw` set goes as written (on one line)."""
    prompt = free_text_prompt(text)
    first, _, rest = prompt.partition(" ")
    if first == RAW_COMMAND:
        if not rest:
            raise PromptError("Type the prompt to send after /raw")
        return rest
    if raw or starts_with_task_word(prompt):
        return prompt
    if lang not in LANGUAGES:
        raise ValueError(f"Unknown language: {lang}")
    return f"answer {lang} {prompt}"


def is_location_task(prompt: str) -> bool:
    return prompt.startswith(("detect ", "segment "))
