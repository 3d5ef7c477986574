"""Silences (maintenance windows), kept in the outbox database: `sensord silence` writes
them from another process, the daemon reads them. Nothing is ever deleted: an expired
silence stays listed with who made it, when and why."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import orjson

from sensord._errors import OutboxError

SCHEMA = """
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    matchers BLOB NOT NULL,
    starts_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_at REAL NOT NULL,
    life_safety INTEGER NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
"""


@dataclass(frozen=True)
class SilenceRow:
    """One silence as stored: its matchers as written (`label="value"` …)."""

    id: int
    matchers: tuple[str, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    created_at: float
    life_safety: bool
    reason: str

    def active(self, at: float) -> bool:
        return self.starts_at <= at < self.ends_at


class SilenceStore:
    """The silences table on the outbox's connection."""

    def __init__(
        self,
        db: sqlite3.Connection,
        tx: Callable[[], AbstractContextManager[None]],
        lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        self._db = db
        self._tx = tx
        # The outbox's, held for every use of its connection; none for a read-only one.
        self._lock = lock if lock is not None else contextlib.nullcontext()
        self._seen_version = -1

    def add(  # noqa: PLR0913 - a silence's parts
        self,
        matchers: Sequence[str],
        *,
        starts_at: float,
        ends_at: float,
        created_by: str,
        comment: str,
        life_safety: bool = False,
        reason: str = "",
    ) -> int:
        with self._tx():
            cur = self._db.execute(
                "INSERT INTO silences (matchers, starts_at, ends_at, created_by, comment, created_at, "
                "life_safety, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (orjson.dumps(list(matchers)), starts_at, ends_at, created_by, comment, time.time(),
                 int(life_safety), reason),
            )  # fmt: skip
        return int(cur.lastrowid or 0)

    def copy_in(self, rows: Sequence[SilenceRow]) -> None:
        """Inside a commit: silences made on another instance (a handover brings them with
        their communities), with who made them and why; ids are this store's own."""
        self._db.executemany(
            "INSERT INTO silences (matchers, starts_at, ends_at, created_by, comment, created_at, "
            "life_safety, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(orjson.dumps(list(r.matchers)), r.starts_at, r.ends_at, r.created_by, r.comment, r.created_at,
              int(r.life_safety), r.reason) for r in rows],
        )  # fmt: skip

    def expire(self, silence_id: int, *, at: float) -> bool:
        """End a silence now (kept, listed as expired). False if there is no such active one."""
        with self._tx():
            cur = self._db.execute(
                "UPDATE silences SET ends_at = ? WHERE id = ? AND ends_at > ?", (at, silence_id, at)
            )
        return cur.rowcount > 0

    def all(self) -> list[SilenceRow]:
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT id, matchers, starts_at, ends_at, created_by, comment, created_at, life_safety, "
                    "reason FROM silences ORDER BY id"
                ).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox read failed: {exc}") from None
        return [
            SilenceRow(int(r[0]), tuple(orjson.loads(r[1])), float(r[2]), float(r[3]), str(r[4]), str(r[5]),
                       float(r[6]), bool(r[7]), str(r[8]))
            for r in rows
        ]  # fmt: skip

    def changed(self) -> bool:
        """Did any connection commit since the last call? (SQLite's data_version: cheap
        enough to ask once per batch, so a silence made by the CLI applies at once.)"""
        with self._lock:
            version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
        changed, self._seen_version = version != self._seen_version, version
        return changed
