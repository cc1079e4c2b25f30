"""Settings › Local API server, as a person turns it on: the real window on the toy model, the real server on
127.0.0.1, called with the official `openai` client. The answer equals the chat's greedy answer; the chat and the
API share one engine (no second copy of the weights); turning it off frees the port."""

from __future__ import annotations

import base64
import socket
import threading

import openai
import pytest
from PySide6.QtCore import QPoint, Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QDialogButtonBox

from desktop_app.jobs.api_server import ApiServer
from desktop_app.settings import Settings
from desktop_app.views.settings_dialog import SettingsDialog
from vlm_core.runtime.gate import EngineGate

from .test_app_window import ask, drop_file, make_window, store  # noqa: F401 - fixtures


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_settings(qtbot, window, change) -> None:
    """Open File › Settings, let `change(dialog)` click and type, then press OK."""
    done = []

    def act():
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, SettingsDialog):
            QTimer.singleShot(20, act)
            return
        change(dialog)
        ok = dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok)
        QTest.mouseClick(ok, Qt.MouseButton.LeftButton)
        done.append(True)

    QTimer.singleShot(0, act)
    window.settings_action.trigger()  # File › Settings… (its Ctrl+, is tested in test_app_settings.py)
    assert done


def tick(box) -> None:
    """Click a check box on its label, as a person does (its middle can be past the label's end)."""
    QTest.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(8, box.height() // 2))


def set_port(dialog, port: int) -> None:
    box = dialog.api.port
    box.setFocus()
    box.selectAll()
    QTest.keyClicks(box, str(port))


def client(port: int, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=120)


def ask_api(c: openai.OpenAI, image: bytes, text: str) -> str:
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    model = c.models.list().data[0].id  # the model the window loaded
    reply = c.chat.completions.create(model=model, messages=[{"role": "user", "content": [
        {"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]}])
    return reply.choices[0].message.content


def test_the_switch_serves_the_chats_model_counts_requests_and_stops(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    assert not window.settings.api_server and window.api.server is None  # off by default
    drop_file(qtbot, window, photos[0])
    turn = ask(qtbot, window, "caption")
    history_rows = window.history_panel.model.rowCount()
    port = free_port()

    def turn_on(dialog):
        assert dialog.api.url.text().endswith(":8224/v1")  # the CLI's default port until changed
        tick(dialog.api.enabled)
        set_port(dialog, port)
        assert dialog.api.url.text() == f"http://127.0.0.1:{port}/v1"

    in_settings(qtbot, window, turn_on)
    qtbot.waitUntil(lambda: window.api.status.isVisible(), timeout=10_000)
    assert window.settings.api_server and window.settings.api_port == port
    assert f"http://127.0.0.1:{port}" in window.api.status.toolTip()
    assert window.api.server.engine is window.engine.worker.engine  # one copy of the weights
    assert window.api.status.text() == "API on · 0 requests"

    api = client(port)
    assert ask_api(api, photos[0].read_bytes(), turn.prompt) == turn.answer  # the chat's greedy answer
    assert ask_api(api, photos[0].read_bytes(), "caption en") == turn.answer
    qtbot.waitUntil(lambda: window.api.status.text() == "API on · 2 requests", timeout=5_000)
    # The chat still answers while the server is on (both on the one engine, the window first).
    again = ask(qtbot, window, "caption")
    assert again.answer == turn.answer
    QApplication.processEvents()
    assert window.history_panel.model.rowCount() == history_rows  # API requests are not written to History

    in_settings(qtbot, window, lambda d: tick(d.api.enabled))
    assert not window.api.status.isVisible() and window.api.server is None
    window.api._leaving.wait(10)
    with pytest.raises(openai.APIConnectionError):
        ask_api(api, photos[0].read_bytes(), "caption en")


def test_api_requests_are_kept_in_history_only_when_asked(qtbot, make_window, toy_model_dir, photos):
    window = make_window(toy_model_dir)
    panel = window.history_panel
    rows = panel.model.rowCount()
    port = free_port()

    def turn_on(dialog):
        assert not dialog.api.history.isChecked()  # off by default
        tick(dialog.api.enabled)
        set_port(dialog, port)
        tick(dialog.api.history)

    in_settings(qtbot, window, turn_on)
    qtbot.waitUntil(lambda: window.api.status.isVisible(), timeout=10_000)
    answer = ask_api(client(port), photos[1].read_bytes(), "caption en")
    qtbot.waitUntil(lambda: panel.model.rowCount() == rows + 1, timeout=10_000)
    assert window.settings.api_history and answer is not None  # one new conversation: the API's image
    newest = panel.model.index(0, 0)
    assert panel.model.data(newest, Qt.ItemDataRole.ToolTipRole).startswith("API request — 512 × 512 px\ncaption en")
    assert panel.model.data(newest, Qt.ItemDataRole.DisplayRole).startswith("API request")


def test_a_port_in_use_is_one_clear_sentence(qtbot, make_window, toy_model_dir):
    window = make_window(toy_model_dir)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]

        def turn_on(dialog):
            tick(dialog.api.enabled)
            set_port(dialog, port)

        in_settings(qtbot, window, turn_on)
        assert window.api.server is None and not window.api.status.isVisible()
        assert window.api.error.startswith(f"The Local API server did not start: cannot listen on 127.0.0.1:{port}")
        assert "choose another port in Settings › Local API server" in window.api.error
        assert "Traceback" not in window.api.error


def test_network_mode_always_has_a_key_and_the_key_is_required(qtbot, make_window, toy_model_dir, photos):
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    assert dialog.api.key.text() == "" and dialog.api.key.isReadOnly() and not dialog.api.key.isVisibleTo(dialog)
    tick(dialog.api.network)
    key = dialog.api.key.text()
    assert dialog.api.key.isVisibleTo(dialog) and dialog.api.copy_key.isVisibleTo(dialog)
    assert key.startswith("pg-") and len(key) > 20  # made when other devices are allowed, shown to copy
    assert dialog.result_settings().api_network and dialog.result_settings().api_key == key
    # Without a key, network mode cannot be on: not from a settings file, not in the server.
    assert not Settings(api_network=True, api_key="").validated().api_network
    with pytest.raises(ValueError):
        ApiServer(None, "", EngineGate(), 1, network=True, api_key="")

    window = make_window(toy_model_dir)
    port = free_port()

    def turn_on(dialog):
        tick(dialog.api.enabled)
        set_port(dialog, port)
        tick(dialog.api.network)

    in_settings(qtbot, window, turn_on)
    qtbot.waitUntil(lambda: window.api.status.isVisible(), timeout=10_000)
    assert window.api.server.host == "0.0.0.0" and window.settings.api_key
    with pytest.raises(openai.AuthenticationError):
        ask_api(client(port, "wrong"), photos[0].read_bytes(), "caption en")
    assert ask_api(client(port, window.settings.api_key), photos[0].read_bytes(), "caption en") is not None


def test_the_gate_lets_a_waiting_window_go_before_the_next_step():
    gate, order = EngineGate(), []
    in_step, window_waiting = threading.Event(), threading.Event()
    release = threading.Event()

    def api_steps():
        with gate.step():
            in_step.set()
            release.wait(10)
            order.append("api step 1")
        with gate.step():  # the window was waiting: it goes first
            order.append("api step 2")

    def window_work():
        in_step.wait(10)
        window_waiting.set()
        with gate.window():
            order.append("window")

    threads = [threading.Thread(target=api_steps), threading.Thread(target=window_work)]
    for t in threads:
        t.start()
    window_waiting.wait(10)
    while not gate._window_waiting:  # the window is queued on the gate (no sleep: a state check)
        pass
    release.set()
    for t in threads:
        t.join(10)
    assert order == ["api step 1", "window", "api step 2"]


def test_left_on_it_starts_with_the_model_and_a_reload_moves_it_to_the_new_engine(qtbot, make_window, store,
                                                                                  toy_model_dir, photos):
    port = free_port()
    store.setValue("api_server", True)
    store.setValue("api_port", port)
    window = make_window(toy_model_dir)
    qtbot.waitUntil(lambda: window.api.server is not None, timeout=10_000)
    first = window.api.server
    assert ask_api(client(port), photos[0].read_bytes(), "caption en") is not None
    with qtbot.waitSignal(window.engine.worker.model_ready, timeout=60_000):
        window.models.load(str(toy_model_dir))  # a reload stops the server before the old engine is freed
    assert not first.running or first._service.scheduler._closing
    qtbot.waitUntil(lambda: window.api.server is not None and window.api.server is not first, timeout=15_000)
    assert window.api.server.engine is window.engine.worker.engine
    assert ask_api(client(port), photos[0].read_bytes(), "caption en") is not None


def test_an_installed_model_the_window_has_not_loaded_is_a_404_that_says_to_load_it_there(
        qtbot, make_window, store, toy_model_dir, photos):
    """The app's API never swaps the window's model out from under the person at it."""
    import shutil

    from vlm_core.weights import hub

    other = hub.hf_cache_dir() / "models--google--paligemma2-10b-pt-896"
    shutil.copytree(toy_model_dir, other / "snapshots" / "abc")
    (other / "refs").mkdir()
    (other / "refs" / "main").write_text("abc")
    try:
        port = free_port()
        store.setValue("api_server", True)
        store.setValue("api_port", port)
        window = make_window(toy_model_dir)
        qtbot.waitUntil(lambda: window.api.server is not None, timeout=10_000)
        c = client(port)
        assert "google/paligemma2-10b-pt-896" in [m.id for m in c.models.list().data]
        url = "data:image/png;base64," + base64.b64encode(photos[0].read_bytes()).decode()
        with pytest.raises(openai.NotFoundError) as e:
            c.chat.completions.create(model="paligemma2-10b-pt-896", messages=[{"role": "user", "content": [
                {"type": "text", "text": "caption en"}, {"type": "image_url", "image_url": {"url": url}}]}])
        assert "load it in the window" in str(e.value) and "does not switch models" in str(e.value)
        assert window.engine.worker.engine is window.api.server.engine  # still the window's model
    finally:
        shutil.rmtree(other)
