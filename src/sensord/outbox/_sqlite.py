"""The durable outbox: SQLite in WAL mode with synchronous=FULL.

An alert event is in the outbox before the MQTT message that caused it is acknowledged;
each configured sink has its own queue over the same events, and an event is deleted
only when every sink has it. The same database holds the rule engine's checkpoint of
pending and firing alerts, written in the same transaction as the events it explains.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from sensord._errors import OutboxError
from sensord._metrics import Metrics
from sensord._settings import OutboxSettings
from sensord._types import AlertEvent, AlertStatus, Severity

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    life_safety INTEGER NOT NULL,
    body BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    sink TEXT NOT NULL,
    seq INTEGER NOT NULL,
    life_safety INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (sink, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (sink, life_safety DESC, seq);
CREATE TABLE IF NOT EXISTS active_alerts (
    fingerprint TEXT PRIMARY KEY,
    body BLOB NOT NULL
) WITHOUT ROWID;
-- The alert engine's whole state (timers, cooldowns, windows), saved every few seconds
-- in the same transaction as a batch, so it never runs ahead of the events it explains.
CREATE TABLE IF NOT EXISTS engine_snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    saved REAL NOT NULL,
    body BLOB NOT NULL
);
"""


def encode_event(event: AlertEvent) -> bytes:
    return orjson.dumps(asdict(event))


def decode_event(body: bytes) -> AlertEvent:
    d: dict[str, Any] = orjson.loads(body)
    d["status"] = AlertStatus(d["status"])
    d["severity"] = Severity(d["severity"])
    d["dispatch"] = tuple(d["dispatch"])
    return AlertEvent(**d)


class Outbox:
    """Alert events waiting for their sinks, on disk."""

    def __init__(self, path: Path, sinks: Sequence[str], settings: OutboxSettings, metrics: Metrics) -> None:
        self._sinks = tuple(sinks)
        self._max = settings.max_events
        self._metrics = metrics
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so a committed batch survives power loss.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._forget_removed_sinks()
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {path}: {exc}") from None
        self._count = self._scalar("SELECT COUNT(*) FROM events")

    def _scalar(self, sql: str, *args: object) -> int:
        row = self._db.execute(sql, args).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _forget_removed_sinks(self) -> None:
        """A sink removed from the config no longer holds events back."""
        marks = ",".join("?" * len(self._sinks)) or "''"
        with self._tx():
            self._db.execute(f"DELETE FROM deliveries WHERE sink NOT IN ({marks})", self._sinks)  # noqa: S608 - placeholders only
            self._db.execute("DELETE FROM events WHERE seq NOT IN (SELECT seq FROM deliveries)")

    @contextmanager
    def _tx(self) -> Iterator[None]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox write failed: {exc}") from None

    def commit(
        self,
        events: Sequence[AlertEvent],
        *,
        upsert_active: Sequence[tuple[str, bytes]] = (),
        delete_active: Sequence[str] = (),
        snapshot: bytes | None = None,
    ) -> int:
        """Store events for every sink and update the checkpoint, in one durable transaction.

        Events already present (same event_id: a batch re-processed after a crash) are
        ignored. Returns the number of new events.
        """
        ordinary = sum(1 for e in events if not e.life_safety)
        full = ordinary and self._count + ordinary > self._max
        if full and not any(e.life_safety for e in events):
            raise OutboxError(f"outbox full: {self._count} events ≥ max_events {self._max}; sinks are behind")
        # A batch holding a life-safety event is always taken whole, past the bound: a full
        # outbox must never delay a fire or SOS alert, nor drop what came with it.
        new = 0
        now = time.time()
        with self._tx():
            for e in events:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO events (event_id, life_safety, body, created) VALUES (?, ?, ?, ?)",
                    (e.event_id, int(e.life_safety), encode_event(e), now),
                )
                if cur.rowcount:
                    new += 1
                    seq = cur.lastrowid
                    self._db.executemany(
                        "INSERT INTO deliveries (sink, seq, life_safety) VALUES (?, ?, ?)",
                        [(s, seq, int(e.life_safety)) for s in self._sinks],
                    )
            if delete_active:
                self._db.executemany(
                    "DELETE FROM active_alerts WHERE fingerprint = ?", [(f,) for f in delete_active]
                )
            if upsert_active:
                self._db.executemany("INSERT OR REPLACE INTO active_alerts VALUES (?, ?)", upsert_active)
            if snapshot is not None:
                self._db.execute("INSERT OR REPLACE INTO engine_snapshot VALUES (1, ?, ?)", (now, snapshot))
        self._count += new
        return new

    def snapshot(self) -> bytes | None:
        """The last saved engine state, if any."""
        row = self._db.execute("SELECT body FROM engine_snapshot WHERE id = 1").fetchone()
        return bytes(row[0]) if row else None

    def active_rows(self) -> list[bytes]:
        """The checkpointed pending/firing alerts."""
        return [bytes(r[0]) for r in self._db.execute("SELECT body FROM active_alerts")]

    def due(self, sink: str, limit: int, now: float) -> list[tuple[int, AlertEvent, int]]:
        """Events this sink should try now: life-safety first, then in order."""
        try:
            rows = self._db.execute(
                "SELECT d.seq, e.body, d.attempts FROM deliveries d JOIN events e ON e.seq = d.seq "
                "WHERE d.sink = ? AND d.next_at <= ? ORDER BY d.life_safety DESC, d.seq LIMIT ?",
                (sink, now, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox read failed: {exc}") from None
        return [(int(seq), decode_event(bytes(body)), int(att)) for seq, body, att in rows]

    def next_due_at(self, sink: str) -> float | None:
        """When the earliest waiting event of this sink becomes due (None: nothing waits)."""
        row = self._db.execute("SELECT MIN(next_at) FROM deliveries WHERE sink = ?", (sink,)).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def ack(self, sink: str, seqs: Sequence[int]) -> None:
        """This sink has these events; delete events no sink still needs."""
        if not seqs:
            return
        with self._tx():
            self._db.executemany(
                "DELETE FROM deliveries WHERE sink = ? AND seq = ?", [(sink, s) for s in seqs]
            )
            before = self._db.total_changes
            self._db.executemany(
                "DELETE FROM events WHERE seq = ? AND NOT EXISTS (SELECT 1 FROM deliveries WHERE seq = ?)",
                [(s, s) for s in seqs],
            )
            self._count -= self._db.total_changes - before

    def retry_later(self, sink: str, seqs: Sequence[int], at: float) -> None:
        """Count a failed attempt and hold these events until `at`."""
        with self._tx():
            self._db.executemany(
                "UPDATE deliveries SET attempts = attempts + 1, next_at = ? WHERE sink = ? AND seq = ?",
                [(at, sink, s) for s in seqs],
            )

    def depth(self, sink: str) -> int:
        """Events this sink has not yet taken."""
        return self._scalar("SELECT COUNT(*) FROM deliveries WHERE sink = ?", sink)

    def close(self) -> None:
        self._db.close()
