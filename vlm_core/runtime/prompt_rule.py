"""The prompt rule the window and the API server share: typed text -> the prompt PaliGemma 2 mix was trained on.

A prompt that starts with a task word (caption, describe, ocr, answer, question, detect, segment; `cap` for
PaliGemma 1) is sent as written; any other text is a question and goes out as `answer {lang} {question}`; a leading
`/raw` (or raw=True: Ollama's `raw`, the OpenAI extension field) sends the text verbatim. Pure Python: the
desktop app's widgets import it.
"""

from __future__ import annotations

LANGUAGES = {
    "en": "English", "es": "Spanish", "fr": "French", "de": "German", "it": "Italian", "pt": "Portuguese",
    "nl": "Dutch", "pl": "Polish", "ru": "Russian", "uk": "Ukrainian", "tr": "Turkish", "ar": "Arabic",
    "hi": "Hindi", "bn": "Bengali", "id": "Indonesian", "vi": "Vietnamese", "th": "Thai", "ja": "Japanese",
    "ko": "Korean", "zh": "Chinese", "sw": "Swahili",
}

# The first words of the prompts PaliGemma (1 and 2) was trained on; `cap` is PaliGemma 1's short caption prefix.
# Matched case-sensitively: the prefixes are lowercase, and "Describe the cat" is a question, not the prefix.
TASK_WORDS = ("caption", "cap", "describe", "ocr", "answer", "question", "detect", "segment")
RAW_COMMAND = "/raw"


class PromptError(ValueError):
    """The input cannot make a prompt; the message says what to type."""


def free_text_prompt(text: str) -> str:
    """A typed prompt goes to the model as it is, on one line."""
    prompt = " ".join(text.split())
    if not prompt:
        raise PromptError("Type a question or pick a task")
    return prompt


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
