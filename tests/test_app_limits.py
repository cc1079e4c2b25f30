"""The window with the toy model: a question that does not fit the context fails with the engine's one line (the
answer card shows it, no traceback), and a long prefill is reported to the window as it runs."""

from __future__ import annotations

from desktop_app.conversation import FAILED

from .test_app_window import ANSWER_TIMEOUT, drop_file, make_window, store  # noqa: F401 - fixtures


def test_a_question_past_the_context_fails_with_one_line(qtbot, make_window, toy_model_dir, photos):  # noqa: F811
    window = make_window(toy_model_dir)
    drop_file(qtbot, window, photos[0])
    with qtbot.waitSignal(window.answer_done, timeout=ANSWER_TIMEOUT):
        window.send("answer", "why " * 9000)
    turn = window.session.current.turns[-1]
    assert turn.state == FAILED
    assert "does not fit the model's context" in turn.error and "8,192 positions" in turn.error
    assert "\n" not in turn.error and "Traceback" not in turn.error


def test_a_long_prefill_is_reported_to_the_window(qtbot, make_window, toy_model_dir, photos):  # noqa: F811
    window = make_window(toy_model_dir)
    window.engine.worker.PREFILL_NOTICE_S = 0.0  # the toy's prefill is short: report it anyway
    seen = []
    window.engine.worker.prefill_progress.connect(lambda rid, done, layers: seen.append((done, layers)))
    drop_file(qtbot, window, photos[0])
    with qtbot.waitSignal(window.answer_done, timeout=ANSWER_TIMEOUT):
        window.send("caption", "")
    layers = window.engine.worker.engine.cfg.text.num_hidden_layers
    qtbot.waitUntil(lambda: len(seen) == layers, timeout=5_000)
    assert seen == [(i, layers) for i in range(1, layers + 1)]
    assert window.statusBar().currentMessage() == "Reading the prompt… 100%"
