"""The app's plain-Python parts: prompts, conversations, settings. No display needed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from desktop_app.conversation import DONE, WAITING, Session, Turn
from desktop_app.prompts import PromptError, build_prompt, free_text_prompt, is_location_task
from desktop_app.settings import Settings


@pytest.mark.parametrize("task, text, lang, expected", [
    ("caption", "", "en", "caption en"),
    ("caption", "ignored", "de", "caption de"),
    ("describe", "", "ja", "describe ja"),
    ("ocr", "", "fr", "ocr"),
    ("answer", "what is\nthe cat doing?", "es", "answer es what is the cat doing?"),
    ("detect", "cat; red car ;; dog", "en", "detect cat ; red car ; dog"),
    ("detect", "cat, dog", "en", "detect cat ; dog"),
    ("segment", "  the dog ", "en", "segment the dog"),
])
def test_task_prompts(task, text, lang, expected):
    assert build_prompt(task, text, lang) == expected


@pytest.mark.parametrize("task", ["answer", "detect", "segment"])
def test_tasks_that_need_text_say_what_to_type(task):
    with pytest.raises(PromptError):
        build_prompt(task, "  ", "en")


def test_unknown_task_or_language():
    with pytest.raises(ValueError, match="Unknown task"):
        build_prompt("translate", "x")
    with pytest.raises(ValueError, match="Unknown language"):
        build_prompt("caption", "", "xx")


def test_free_text_is_sent_as_is_on_one_line():
    assert free_text_prompt("  What colour\nis it? ") == "What colour is it?"
    with pytest.raises(PromptError):
        free_text_prompt("\n ")
    assert is_location_task("detect cat") and not is_location_task("caption en")


def test_session_brings_back_the_turns_of_an_earlier_image():
    s = Session()
    a = s.open("k1", "a.png", 10, 10)
    a.turns.append(Turn("caption en", "a cat", DONE))
    s.open("k2", "b.png", 5, 5)
    assert s.current.turns == [] and s.last_answer() == ""
    again = s.open("k1", "a-copy.png", 10, 10)
    assert again is a and s.last_answer() == "a cat"
    turn = a.turns[0]
    assert s.find_turn(turn.id) is turn
    turn.restart("caption de")
    assert turn.prompt == "caption de" and turn.answer == "" and turn.state == WAITING


def test_settings_are_clamped():
    s = Settings(device="tpu", dtype="int4", max_new_tokens=0, temperature=-1, top_k=-5, top_p=3).validated()
    assert s == Settings(device="auto", dtype="auto", max_new_tokens=1, temperature=0.0, top_k=0, top_p=1.0)
    assert Settings().sampling() == {"max_new_tokens": 128, "temperature": 0.0, "top_k": 0, "top_p": 1.0}


def test_widgets_and_image_jobs_never_import_torch():
    code = ("import sys; import desktop_app.views.main_window, desktop_app.jobs.images, desktop_app.__main__; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
