"""Nothing lost: a history on a real, small filesystem that fills up, and a second window beside a writer that is a
real second process (killed with SIGKILL, or leaving its lock to a forked child).

The full-disk test mounts a 2 MB tmpfs, which needs root (as on the build machine and in CI's container); elsewhere
it is skipped and says why."""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from desktop_app.history import store as st
from desktop_app.history.store import HistoryStore
from tests.test_history_app import ask, drop_file, make_window, panel_rows, settings_path  # noqa: F401 - fixtures

ROOT = Path(__file__).parent.parent


@pytest.fixture
def history_dir(tmp_path):
    return tmp_path / "history"


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MB tmpfs: writes past it fail with ENOSPC, as on a full disk."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write zeros until the filesystem says it is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)


def read_back(folder: Path) -> dict[str, list[tuple[str, str, str]]]:
    """name -> [(prompt, answer, state)] of the current turns, as another process would read the file."""
    conn = sqlite3.connect(f"{(folder / st.DB_NAME).as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT c.name, t.prompt, t.answer, t.state FROM turns t JOIN conversations c "
                            "ON c.id=t.conversation_id WHERE t.is_current ORDER BY c.id, t.position").fetchall()
    finally:
        conn.close()
    out: dict[str, list] = {}
    for name, *turn in rows:
        out.setdefault(name, []).append(tuple(turn))
    return out


def shown(window, key) -> list[tuple[str, str, str]]:
    return [(t.current.prompt, t.current.text, t.current.state) for t in window.session.entries[key].turns]


def window_with_history_on(disk: Path, make_window, model, settings_path):
    """A window for `model` whose history folder is `disk`/history: (the window, that folder)."""
    history = disk / "history"
    s = QSettings(str(settings_path), QSettings.Format.IniFormat)
    s.setValue("history/folder", str(history))
    s.sync()
    return make_window(model), history


def test_a_full_disk_keeps_answers_waiting_and_saves_them_in_order_once_there_is_room(
        qtbot, small_disk, make_window, toy_model_dir, photos, settings_path):  # noqa: F811
    w, history = window_with_history_on(small_disk, make_window, toy_model_dir, settings_path)
    drop_file(qtbot, w, photos[0])
    ask(qtbot, w, "caption")
    panel_rows(qtbot, w, 1)
    chelsea = w.image.key
    # The finished answer lands on the history thread after answer_done: fill the disk only once it has, or the
    # first answer waits too (CI saw "4 answers are waiting" on a loaded machine).
    qtbot.waitUntil(lambda: [s for _, _, s in read_back(history).get("chelsea.png", [])] == [st.DONE], timeout=15_000)
    filler = small_disk / "filler"
    fill(filler)

    drop_file(qtbot, w, photos[2])  # coffee.png, 466 KB: its copy cannot fit
    ask(qtbot, w, "caption")
    ask(qtbot, w, "ocr")
    coffee = w.image.key
    drop_file(qtbot, w, photos[0])
    w.settings.max_new_tokens = 300
    ask(qtbot, w, "describe")  # waits behind coffee's answers: turns are stored in the order asked
    qtbot.waitUntil(lambda: "3 answers are waiting to be saved" in w.notice.text(), timeout=30_000)  # a 300-token answer on a loaded 2-core CI machine
    assert "full" in w.notice.text()
    assert not list(history.rglob("*.part"))  # the failed image copy left nothing behind to eat the space freed

    filler.unlink()
    qtbot.waitUntil(lambda: "Every answer is saved" in w.notice.text(), timeout=15_000)  # the retry timer
    stored = read_back(history)
    assert stored["chelsea.png"] == shown(w, chelsea) and stored["coffee.png"] == shown(w, coffee)
    assert [p for p, _, _ in stored["chelsea.png"]] == ["caption en", "describe en"]
    assert [p for p, _, _ in stored["coffee.png"]] == ["caption en", "ocr"]
    assert all(state == st.DONE for turns in stored.values() for _, _, state in turns)  # full text, never cut
    panel_rows(qtbot, w, 2)


