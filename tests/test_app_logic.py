"""The app's plain-Python parts: prompts, conversations, settings. No display needed."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from desktop_app.conversation import DONE, STOPPED, STREAMING, WAITING, Session, Turn, Version
from desktop_app.prompts import (PromptError, build_prompt, free_text_prompt, is_location_task, starts_with_task_word,
                                 typed_prompt)
from vlm_core.runtime.answers import Detection
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


@pytest.mark.parametrize("text, lang, raw, expected", [
    ("What is the cat doing?", "en", False, "answer en What is the cat doing?"),  # a question: the mix prefix
    ("  how many\ncups? ", "de", False, "answer de how many cups?"),
    ("Describe the scene", "en", False, "answer en Describe the scene"),  # prefixes are lowercase; this is a question
    ("caption es", "en", False, "caption es"),  # already a task prompt: as written
    ("describe en", "fr", False, "describe en"),
    ("ocr", "en", False, "ocr"),
    ("answer en what colour is it", "de", False, "answer en what colour is it"),
    ("question en a red car", "en", False, "question en a red car"),
    ("detect cat ; dog", "en", False, "detect cat ; dog"),
    ("segment the dog", "en", False, "segment the dog"),
    ("cap en", "en", False, "cap en"),
    ("captions of cats", "en", False, "answer en captions of cats"),  # a task word must be the whole first word
    ("/raw what is this", "en", False, "what is this"),  # a leading /raw: exactly as written
    ("/raw   caption\nen", "en", False, "caption en"),
    ("what is this", "en", True, "what is this"),  # the Raw toggle
    ("/rawness matters", "en", False, "answer en /rawness matters"),
])
def test_typed_text_becomes_the_prompt_the_mix_models_expect(text, lang, raw, expected):
    assert typed_prompt(text, lang, raw) == expected


def test_typed_text_that_cannot_be_sent_says_what_to_type():
    for text in ("", "  \n", "/raw", "/raw   "):
        with pytest.raises(PromptError):
            typed_prompt(text)
    with pytest.raises(ValueError, match="Unknown language"):
        typed_prompt("hello", "xx")
    assert starts_with_task_word("detect x") and not starts_with_task_word("detection of x")
    assert not starts_with_task_word("")


def test_session_brings_back_the_turns_of_an_earlier_image():
    s = Session()
    a = s.open("k1", "a.png", 10, 10)
    a.turns.append(Turn([Version("caption en", "a cat", DONE)]))
    s.open("k2", "b.png", 5, 5)
    assert s.current.turns == [] and s.last_answer() == ""
    again = s.open("k1", "a-copy.png", 10, 10)
    assert again is a and s.last_answer() == "a cat"
    turn = a.turns[0]
    assert s.find_turn(turn.id) is turn and a.number_of(turn) == 1


def finished(prompt: str, text: str, **stats) -> Turn:
    turn = Turn.ask(prompt)
    turn.latest.start()
    turn.latest.append(text)
    turn.latest.finish(DONE, {"generated_tokens": 3, "stop_reason": "eos", **stats})
    return turn


def test_regenerate_adds_a_version_and_keeps_the_earlier_answer():
    turn = finished("caption en", "a cat")
    assert turn.state == DONE and turn.latest.stop_reason == "eos" and not turn.latest.hit_token_limit()
    version = turn.regenerate()
    assert [v.text for v in turn.versions] == ["a cat", ""] and turn.latest is version and turn.shown == 1
    assert version.prompt == "caption en" and version.state == WAITING
    version.start()
    assert turn.state == STREAMING and not turn.show(0)  # no browsing while the new answer is written
    version.append("a dog")
    version.finish(STOPPED, {"generated_tokens": 128, "stop_reason": "cancelled"})
    assert turn.show(0) and turn.current.text == "a cat" and turn.answer == "a dog"  # answer: the latest
    assert not turn.show(2) and not turn.show(-1) and turn.shown == 0
    again = turn.regenerate()  # regenerate asks the prompt of the version shown
    assert again.prompt == "caption en" and len(turn.versions) == 3


def test_edit_starts_a_new_turn_that_carries_the_original_and_leaves_it_alone():
    original = finished("caption en", "a cat")
    original.latest.detections = [Detection("cat", (1.0, 2.0, 3.0, 4.0))]
    edited = original.edited("caption fr")
    assert edited.id != original.id and edited.edited_from == original.id
    assert [v.prompt for v in edited.versions] == ["caption en", "caption fr"] and edited.shown == 1
    assert edited.versions[0] == original.versions[0] and edited.versions[0] is not original.versions[0]
    assert edited.latest.state == WAITING and edited.answer == ""
    assert [v.prompt for v in original.versions] == ["caption en"] and original.answer == "a cat"
    edited.versions[0].detections.append(Detection("dog", (0.0, 0.0, 1.0, 1.0)))
    assert len(original.latest.detections) == 1  # the copy owns its list


def test_a_turn_is_plain_data_that_serialises():
    turn = finished("detect cat", "<loc0001><loc0002><loc0003><loc0004> cat", ttft_s=0.5)
    turn.latest.detections = [Detection("cat", (1.0, 2.0, 3.0, 4.0))]
    turn.regenerate()
    data = json.loads(json.dumps(dataclasses.asdict(turn)))
    assert data["versions"][0]["prompt"] == "detect cat" and data["versions"][0]["stop_reason"] == "eos"
    assert data["versions"][0]["detections"][0]["label"] == "cat" and data["versions"][0]["stats"]["ttft_s"] == 0.5
    assert data["shown"] == 1 and data["versions"][1]["state"] == WAITING


def test_a_answer_cut_by_the_token_limit_is_marked():
    turn = Turn.ask("caption en")
    turn.latest.finish(DONE, {"generated_tokens": 128, "stop_reason": "max_new_tokens"})
    assert turn.latest.hit_token_limit()


def test_settings_are_clamped():
    s = Settings(device="tpu", dtype="int4", max_new_tokens=0, temperature=-1, top_k=-5, top_p=3).validated()
    assert s == Settings(device="auto", dtype="auto", max_new_tokens=1, temperature=0.0, top_k=0, top_p=1.0)
    assert Settings().sampling() == {"max_new_tokens": 128, "temperature": 0.0, "top_k": 0, "top_p": 1.0}


def test_widgets_and_image_jobs_never_import_torch():
    code = ("import sys; import desktop_app.views.main_window, desktop_app.jobs.images, desktop_app.__main__; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_window_is_shown_before_torch_numpy_or_pillow_is_imported(tmp_path):
    """The engine thread imports torch, the image and history threads numpy and Pillow, all after the window is up:
    start-up never waits for them (scripts/bench_history.py times it)."""
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-m", "desktop_app", "--exit-when-shown"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "torch, numpy, PIL loaded: none" in out.stdout, out.stdout
