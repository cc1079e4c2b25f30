"""The history store: every conversation (one image, its turns) in one SQLite file, images beside it.

    <folder>/history.sqlite3            conversations, turns (every version), a full-text index of prompts and answers
    <folder>/images/ab/abcdef….jpg      the original image file, named by its sha256: the same picture is stored once,
                                        and history survives the original being moved or deleted
    <folder>/history.lock               held (flock / msvcrt) by the one process that may write

Why these choices:
- WAL journal: a reader never blocks the writer, and a process killed mid-write (kill -9, power loss) leaves the
  last committed state. `synchronous=FULL` syncs the journal at every commit, so a power cut loses nothing that
  was committed either; at one checkpoint every couple of seconds that costs nothing anyone notices.
- One writer per folder, decided by an OS lock on history.lock that dies with its process: a second app instance
  opens the file read-only and says so, and becomes the writer as soon as the first one quits (`try_become_writer`).
- A schema version (`PRAGMA user_version`) and an ordered list of migrations; a file written by a newer version of
  the app is opened read-only rather than guessed at.
- A file SQLite calls corrupt or "not a database" is renamed aside (never deleted) and a fresh one started, with a
  message that names where the old one is. If the folder cannot be written at all, history runs in memory for this
  run and says so: the app always starts.

Not thread-safe by design: one thread (jobs/history_writer.py) owns a store.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sqlite3
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from vlm_core.runtime.answers import Detection

DB_NAME = "history.sqlite3"
LOCK_NAME = "history.lock"
IMAGES_DIR = "images"
THUMB_PX = 96

# Turn states as stored. "streaming" in the file means the process died while the answer was being written.
DONE, STOPPED, FAILED, STREAMING = "done", "stopped", "failed", "streaming"
INTERRUPTED = "interrupted"  # the stop reason given to such a turn when it is read back

_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB, _SQLITE_IOERR = 11, 13, 14, 26, 10

MIGRATIONS = [
    # 0 -> 1
    """
    CREATE TABLE images (
        sha256 TEXT PRIMARY KEY,
        suffix TEXT NOT NULL,            -- of the stored file, e.g. ".jpg"
        bytes INTEGER NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        thumb BLOB                       -- PNG, at most THUMB_PX on a side: the panel lists without opening files
    );
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        image_key TEXT NOT NULL,         -- the app's hash of the decoded pixels: how an opened image is recognised
        image_sha256 TEXT NOT NULL REFERENCES images(sha256),
        name TEXT NOT NULL,              -- the file name it was opened as
        created REAL NOT NULL,
        updated REAL NOT NULL,
        deleted REAL                     -- set by delete(); cleared by undo; purged on the next start
    );
    CREATE INDEX conversations_by_key ON conversations(image_key);
    CREATE INDEX conversations_by_updated ON conversations(updated);
    CREATE TABLE turns (
        id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,       -- order of the turn in the conversation
        version INTEGER NOT NULL DEFAULT 0,  -- regenerate / edit add versions of the same turn
        is_current INTEGER NOT NULL DEFAULT 1,  -- the version the conversation shows
        prompt TEXT NOT NULL,
        answer TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,
        stop_reason TEXT NOT NULL DEFAULT '',
        error TEXT NOT NULL DEFAULT '',
        stats TEXT NOT NULL DEFAULT '{}',     -- JSON: prompt_tokens, generated_tokens, ttft_s, decode_tokens_per_s, ...
        model TEXT NOT NULL DEFAULT '{}',     -- JSON: name, repo_id, folder, dtype, device
        sampling TEXT NOT NULL DEFAULT '{}',  -- JSON: max_new_tokens, temperature, top_k, top_p
        objects TEXT NOT NULL DEFAULT '[]',   -- JSON: [{label, box: [x0, y0, x1, y1] px, seg_codes, locs, mask64_f16}]
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE INDEX turns_by_conversation ON turns(conversation_id, position, version);
    """,
]

_FTS = """
CREATE VIRTUAL TABLE turns_fts USING fts5(prompt, answer, content='turns', content_rowid='id');
CREATE TRIGGER turns_ai AFTER INSERT ON turns BEGIN
    INSERT INTO turns_fts(rowid, prompt, answer) VALUES (new.id, new.prompt, new.answer);
END;
CREATE TRIGGER turns_ad AFTER DELETE ON turns BEGIN
    INSERT INTO turns_fts(turns_fts, rowid, prompt, answer) VALUES ('delete', old.id, old.prompt, old.answer);
END;
CREATE TRIGGER turns_au AFTER UPDATE OF prompt, answer ON turns BEGIN
    INSERT INTO turns_fts(turns_fts, rowid, prompt, answer) VALUES ('delete', old.id, old.prompt, old.answer);
    INSERT INTO turns_fts(rowid, prompt, answer) VALUES (new.id, new.prompt, new.answer);
END;
INSERT INTO turns_fts(turns_fts) VALUES ('rebuild');
"""


class HistoryError(Exception):
    """A history operation failed; the message says what to do. The app goes on without it."""


class ReadOnlyError(HistoryError):
    pass


def default_folder() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("paligemma-desktop", appauthor=False)) / "history"


def is_disk_full(e: BaseException) -> bool:
    return (isinstance(e, sqlite3.Error) and getattr(e, "sqlite_errorcode", None) == _SQLITE_FULL) or (
        isinstance(e, OSError) and e.errno == 28)  # ENOSPC


def describe(e: BaseException, folder: Path) -> str:
    """A message a person can act on, for a failed write."""
    if is_disk_full(e):
        return (f"The disk holding the history ({folder}) is full, so this answer was not saved. Generation goes "
                "on; free some space, or choose another history folder in the History panel's menu.")
    return f"History could not be saved ({type(e).__name__}: {e}). Answers still work; history is not kept."


@dataclass
class StoredObject:
    """One detected or segmented object, enough to draw it again without the model."""

    label: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the image's pixels
    seg_codes: tuple[int, ...] = ()  # the 16 codebook indices of a segmentation, else ()
    locs: tuple[int, ...] = ()  # the raw <loc> bins: y_min, x_min, y_max, x_max
    mask64: bytes | None = None  # the mask decoder's float[64, 64] output as float16 bytes, once decoded

    def detection(self, width: int, height: int) -> Detection:
        """As the parser would give it for a width x height image."""
        locs = tuple(self.locs) if len(self.locs) == 4 else (0, 0, 0, 0)
        return Detection(self.label, tuple(self.box), tuple(self.seg_codes), locs, (width, height))

    def mask_logits(self) -> np.ndarray | None:
        """float[64, 64], the decoder's output, or None if no mask was decoded."""
        if self.mask64 is None:
            return None
        return np.frombuffer(self.mask64, dtype=np.float16).reshape(64, 64).astype(np.float32)

    def to_json(self) -> dict:
        d = {"label": self.label, "box": list(self.box), "seg_codes": list(self.seg_codes), "locs": list(self.locs)}
        if self.mask64 is not None:
            d["mask64_f16"] = base64.b64encode(self.mask64).decode("ascii")
        return d

    @staticmethod
    def from_json(d: dict) -> "StoredObject":
        mask = d.get("mask64_f16")
        return StoredObject(str(d.get("label", "")), tuple(float(v) for v in d["box"]),
                            tuple(int(v) for v in d.get("seg_codes", ())), tuple(int(v) for v in d.get("locs", ())),
                            base64.b64decode(mask) if mask else None)


@dataclass
class StoredTurn:
    prompt: str
    answer: str = ""
    state: str = STREAMING
    stop_reason: str = ""
    error: str = ""
    stats: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    sampling: dict = field(default_factory=dict)
    objects: list[StoredObject] = field(default_factory=list)
    position: int = 0
    version: int = 0
    is_current: bool = True
    created: float = 0.0
    updated: float = 0.0
    id: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["objects"] = [o.to_json() for o in self.objects]
        return d


@dataclass
class ConversationSummary:
    id: int
    image_key: str
    image_sha256: str
    name: str
    width: int
    height: int
    created: float
    updated: float
    first_prompt: str
    turn_count: int
    thumb: bytes | None = None
    matches: list[str] = field(default_factory=list)  # for a search: the matching prompts/answers, shortened


@dataclass
class Conversation:
    summary: ConversationSummary
    image_path: Path
    turns: list[StoredTurn]  # every version, in (position, version) order

    def current_turns(self) -> list[StoredTurn]:
        return [t for t in self.turns if t.is_current]


class _Lock:
    """An exclusive, non-blocking OS lock on a file; released when the process ends, however it ends."""

    def __init__(self, path: Path):
        self.path, self._f = path, None

    def acquire(self) -> bool:
        f = open(self.path, "a+b")
        try:
            if sys.platform == "win32":
                import msvcrt

                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        self._f = f
        return True

    def release(self) -> None:
        if self._f is not None:
            self._f.close()  # closing the descriptor drops the lock on every platform
            self._f = None


def _now() -> float:
    return time.time()


def _loads(text: str, default):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


def fts_query(text: str) -> str:
    """Each word as a quoted prefix term, all required: user text never reaches FTS5's query syntax."""
    return " ".join('"' + w.replace('"', '""') + '"*' for w in text.split())


def _like(word: str) -> str:
    return "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class HistoryStore:
    """Open with `HistoryStore.open(folder)`; read `messages` for anything the person should be told."""

    def __init__(self, folder: Path | None, conn: sqlite3.Connection, read_only: bool, lock: _Lock | None,
                 messages: list[str]):
        self.folder = folder  # None: in memory for this run only
        self.conn = conn
        self.read_only = read_only
        self._lock = lock
        self.messages = messages
        self.has_fts = self._table_exists("turns_fts")

    # -- opening ------------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | Path | None = None) -> "HistoryStore":
        folder = Path(folder) if folder else default_folder()
        messages: list[str] = []
        try:
            (folder / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
            lock = _Lock(folder / LOCK_NAME)
            writer = lock.acquire()
        except OSError as e:
            return cls.in_memory([f"History cannot be kept in {folder} ({e.strerror or e}). This run keeps it in "
                                  "memory only; choose another history folder in the History panel's menu."])
        if not writer:
            if (folder / DB_NAME).exists():
                try:
                    store = cls(folder, cls._connect(folder, read_only=True), True, None, [])
                    store._check()
                    store.messages.append(
                        "History is open in another PaliGemma Desktop window, so this one shows it read-only and "
                        "does not save new answers. It starts saving once the other window is closed.")
                    return store
                except sqlite3.Error:
                    pass
            return cls.in_memory(["History is in use by another PaliGemma Desktop window and cannot be read yet; "
                                  "this window does not save answers until the other one is closed."])
        conn = None
        try:
            conn = cls._connect(folder, read_only=False)
            store = cls(folder, conn, False, lock, messages)
            store._check()
        except sqlite3.DatabaseError as e:
            code = getattr(e, "sqlite_errorcode", None)
            if code not in (_SQLITE_CORRUPT, _SQLITE_NOTADB, _SQLITE_IOERR, _SQLITE_CANTOPEN, None):
                lock.release()
                return cls.in_memory([f"History could not be opened ({e}). This run keeps it in memory only."])
            if conn is not None:
                conn.close()
            aside = cls._move_aside(folder)
            if aside is None:
                lock.release()
                return cls.in_memory([f"The history file {folder / DB_NAME} is damaged and could not be moved aside "
                                      f"({e}). This run keeps history in memory only."])
            messages.append(f"The history file was damaged ({e}), so a new one was started. The old file is kept "
                            f"as {aside}.")
            conn = cls._connect(folder, read_only=False)
            store = cls(folder, conn, False, lock, messages)
        store._migrate()
        store.purge_deleted()
        return store

    @classmethod
    def in_memory(cls, messages: list[str] | None = None) -> "HistoryStore":
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        store = cls(None, conn, False, None, list(messages or []))
        store._migrate()
        return store

    @staticmethod
    def _connect(folder: Path, read_only: bool) -> sqlite3.Connection:
        path = folder / DB_NAME
        if read_only:
            conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False, timeout=5)
        else:
            conn = sqlite3.connect(path, check_same_thread=False, timeout=5)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _check(self) -> None:
        """Raise sqlite3.DatabaseError if the file is not a sound SQLite database."""
        row = self.conn.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            err = sqlite3.DatabaseError(f"integrity check: {row[0] if row else 'no result'}")
            err.sqlite_errorcode = _SQLITE_CORRUPT
            raise err

    @staticmethod
    def _move_aside(folder: Path) -> Path | None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = folder / f"history.corrupt-{stamp}.sqlite3"
        try:
            os.replace(folder / DB_NAME, aside)
            for suffix in ("-wal", "-shm"):  # they belong to the old file; keep them with it
                side = folder / (DB_NAME + suffix)
                if side.exists():
                    os.replace(side, Path(str(aside) + suffix))
        except OSError:
            return None
        return aside

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            self.read_only = True
            self.messages.append("The history was written by a newer version of PaliGemma Desktop; it is shown "
                                 "read-only and new answers are not saved.")
            return
        if self.read_only:
            return
        for i in range(version, len(MIGRATIONS)):
            try:  # one transaction per step: a failed migration leaves the previous version intact
                self.conn.executescript("BEGIN;" + MIGRATIONS[i] + f"PRAGMA user_version={i + 1};COMMIT;")
            except sqlite3.Error:
                self.conn.rollback()
                raise
        if not self._table_exists("turns_fts"):
            try:
                self.conn.executescript("BEGIN;" + _FTS + "COMMIT;")
            except sqlite3.OperationalError:  # this SQLite was built without FTS5: search uses LIKE
                self.conn.rollback()
        self.has_fts = self._table_exists("turns_fts")

    def _table_exists(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE name=?", (name,)).fetchone() is not None

    def try_become_writer(self) -> bool:
        """A read-only store (another window held the lock) takes over once that window has closed."""
        if not self.read_only or self.folder is None or self._lock is not None:
            return not self.read_only
        lock = _Lock(self.folder / LOCK_NAME)
        if not lock.acquire():
            return False
        self.conn.close()
        self.conn, self._lock, self.read_only = self._connect(self.folder, read_only=False), lock, False
        self._migrate()
        return not self.read_only

    def close(self) -> None:
        try:
            self.conn.close()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _writable(self) -> None:
        if self.read_only:
            raise ReadOnlyError("History is read-only in this window (another window has it open).")

    # -- images ---------------------------------------------------------------------------------------------------
    def image_path(self, sha256: str, suffix: str) -> Path | None:
        if self.folder is None:
            return None
        return self.folder / IMAGES_DIR / sha256[:2] / f"{sha256}{suffix}"

    def add_image(self, data: bytes, suffix: str) -> str:
        """Store the file's bytes once (by sha256); return the hash. Writes to a temp file and renames, so a kill
        mid-copy never leaves a truncated image under the final name."""
        self._writable()
        sha = hashlib.sha256(data).hexdigest()
        suffix = suffix.lower() if suffix.startswith(".") and len(suffix) <= 6 else ".img"
        if self.conn.execute("SELECT 1 FROM images WHERE sha256=?", (sha,)).fetchone():
            return sha
        with Image.open(io.BytesIO(data)) as im:
            upright = ImageOps.exif_transpose(im)  # as the app shows it: a phone photo's rotation applied
            width, height = upright.size
            thumb = upright.convert("RGB")
            thumb.thumbnail((THUMB_PX, THUMB_PX))
            buf = io.BytesIO()
            thumb.save(buf, "PNG")
        if (path := self.image_path(sha, suffix)) is not None and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".part")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        with self.conn:
            self.conn.execute("INSERT OR IGNORE INTO images VALUES (?, ?, ?, ?, ?, ?)",
                              (sha, suffix, len(data), width, height, buf.getvalue()))
        return sha

    # -- conversations ----------------------------------------------------------------------------------------------
    def conversation_for_image(self, image_key: str) -> int | None:
        row = self.conn.execute("SELECT id FROM conversations WHERE image_key=? AND deleted IS NULL "
                                "ORDER BY updated DESC LIMIT 1", (image_key,)).fetchone()
        return row[0] if row else None

    def ensure_conversation(self, image_key: str, image_sha256: str, name: str) -> int:
        """The conversation for this image, continuing an existing one."""
        self._writable()
        if (cid := self.conversation_for_image(image_key)) is not None:
            return cid
        now = _now()
        with self.conn:
            cur = self.conn.execute("INSERT INTO conversations (image_key, image_sha256, name, created, updated) "
                                    "VALUES (?, ?, ?, ?, ?)", (image_key, image_sha256, name, now, now))
        return cur.lastrowid

    def save_turn(self, conversation_id: int, turn: StoredTurn) -> int:
        """Insert (turn.id None) or update a turn; return its id. Setting a version current makes its siblings not."""
        self._writable()
        now = _now()
        turn.updated = now
        turn.created = turn.created or now
        values = (turn.prompt, turn.answer, turn.state, turn.stop_reason, turn.error, json.dumps(turn.stats),
                  json.dumps(turn.model), json.dumps(turn.sampling),
                  json.dumps([o.to_json() for o in turn.objects]), turn.position, turn.version, int(turn.is_current),
                  turn.updated)
        with self.conn:
            if turn.id is None:
                cur = self.conn.execute(
                    "INSERT INTO turns (prompt, answer, state, stop_reason, error, stats, model, sampling, objects, "
                    "position, version, is_current, updated, conversation_id, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values + (conversation_id, turn.created))
                turn.id = cur.lastrowid
            else:
                self.conn.execute(
                    "UPDATE turns SET prompt=?, answer=?, state=?, stop_reason=?, error=?, stats=?, model=?, "
                    "sampling=?, objects=?, position=?, version=?, is_current=?, updated=? WHERE id=?",
                    values + (turn.id,))
            if turn.is_current:
                self.conn.execute("UPDATE turns SET is_current=0 WHERE conversation_id=? AND position=? AND id!=?",
                                  (conversation_id, turn.position, turn.id))
            self.conn.execute("UPDATE conversations SET updated=? WHERE id=?", (now, conversation_id))
        return turn.id

    def next_position(self, conversation_id: int) -> int:
        row = self.conn.execute("SELECT max(position) FROM turns WHERE conversation_id=?",
                                (conversation_id,)).fetchone()
        return 0 if row[0] is None else row[0] + 1

    def checkpoint(self, turn_id: int, answer: str) -> None:
        """The streamed text so far; one small UPDATE in its own transaction."""
        self._writable()
        with self.conn:
            self.conn.execute("UPDATE turns SET answer=?, updated=? WHERE id=?", (answer, _now(), turn_id))

    def list_conversations(self, query: str = "", limit: int = 1000) -> list[ConversationSummary]:
        """Newest first; with a query, only conversations whose prompts or answers contain every word of it."""
        matches: dict[int, list[str]] = {}
        if query.strip():
            words = query.split()
            for cid, prompt, answer in self._search(query):
                found = matches.setdefault(cid, [])
                if (excerpt := snippet(answer, words)) and len(found) < 3:
                    found.append(excerpt)  # a match in the prompt needs no excerpt: the panel shows the prompt
            if not matches:
                return []
        if not matches:
            return self._summaries("1=1", (), limit)
        ids = list(matches)[:limit]
        out = self._summaries(f"c.id IN ({','.join('?' * len(ids))})", tuple(ids), limit)
        for summary in out:
            summary.matches = matches[summary.id]
        return out

    def _search(self, query: str) -> list[tuple[int, str, str]]:
        if self.has_fts:
            try:
                return self.conn.execute(
                    "SELECT t.conversation_id, t.prompt, t.answer FROM turns_fts f JOIN turns t ON t.id=f.rowid "
                    "WHERE turns_fts MATCH ? ORDER BY rank", (fts_query(query),)).fetchall()
            except sqlite3.OperationalError:
                pass  # a query FTS5 cannot parse even quoted: fall back to LIKE
        words = query.split()
        where = " AND ".join("(t.prompt LIKE ? ESCAPE '\\' OR t.answer LIKE ? ESCAPE '\\')" for _ in words)
        args = [p for w in words for p in (_like(w), _like(w))]
        return self.conn.execute(f"SELECT t.conversation_id, t.prompt, t.answer FROM turns t WHERE {where}",
                                 args).fetchall()

    def load(self, conversation_id: int) -> Conversation | None:
        summary = next((s for s in self._summaries("c.id=?", (conversation_id,))), None)
        if summary is None:
            return None
        suffix = self.conn.execute("SELECT suffix FROM images WHERE sha256=?", (summary.image_sha256,)).fetchone()[0]
        rows = self.conn.execute(
            "SELECT prompt, answer, state, stop_reason, error, stats, model, sampling, objects, position, version, "
            "is_current, created, updated, id FROM turns WHERE conversation_id=? ORDER BY position, version",
            (conversation_id,)).fetchall()
        turns = []
        for r in rows:
            turn = StoredTurn(r[0], r[1], r[2], r[3], r[4], _loads(r[5], {}), _loads(r[6], {}), _loads(r[7], {}),
                              [StoredObject.from_json(o) for o in _loads(r[8], [])], r[9], r[10], bool(r[11]),
                              r[12], r[13], r[14])
            if turn.state == STREAMING:  # its process died mid-answer: what was checkpointed is what there is
                turn.state, turn.stop_reason = STOPPED, INTERRUPTED
            turns.append(turn)
        return Conversation(summary, self.image_path(summary.image_sha256, suffix), turns)

    def _summaries(self, where: str, args: tuple, limit: int = -1) -> list[ConversationSummary]:
        rows = self.conn.execute(
            "SELECT c.id, c.image_key, c.image_sha256, c.name, i.width, i.height, c.created, c.updated, "
            "(SELECT prompt FROM turns t WHERE t.conversation_id=c.id AND t.is_current ORDER BY position LIMIT 1), "
            "(SELECT count(*) FROM turns t WHERE t.conversation_id=c.id AND t.is_current), i.thumb "
            f"FROM conversations c JOIN images i ON i.sha256=c.image_sha256 WHERE c.deleted IS NULL AND {where} "
            "ORDER BY c.updated DESC LIMIT ?", args + (limit,)).fetchall()
        return [ConversationSummary(*r[:8], first_prompt=r[8] or "", turn_count=r[9], thumb=r[10]) for r in rows]

    def all_conversations(self):
        """Every conversation, newest first, loaded one at a time (for exporting everything)."""
        for (cid,) in self.conn.execute("SELECT id FROM conversations WHERE deleted IS NULL "
                                        "ORDER BY updated DESC").fetchall():
            if (conv := self.load(cid)) is not None:
                yield conv

    # -- deleting -----------------------------------------------------------------------------------------------------
    def delete(self, conversation_ids: list[int]) -> None:
        """Hidden at once, undoable with `undelete`; the rows and unshared images go at the next start."""
        self._writable()
        with self.conn:
            self.conn.executemany("UPDATE conversations SET deleted=? WHERE id=?",
                                  [(_now(), cid) for cid in conversation_ids])

    def undelete(self, conversation_ids: list[int]) -> None:
        self._writable()
        with self.conn:
            self.conn.executemany("UPDATE conversations SET deleted=NULL WHERE id=?",
                                  [(cid,) for cid in conversation_ids])

    def clear_all(self) -> list[int]:
        ids = [r[0] for r in self.conn.execute("SELECT id FROM conversations WHERE deleted IS NULL")]
        self.delete(ids)
        return ids

    def purge_deleted(self) -> None:
        """Remove deleted conversations for good, and image files no conversation uses any more."""
        if self.read_only:
            return
        with self.conn:
            self.conn.execute("DELETE FROM conversations WHERE deleted IS NOT NULL")
            orphans = self.conn.execute("SELECT sha256, suffix FROM images WHERE sha256 NOT IN "
                                        "(SELECT image_sha256 FROM conversations)").fetchall()
            self.conn.executemany("DELETE FROM images WHERE sha256=?", [(sha,) for sha, _ in orphans])
        for sha, suffix in orphans:
            if (path := self.image_path(sha, suffix)) is not None:
                path.unlink(missing_ok=True)


def snippet(text: str, words: list[str], width: int = 60) -> str:
    """A piece of `text` around the first of `words` it contains (case-insensitive), or "" if it has none."""
    flat = " ".join(text.split())
    lower = flat.lower()
    hits = [i for i in (lower.find(w.lower()) for w in words) if i >= 0]
    if not hits:
        return ""
    start = max(0, min(hits) - width // 3)
    piece = flat[start:start + width]
    return ("…" if start else "") + piece + ("…" if start + width < len(flat) else "")
