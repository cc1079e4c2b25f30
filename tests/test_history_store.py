"""The history store on real SQLite files: round trips, search, versions, deleting, and every failure it promises
to survive (a corrupt file, a full disk, a second instance, a newer schema)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from desktop_app.history import store as st
from desktop_app.history.store import HistoryStore, ReadOnlyError, StoredObject, StoredTurn


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "history"


def add_conversation(store: HistoryStore, photo, key="key-1", turns=()):
    sha = store.add_image(photo.read_bytes(), photo.suffix)
    cid = store.ensure_conversation(key, sha, photo.name)
    for i, t in enumerate(turns):
        t.position = i
        store.save_turn(cid, t)
    return cid, sha


def detect_turn():
    return StoredTurn("detect cat", "<loc0100><loc0200><loc0900><loc0800> cat", st.DONE, "eos",
                      stats={"generated_tokens": 5, "ttft_s": 0.1, "decode_tokens_per_s": 30.0},
                      model={"name": "toy", "repo_id": "", "folder": "/m", "dtype": "float32", "device": "CPU"},
                      sampling={"max_new_tokens": 64, "temperature": 0.0, "top_k": 0, "top_p": 1.0},
                      objects=[StoredObject("cat", (10.0, 20.0, 300.0, 200.0), tuple(range(16)))])


def test_round_trip_survives_reopen_and_the_original_file(folder, photos, tmp_path):
    original = tmp_path / "moved.png"
    original.write_bytes(photos[0].read_bytes())
    s = HistoryStore.open(folder)
    assert s.messages == [] and not s.read_only and s.has_fts
    cid, sha = add_conversation(s, original, turns=[StoredTurn("caption en", "a cat on a mat", st.DONE, "eos"),
                                                    detect_turn()])
    s.close()
    original.unlink()  # history keeps its own copy

    s = HistoryStore.open(folder)
    [summary] = s.list_conversations()
    assert (summary.id, summary.name, summary.first_prompt, summary.turn_count) == (cid, "moved.png", "caption en", 2)
    assert summary.thumb.startswith(b"\x89PNG")
    conv = s.load(cid)
    assert conv.image_path.read_bytes() == photos[0].read_bytes()
    assert conv.image_path.name == f"{sha}.png"
    first, second = conv.turns
    assert (first.prompt, first.answer, first.state, first.stop_reason) == ("caption en", "a cat on a mat", "done", "eos")
    want = detect_turn()
    assert (second.stats, second.model, second.sampling) == (want.stats, want.model, want.sampling)
    assert second.objects == want.objects
    s.close()


def test_same_image_is_stored_once_and_continues_its_conversation(folder, photos):
    s = HistoryStore.open(folder)
    cid, sha = add_conversation(s, photos[1])
    assert s.add_image(photos[1].read_bytes(), ".PNG") == sha
    assert s.ensure_conversation("key-1", sha, "again.png") == cid
    assert len(list((folder / st.IMAGES_DIR).rglob("*.*"))) == 1
    assert s.conversation_for_image("other") is None
    s.close()


def test_search_finds_a_turn_by_a_word_of_its_answer_with_fts_and_like(folder, photos):
    s = HistoryStore.open(folder)
    a, _ = add_conversation(s, photos[0], "a", [StoredTurn("caption en", "a tabby cat sleeping", st.DONE)])
    b, _ = add_conversation(s, photos[1], "b", [StoredTurn("ocr", "NASA astronaut portrait", st.DONE)])
    for fts in (True, False):
        s.has_fts = fts
        assert [c.id for c in s.list_conversations("tabby")] == [a]
        assert [c.id for c in s.list_conversations("astro")] == [b]  # a prefix of a word
        assert [c.id for c in s.list_conversations("NASA portrait")] == [b]  # every word, any order
        assert s.list_conversations("tabby astronaut") == []
        assert s.list_conversations('"(* 100%_') == []  # query syntax in user text is just text
        assert s.list_conversations("tabby")[0].matches == ["a tabby cat sleeping"]
        assert s.list_conversations("caption")[0].matches == []  # found in the prompt, which is shown anyway
    s.close()


def test_versions_keep_one_current_per_position(folder, photos):
    s = HistoryStore.open(folder)
    cid, _ = add_conversation(s, photos[0])
    v0 = StoredTurn("caption en", "first try", st.DONE)
    s.save_turn(cid, v0)
    v1 = StoredTurn("caption en", "second try", st.DONE, version=1)
    s.save_turn(cid, v1)
    conv = s.load(cid)
    assert [(t.answer, t.is_current) for t in conv.turns] == [("first try", False), ("second try", True)]
    assert [t.answer for t in conv.current_turns()] == ["second try"]
    s.close()


def test_a_checkpointed_answer_of_a_dead_process_reads_back_as_interrupted(folder, photos):
    s = HistoryStore.open(folder)
    cid, _ = add_conversation(s, photos[0])
    t = StoredTurn("describe en", "")
    tid = s.save_turn(cid, t)
    s.checkpoint(tid, "a long description that was cut")
    s.conn.close()  # no orderly close: what a kill leaves
    s = HistoryStore.open(folder)
    [turn] = s.load(cid).turns
    assert (turn.answer, turn.state, turn.stop_reason) == ("a long description that was cut", st.STOPPED,
                                                            st.INTERRUPTED)
    s.close()


def test_delete_undo_and_purge(folder, photos):
    s = HistoryStore.open(folder)
    a, sha_a = add_conversation(s, photos[0], "a", [StoredTurn("ocr", "x", st.DONE)])
    b, _ = add_conversation(s, photos[1], "b", [StoredTurn("ocr", "y", st.DONE)])
    s.delete([a])
    assert [c.id for c in s.list_conversations()] == [b]
    s.undelete([a])
    assert sorted(c.id for c in s.list_conversations()) == sorted([a, b])
    assert sorted(s.clear_all()) == sorted([a, b])
    assert s.list_conversations() == []
    s.undelete([b])
    path = s.load(b).image_path
    s.close()
    s = HistoryStore.open(folder)  # a deleted conversation is gone for good at the next start, with its image
    assert [c.id for c in s.list_conversations()] == [b]
    assert s.conn.execute("SELECT count(*) FROM turns").fetchone()[0] == 1
    assert path.exists() and not any(p.name.startswith(sha_a) for p in folder.rglob("*"))
    s.close()


def test_a_corrupt_file_is_moved_aside_and_a_fresh_one_started(folder):
    folder.mkdir(parents=True)
    junk = b"this is not a database, it is a text file that got in the way " * 100
    (folder / st.DB_NAME).write_bytes(junk)
    s = HistoryStore.open(folder)
    [message] = s.messages
    [aside] = folder.glob("history.corrupt-*.sqlite3")
    assert aside.read_bytes() == junk and str(aside) in message
    assert not s.read_only and s.list_conversations() == []
    s.close()


def test_a_damaged_page_is_detected_too(folder, photos):
    s = HistoryStore.open(folder)
    add_conversation(s, photos[0], turns=[StoredTurn("ocr", "text " * 2000, st.DONE)])
    s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    s.close()
    data = bytearray((folder / st.DB_NAME).read_bytes())
    page = 4096
    data[page * 2 + 8: page * 4] = b"\xff" * (page * 2 - 8)  # trash interior pages, keep the header valid
    (folder / st.DB_NAME).write_bytes(bytes(data))
    s = HistoryStore.open(folder)
    assert any("damaged" in m for m in s.messages)
    assert list(folder.glob("history.corrupt-*.sqlite3"))
    s.close()


def test_a_full_disk_is_reported_as_such(folder, photos):
    s = HistoryStore.open(folder)
    cid, _ = add_conversation(s, photos[0])
    pages = s.conn.execute("PRAGMA page_count").fetchone()[0]
    s.conn.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own limit: it answers SQLITE_FULL like a full disk
    with pytest.raises(sqlite3.OperationalError) as e:
        s.save_turn(cid, StoredTurn("describe en", "word " * 20000, st.DONE))
    assert st.is_disk_full(e.value)
    assert "full" in st.describe(e.value, folder) and "Generation goes on" in st.describe(e.value, folder)
    assert s.load(cid).turns == []  # nothing half-written
    s.close()


def test_a_newer_schema_is_opened_read_only(folder):
    HistoryStore.open(folder).close()
    conn = sqlite3.connect(folder / st.DB_NAME)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    s = HistoryStore.open(folder)
    assert s.read_only and "newer version" in s.messages[0]
    with pytest.raises(ReadOnlyError):
        s.ensure_conversation("k", "sha", "x.png")
    s.close()


def test_a_second_instance_reads_only_and_takes_over_when_the_first_quits(folder, photos):
    first = HistoryStore.open(folder)
    add_conversation(first, photos[0], turns=[StoredTurn("caption en", "seen by both", st.DONE)])
    # The second instance is another process, as it would be: the lock is an OS lock.
    script = textwrap.dedent(f"""
        import json, sys
        from desktop_app.history.store import HistoryStore, ReadOnlyError
        s = HistoryStore.open({str(folder)!r})
        out = {{"read_only": s.read_only, "messages": s.messages,
               "answers": [t.answer for c in s.all_conversations() for t in c.turns]}}
        try:
            s.ensure_conversation("k2", "sha", "x.png")
        except ReadOnlyError:
            out["refused"] = True
        print("opened", flush=True)
        sys.stdin.readline()  # the first instance has quit
        out["took_over"] = s.try_become_writer()
        print(json.dumps(out), flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "opened"
    first.close()
    out, _ = proc.communicate("\n", timeout=60)
    result = json.loads(out)
    assert result["read_only"] and result["refused"] and result["took_over"]
    assert "another PaliGemma Desktop window" in result["messages"][0]
    assert result["answers"] == ["seen by both"]


def test_an_unwritable_folder_falls_back_to_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    s = HistoryStore.open(blocker / "history")  # a folder under a file cannot exist
    assert s.folder is None and "memory only" in s.messages[0]
    s.close()


def test_waiting_writes_land_in_order_merged_per_answer_and_with_their_full_text():
    from desktop_app.history.pending import PendingWrites

    pending = PendingWrites()
    first = StoredTurn("caption en", "", st.STREAMING)
    pending.save("img", (1, 0), first)
    pending.checkpoint((1, 0), "a cat")
    pending.save("img", (2, 0), StoredTurn("ocr", "", st.STREAMING))
    pending.checkpoint((3, 0), "grown text of a row already stored")
    pending.save("img", (1, 0), StoredTurn("caption en", "a cat on a mat", st.DONE))  # the full text, at its place
    assert len(pending) == 3
    landed, full = [], [True]

    def apply(w):
        if full[0]:
            raise sqlite3.OperationalError("database or disk is full")
        landed.append((w.version, w.row.answer if w.row else w.text, w.row.state if w.row else None))

    assert isinstance(pending.flush(apply, lambda e: True), sqlite3.OperationalError)
    assert len(pending) == 3 and landed == []  # nothing lost, nothing reordered
    full[0] = False
    assert pending.flush(apply, lambda e: True) is None and len(pending) == 0
    assert landed == [((1, 0), "a cat on a mat", st.DONE), ((2, 0), "", st.STREAMING),
                      ((3, 0), "grown text of a row already stored", None)]

    pending.save("gone", (4, 0), StoredTurn("x"))
    pending.save("kept", (5, 0), StoredTurn("y"))
    pending.drop({"gone"}, set())
    assert [w.key for w in pending._queue] == ["kept"]
