"""The history database's file, schema and migrations: where it lives, how it is opened (the one-writer lock, a
damaged file set aside, a newer schema read-only), and the SQL that builds it. The queries are in store.py.

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
"""

from __future__ import annotations

import os
import socket
import sqlite3
import sys
import time
from pathlib import Path

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
        return (f"The disk holding the history ({folder}) is full. Generation goes on; free some space, or choose "
                "another history folder in the History panel's menu.")
    return f"History could not be saved ({type(e).__name__}: {e}). Answers still work."


class _Lock:
    """An exclusive, non-blocking OS lock on a file; released when the process ends, however it ends. The holder's
    process id is written into the file, so a lock that outlived its holder can be taken over at once (see
    `acquire`)."""

    def __init__(self, path: Path):
        self.path, self._f = path, None

    def acquire(self) -> bool:
        if (f := _lock_file(self.path)) is None and sys.platform != "win32" and not _alive(_holder(self.path)):
            f = self._take_over()
        if f is None:
            return False
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}@{socket.gethostname()}".encode())
        f.flush()
        self._f = f
        return True

    def _take_over(self):
        """The lock is held but its holder no longer runs: a child it forked kept the descriptor (a flock belongs
        to the open file, not the process). A fresh lock file is locked and renamed over the old one, so every
        later opener locks the new file; the orphan keeps a lock on a file nobody opens."""
        fresh = self.path.with_name(f"{self.path.name}.{os.getpid()}")
        if (f := _lock_file(fresh)) is None:
            return None
        try:
            os.replace(fresh, self.path)
            if os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino:
                return f
        except OSError:
            pass
        f.close()
        return None

    def release(self) -> None:
        if self._f is not None:
            self._f.close()  # closing the descriptor drops the lock on every platform
            self._f = None


def _lock_file(path: Path):
    f = open(path, "a+b")
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
        return None
    return f


def _holder(path: Path) -> int | None:
    """The process id written by the holder, if it runs on this machine (a folder shared over the network may be
    locked by a process elsewhere, whose id means nothing here)."""
    try:
        pid, _, host = path.read_text(encoding="utf-8", errors="replace").strip().partition("@")
        return int(pid) if host == socket.gethostname() else None
    except (OSError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    """Unknown counts as alive: a lock is only taken over from a process known to be gone."""
    if pid is None or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, under another user
    return True


class Database:
    """The connection and its lifecycle; `HistoryStore` (store.py) adds the queries."""

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
    def open(cls, folder: str | Path | None = None) -> "Database":
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
        return store

    @classmethod
    def in_memory(cls, messages: list[str] | None = None) -> "Database":
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
        try:
            if not lock.acquire():
                return False
        except OSError:  # the folder went read-only or away: stay a reader
            return False
        self.conn.close()
        self.conn, self._lock, self.read_only = self._connect(self.folder, read_only=False), lock, False
        self._migrate()
        return not self.read_only

    def data_version(self) -> int:
        """Changes whenever another connection commits: how a read-only window learns that the writer saved."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

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