def test_a_partial_image_copy_is_removed_at_start_up_and_when_a_copy_fails(small_disk, photos):
    history = small_disk / "history"
    s = HistoryStore.open(history)
    leftover = history / st.IMAGES_DIR / "ab" / "abcdef.png.part"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"x" * 1000)
    s.close()
    s = HistoryStore.open(history)
    assert not leftover.exists()
    fill(small_disk / "filler")
    with pytest.raises(OSError) as e:
        s.add_image(photos[2].read_bytes(), ".png")
    assert st.is_disk_full(e.value)
    assert not list(history.rglob("*.part"))
    s.close()


WRITER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from desktop_app.history.store import HistoryStore, StoredTurn
    s = HistoryStore.open(sys.argv[1])
    print("ready", flush=True)
    for line in sys.stdin:
        photo, key, prompt, answer = json.loads(line)
        sha = s.add_image(Path(photo).read_bytes(), Path(photo).suffix)
        cid = s.ensure_conversation(key, sha, Path(photo).name)
        t = StoredTurn(prompt, answer, "done")
        t.position = s.next_position(cid)
        s.save_turn(cid, t)
        print("saved", flush=True)
""")


def test_a_read_only_window_follows_the_writer_and_saves_all_it_showed_in_order_when_the_writer_dies(
        qtbot, make_window, toy_model_dir, photos, history_dir):  # noqa: F811
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(history_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def write(photo, key, prompt, answer):
        writer.stdin.write(json.dumps([str(photo), key, prompt, answer]) + "\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "saved"

    try:
        assert writer.stdout.readline().strip() == "ready"
        write(photos[2], "coffee-key", "caption en", "a cup of coffee")
        b = make_window(toy_model_dir)
        qtbot.waitUntil(lambda: "another PaliGemma Desktop window" in b.notice.text(), timeout=10_000)
        panel_rows(qtbot, b, 1)
        drop_file(qtbot, b, photos[0])
        chelsea = b.image.key
        for task in ("caption", "ocr", "describe"):
            ask(qtbot, b, task)
        drop_file(qtbot, b, photos[1])  # another image, asked about while read-only too
        ask(qtbot, b, "caption")
        astronaut = b.image.key

        qtbot.waitUntil(lambda: "4 answers wait to be saved" in b.history_panel.status.text(), timeout=10_000)
        write(photos[3], "rocket-key", "caption en", "a rocket")  # the writer saves: the list follows
        first = panel_rows(qtbot, b, 2)[0]
        assert "rocket.jpg" in first.text()
        write(photos[0], chelsea, "detect cat", "the other window's answer")  # the same image, meanwhile

        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
        # Taken over at once, with no new question: every turn it showed is written.
        qtbot.waitUntil(lambda: "saves answers again" in b.notice.text(), timeout=10_000)
        panel_rows(qtbot, b, 4)
    finally:
        if writer.poll() is None:
            writer.kill()
    stored = read_back(history_dir)
    assert stored["chelsea.png"] == [("detect cat", "the other window's answer", "done")] + shown(b, chelsea)
    assert [p for p, _, _ in stored["chelsea.png"]] == ["detect cat", "caption en", "ocr", "describe en"]
    assert stored["astronaut.png"] == shown(b, astronaut)
    assert stored["rocket.jpg"] == [("caption en", "a rocket", "done")]


FORKER = textwrap.dedent("""
    import os, sys, time
    from desktop_app.history.store import HistoryStore
    s = HistoryStore.open(sys.argv[1])
    child = os.fork()
    if child == 0:  # inherits the lock's descriptor, and outlives its parent
        os.close(1)  # not the test's pipe, though
        os.close(2)
        time.sleep(120)
        os._exit(0)
    print(child, flush=True)
    os._exit(0)
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="a forked child is a POSIX case")
def test_a_lock_whose_holder_no_longer_runs_is_taken_over_at_once(history_dir):
    proc = subprocess.run([sys.executable, "-c", FORKER, str(history_dir)], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    child = int(proc.stdout.strip())
    try:
        os.kill(child, 0)  # the child still holds the inherited lock
        s = HistoryStore.open(history_dir)
        assert not s.read_only and s.messages == []
        other = HistoryStore.open(history_dir)  # and the new lock holds against the next opener
        assert other.read_only
        other.close()
        s.close()
    finally:
        os.kill(child, signal.SIGKILL)
