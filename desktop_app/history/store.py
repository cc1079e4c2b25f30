"""The history store's queries: images, conversations, turns, search, delete. The file, its schema and how it is
opened are in schema.py; the row types in rows.py. Both are re-exported here, so `store` is the one name to import.

Not thread-safe by design: one thread (jobs/history_writer.py) owns a store.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import time
from pathlib import Path

from .rows import Conversation, ConversationSummary, StoredObject, StoredTurn
from .schema import (DB_NAME, DONE, FAILED, IMAGES_DIR, INTERRUPTED, LOCK_NAME, MIGRATIONS, STOPPED, STREAMING,
                     THUMB_PX, Database, HistoryError, ReadOnlyError, default_folder, describe, is_disk_full)

__all__ = ["DB_NAME", "DONE", "FAILED", "IMAGES_DIR", "INTERRUPTED", "LOCK_NAME", "MIGRATIONS", "STOPPED", "STREAMING",
           "THUMB_PX", "Conversation", "ConversationSummary", "HistoryError", "HistoryStore", "ReadOnlyError",
           "StoredObject", "StoredTurn", "default_folder", "describe", "fts_query", "is_disk_full", "snippet"]


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


class HistoryStore(Database):
    """Open with `HistoryStore.open(folder)`; read `messages` for anything the person should be told."""

    @classmethod
    def open(cls, folder: str | Path | None = None) -> "HistoryStore":
        store = super().open(folder)
        store.purge_deleted()
        store.remove_partial_copies()
        return store

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
        from PIL import Image, ImageOps  # on the history thread; the window imports this module before it is shown

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
            try:
                tmp.write_bytes(data)
                os.replace(tmp, path)
            except OSError:
                tmp.unlink(missing_ok=True)  # a full disk: the part written would only take the space freed next
                raise
        with self.conn:
            self.conn.execute("INSERT OR IGNORE INTO images VALUES (?, ?, ?, ?, ?, ?)",
                              (sha, suffix, len(data), width, height, buf.getvalue()))
        return sha

    def remove_partial_copies(self) -> None:
        """Image copies a killed process left half-written (`*.part`): never used, only taking space."""
        if self.read_only or self.folder is None:
            return
        for part in (self.folder / IMAGES_DIR).glob("*/*.part"):
            part.unlink(missing_ok=True)

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

    def count_conversations(self) -> int:
        return self.conn.execute("SELECT count(*) FROM conversations WHERE deleted IS NULL").fetchone()[0]

    def list_conversations(self, query: str = "", offset: int = 0, limit: int = -1) -> list[ConversationSummary]:
        """Newest first, `limit` from `offset` (-1: all); with a query, only the conversations `search` finds."""
        if not query.strip():
            return self._summaries("1=1", (), limit, offset)
        found = self.search(query)
        return self.summaries_for(found[offset:offset + limit] if limit >= 0 else found[offset:])

    def search(self, query: str) -> list[tuple[int, list[str]]]:
        """Every conversation in which each word of `query` (or the start of a word) is in a prompt, an answer or
        the image's file name, newest first, each with up to 3 excerpts of matching answers. Complete: no cap."""
        words = query.split()
        if not words:
            return []
        found: set[int] | None = None
        excerpts: dict[int, list[str]] = {}
        for word in words:
            ids = {cid for (cid,) in self.conn.execute(
                "SELECT id FROM conversations WHERE name LIKE ? ESCAPE '\\'", (_like(word),))}
            for cid, answer in self._search_text(word):
                ids.add(cid)
                got = excerpts.setdefault(cid, [])
                if len(got) < 3 and (excerpt := snippet(answer, words)) and excerpt not in got:
                    got.append(excerpt)  # a match in the prompt needs no excerpt: the panel shows the prompt
            found = ids if found is None else found & ids
            if not found:
                return []
        order = self.conn.execute("SELECT id FROM conversations WHERE deleted IS NULL ORDER BY updated DESC")
        return [(cid, excerpts.get(cid, [])) for (cid,) in order if cid in found]

    def summaries_for(self, found: list[tuple[int, list[str]]]) -> list[ConversationSummary]:
        """The summaries of `search`'s results, in its order, with their excerpts."""
        by_id = {}
        for i in range(0, len(found), 500):  # SQLite's limit on bound parameters
            ids = tuple(cid for cid, _ in found[i:i + 500])
            by_id.update((s.id, s) for s in self._summaries(f"c.id IN ({','.join('?' * len(ids))})", ids))
        out = []
        for cid, excerpts in found:
            if (summary := by_id.get(cid)) is not None:
                summary.matches = excerpts
                out.append(summary)
        return out

    def _search_text(self, word: str) -> list[tuple[int, str]]:
        if self.has_fts:
            try:
                return self.conn.execute(
                    "SELECT t.conversation_id, t.answer FROM turns_fts f JOIN turns t ON t.id=f.rowid "
                    "WHERE turns_fts MATCH ?", (fts_query(word),)).fetchall()
            except sqlite3.OperationalError:
                pass  # a query FTS5 cannot parse even quoted: fall back to LIKE
        return self.conn.execute("SELECT t.conversation_id, t.answer FROM turns t WHERE t.prompt LIKE ? ESCAPE '\\' "
                                 "OR t.answer LIKE ? ESCAPE '\\'", (_like(word), _like(word))).fetchall()

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

    def _summaries(self, where: str, args: tuple, limit: int = -1, offset: int = 0) -> list[ConversationSummary]:
        rows = self.conn.execute(
            "SELECT c.id, c.image_key, c.image_sha256, c.name, i.width, i.height, c.created, c.updated, "
            "(SELECT prompt || char(0) || substr(answer, 1, 400) FROM turns t WHERE t.conversation_id=c.id "
            "AND t.is_current ORDER BY position LIMIT 1), "
            "(SELECT count(*) FROM turns t WHERE t.conversation_id=c.id AND t.is_current), i.thumb "
            f"FROM conversations c JOIN images i ON i.sha256=c.image_sha256 WHERE c.deleted IS NULL AND {where} "
            "ORDER BY c.updated DESC LIMIT ? OFFSET ?", args + (limit, offset)).fetchall()
        out = []
        for r in rows:
            prompt, _, answer = (r[8] or "").partition("\0")
            out.append(ConversationSummary(*r[:8], first_prompt=prompt, turn_count=r[9], thumb=r[10],
                                           first_answer=answer))
        return out

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
