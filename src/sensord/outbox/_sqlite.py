"""The durable outbox: SQLite in WAL mode with synchronous=FULL.

An alert event is in the outbox before the MQTT message that caused it is acknowledged;
each configured sink has its own queue over the same events, and an event is deleted
only when every sink has it. The same database holds the rule engine's checkpoint of
pending and firing alerts, written in the same transaction as the events it explains.

Each sink's queue is bounded on its own (`max_events`): past the bound the oldest
ordinary deliveries of that sink are shed (handed to `on_shed`, for dead-letter), never a
life-safety one, and never by refusing a commit: a dead InfluxDB must not stop the rules
or the webhook. A sink removed from the config keeps its queue until an operator purges it.

Threads. Every write goes through one connection guarded by a lock, so a transaction is
never interleaved with another thread's statements. The daemon runs its writes (a batch's
commit, a sink's acknowledgements) on one writer thread (`run_in_writer`), so the event loop
keeps reading the broker while SQLite fsyncs; the hot reads of the delivery workers (`due`,
`due_notices`) use a second, read-only connection, which in WAL mode sees only committed
transactions and never waits for the writer.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from sensord._errors import OutboxError
from sensord._metrics import Metrics
from sensord._settings import OutboxSettings
from sensord._types import AlertEvent, AlertStatus, Message, Recipient, Severity
from sensord.outbox._silences import SCHEMA as SILENCES_SCHEMA
from sensord.outbox._silences import SilenceStore
from sensord.outbox._snapshot import SnapshotFile
from sensord.outbox._workorders import SCHEMA as WORK_ORDERS_SCHEMA
from sensord.outbox._workorders import AuditEntry, WorkOrderRow, WorkOrderStore

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
-- Notifications (dispatch): one row per message to one channel, committed with the
-- events that caused them; deleted when the channel took it (or refused it for good).
CREATE TABLE IF NOT EXISTS notices (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    notice_id TEXT NOT NULL UNIQUE,
    sink TEXT NOT NULL,
    life_safety INTEGER NOT NULL,
    body BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS notices_due ON notices (sink, life_safety DESC, seq);
-- Dispatch state: groups waiting to be sent, inhibiting alerts and the alerts they hold.
CREATE TABLE IF NOT EXISTS dispatch_state (
    key TEXT PRIMARY KEY,
    body BLOB NOT NULL
) WITHOUT ROWID;
-- The stream's event-time clock after the last committed batch: a restart resumes it, so
-- an ack read first after a crash is dated as a daemon that never stopped would date it.
CREATE TABLE IF NOT EXISTS stream_clock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS engine_snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    saved REAL NOT NULL,
    body BLOB NOT NULL
);
"""


T = TypeVar("T")

# Called with (event, sink, reason) for each delivery shed at a sink's bound.
OnShed = Callable[[AlertEvent, str, str], object]


@dataclass(frozen=True)
class SinkQueue:
    """One sink's waiting deliveries, for `sensord outbox status`."""

    sink: str
    waiting: int
    life_safety: int
    oldest: float | None  # when the oldest waiting event was committed
    configured: bool


def encode_event(event: AlertEvent) -> bytes:
    # orjson writes a dataclass (fields in order, enums as values, tuples as arrays) itself:
    # the same bytes as dumps(asdict(event)) without asdict's deep copy, ~10x faster.
    return orjson.dumps(event)


@dataclass(frozen=True, slots=True)
class Notice:
    """A message for one channel (a receiver's WeCom robot, its SMS gateway, …), stored
    with the batch that caused it; `sink` names the channel's queue."""

    sink: str
    message: Message
    # Event time it was made at (the alert's, or the clock that sent its group): shown by
    # `replay --notifications`; the outbox keeps its own times.
    at: float = 0.0


def encode_message(message: Message) -> bytes:
    return orjson.dumps(message)


def decode_message(body: bytes) -> Message:
    d: dict[str, Any] = orjson.loads(body)
    d["severity"] = Severity(d["severity"])
    d["recipients"] = tuple(Recipient(**r) for r in d["recipients"])
    return Message(**d)


def decode_event(body: bytes) -> AlertEvent:
    d: dict[str, Any] = orjson.loads(body)
    d["status"] = AlertStatus(d["status"])
    d["severity"] = Severity(d["severity"])
    d["dispatch"] = tuple(d["dispatch"])
    # JSON has no tuples; a body written before events carried texts has none (default).
    if "texts" in d:
        d["texts"] = {locale: (pair[0], pair[1]) for locale, pair in d["texts"].items()}
    return AlertEvent(**d)


# Rows per multi-row INSERT: big enough that a batch's events take one statement or a few,
# small enough that a statement's text and parameter list stay modest.
_ROWS_PER_STATEMENT = 1000


class Outbox:
    """Alert events waiting for their sinks, on disk."""

    def __init__(  # noqa: PLR0913 - where, who reads it, its limits, and what to tell
        self,
        path: Path,
        sinks: Sequence[str],
        settings: OutboxSettings,
        metrics: Metrics,
        *,
        on_shed: OnShed | None = None,
        channels: Sequence[str] = (),
    ) -> None:
        """`sinks` take every alert event; `channels` (dispatch) take only the messages
        routed to them."""
        self._sinks = tuple(sinks)
        self._channels = tuple(channels)
        self._max = settings.max_events
        self._metrics = metrics
        self._on_shed = on_shed
        # Bumped by every commit that stores a life-safety event: a delivery worker in the
        # middle of a page checks it between attempts, so a new SOS goes next.
        self.life_safety_epoch = 0
        # Held for every use of `_db`, a whole transaction at a time (see Threads above).
        self._lock = threading.RLock()
        self._writer: ThreadPoolExecutor | None = None
        self._writer_thread: int | None = None
        self._deferred_shed: list[tuple[str, AlertEvent]] = []
        # Its own lock, never held across a transaction: the loop collects the shed list
        # of a finished write while the writer thread is in the next one.
        self._shed_lock = threading.Lock()
        # The engine snapshot, in a file of its own beside the database (see _snapshot).
        self.snapshots = SnapshotFile(path.with_name(path.stem + ".engine.npz"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so a committed batch survives power loss.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA + SILENCES_SCHEMA + WORK_ORDERS_SCHEMA)
            # 32,766 since SQLite 3.32, 999 before.
            self._max_variables = self._db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            # Used only by the thread that runs the event loop (reads never lock in WAL).
            self._reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._reader.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {path}: {exc}") from None
        self._depth = {
            s: self._scalar("SELECT COUNT(*) FROM deliveries WHERE sink = ?", s) for s in self._sinks
        }
        self.silences = SilenceStore(self._db, self._tx, self._lock)
        self.work_orders = WorkOrderStore(self._db, self._tx, self._lock)
        count = "SELECT COUNT(*) FROM notices WHERE sink = ?"
        self._depth |= {c: self._scalar(count, c) for c in self._channels}
        # Deliveries of sinks (and messages of channels) no longer configured are kept
        # until purged, not deleted.
        self.orphaned = {
            str(sink): int(n)
            for sink, n in self._db.execute(
                "SELECT sink, COUNT(*) FROM deliveries GROUP BY sink "
                "UNION ALL SELECT sink, COUNT(*) FROM notices GROUP BY sink"
            )
            if sink not in self._sinks and sink not in self._channels
        }

    def _scalar(self, sql: str, *args: object) -> int:
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    async def run_in_writer(self, fn: Callable[[], T]) -> T:
        """Run `fn` (a write: a commit, an ack) on the outbox's writer thread and wait for
        it without blocking the event loop. One thread, so writes keep their order."""
        return await self.wait_write(self.start_write(fn))

    def start_write(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Queue `fn` on the writer thread now, behind every write queued before it; wait
        for it with `wait_write`."""
        if self._writer is None:
            self._writer = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="outbox-writer", initializer=self._mark_writer
            )
        # Submitted now, and waited for shielded: cancelling the caller (a stop) must not
        # cancel a write still queued behind another (`run_in_executor` would), or a batch
        # whose engine state is in the stop-time snapshot would lose its events and
        # checkpoint. `finish_writes` waits for it.
        return asyncio.wrap_future(self._writer.submit(fn))

    async def wait_write(self, done: asyncio.Future[T]) -> T:
        """The result of a write queued by `start_write`, once it has run."""
        try:
            return await asyncio.shield(done)
        finally:
            # Shed deliveries are reported here, on the loop's thread: `on_shed` writes the
            # dead-letter file and may hand the record to the event loop.
            with self._shed_lock:
                shed, self._deferred_shed = self._deferred_shed, []
            self._report_shed(shed)

    def _mark_writer(self) -> None:
        self._writer_thread = threading.get_ident()

    def finish_writes(self) -> None:
        """Wait for the writes handed to the writer thread; later ones start a new thread."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.shutdown(wait=True)

    @contextmanager
    def _tx(self) -> Iterator[None]:
        with self._lock, self._sqlite_errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    @contextmanager
    def _sqlite_errors() -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox write failed: {exc}") from None

    def commit(  # noqa: PLR0913 - the parts of one transaction
        self,
        events: Sequence[AlertEvent],
        *,
        upsert_active: Sequence[tuple[str, bytes]] = (),
        delete_active: Sequence[str] = (),
        clock: float | None = None,
        notices: Sequence[Notice] = (),
        groups: Mapping[str, bytes | None] | None = None,
        work_orders: Sequence[WorkOrderRow] = (),
        audit: Sequence[AuditEntry] = (),
        before: Callable[[], object] | None = None,
    ) -> int:
        """Store events for every sink and update the checkpoint, in one durable transaction.

        Events already present (same event_id: a batch re-processed after a crash) are
        ignored. A sink's queue past its bound sheds its oldest ordinary deliveries in the
        same transaction. Returns the number of new events. `before` runs first inside
        the transaction; what it raises rolls the whole transaction back (a one-tap link
        already used).
        """
        new = 0
        life_safety = False
        now = time.time()
        shed: list[tuple[str, AlertEvent]] = []
        with self._tx():
            if before is not None:
                before()
            if events:
                new, life_safety = self._store_events(events, now)
            if new:
                shed = self._shed_over_bound(new)
            life_safety |= self._store_notices(notices, now)
            for key, body in (groups or {}).items():
                if body is None:
                    self._db.execute("DELETE FROM dispatch_state WHERE key = ?", (key,))
                else:
                    self._db.execute("INSERT OR REPLACE INTO dispatch_state VALUES (?, ?)", (key, body))
            self._write_state(upsert_active, delete_active, clock)
            self.work_orders.write(work_orders, audit)
            for sink in self._sinks:
                self._depth[sink] += new
            for sink, _ in shed:
                self._depth[sink] -= 1
            if life_safety:
                self.life_safety_epoch += 1
        self._report_shed(shed)
        return new

    def _store_events(self, events: Sequence[AlertEvent], now: float) -> tuple[int, bool]:
        """Inside the commit: the new events (one statement for all) and a delivery of each
        to every sink. Returns (how many were new, whether one of them is life-safety)."""
        # seq is AUTOINCREMENT: every row this insert adds has a seq above the last one.
        last = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        self._insert(
            "INSERT OR IGNORE INTO events (event_id, life_safety, body, created) VALUES ",
            [(e.event_id, int(e.life_safety), encode_event(e), now) for e in events],
        )
        new, life_safety = self._db.execute(
            "SELECT COUNT(*), COALESCE(MAX(life_safety), 0) FROM events WHERE seq > ?", (last,)
        ).fetchone()
        for sink in self._sinks:
            self._db.execute(
                "INSERT INTO deliveries (sink, seq, life_safety) SELECT ?, seq, life_safety FROM events "
                "WHERE seq > ?",
                (sink, last),
            )
        return int(new), bool(life_safety)

    def _store_notices(self, notices: Sequence[Notice], now: float) -> bool:
        """Inside the commit: each new notice for its channel. True if one is life-safety."""
        life_safety = False
        for n in notices:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO notices (notice_id, sink, life_safety, body, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (n.message.id, n.sink, int(n.message.life_safety), encode_message(n.message), now),
            )
            if cur.rowcount:
                life_safety |= n.message.life_safety
                self._depth[n.sink] = self._depth.get(n.sink, 0) + 1
        return life_safety

    def due_notices(self, sink: str, limit: int) -> list[tuple[int, Message]]:
        """The next messages for this channel: life-safety first, then in commit order."""
        try:
            rows = self._reader.execute(
                "SELECT seq, body FROM notices WHERE sink = ? ORDER BY life_safety DESC, seq LIMIT ?",
                (sink, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox read failed: {exc}") from None
        return [(int(seq), decode_message(bytes(body))) for seq, body in rows]

    def ack_notices(self, sink: str, seqs: Sequence[int]) -> None:
        """This channel took (or refused for good) these messages."""
        if not seqs:
            return
        with self._tx():
            cur = self._db.executemany("DELETE FROM notices WHERE seq = ?", [(s,) for s in seqs])
            gone = max(cur.rowcount, 0)
            self._depth[sink] = self._depth.get(sink, 0) - gone

    def _write_state(
        self,
        upsert_active: Sequence[tuple[str, bytes]],
        delete_active: Sequence[str],
        clock: float | None,
    ) -> None:
        """Inside the commit: the checkpoint of active alerts and the clock."""
        per = self._rows_per_statement(1)
        for i in range(0, len(delete_active), per):
            gone = delete_active[i : i + per]
            marks = ",".join("?" * len(gone))  # placeholders only: the values are bound
            self._db.execute(f"DELETE FROM active_alerts WHERE fingerprint IN ({marks})", gone)  # noqa: S608
        if upsert_active:
            self._insert("INSERT OR REPLACE INTO active_alerts VALUES ", upsert_active)
        if clock is not None:
            self._db.execute("INSERT OR REPLACE INTO stream_clock VALUES (1, ?)", (clock,))

    def _rows_per_statement(self, width: int) -> int:
        return max(1, min(_ROWS_PER_STATEMENT, self._max_variables // width))

    def _insert(self, head: str, rows: Sequence[tuple[object, ...]]) -> None:
        """`head` + `(?, …), (?, …), …`: many rows per statement. executemany steps once per
        row, and each step gives up the GIL and must win it back; with the event loop's
        thread busy evaluating the next batch, winning it back took up to the switch
        interval (5 ms) each time, and a commit of 500 alert events took seconds."""
        if not rows:
            return
        width = len(rows[0])
        per = self._rows_per_statement(width)
        one = "(" + ",".join("?" * width) + ")"
        for i in range(0, len(rows), per):
            part = rows[i : i + per]
            self._db.execute(head + ",".join([one] * len(part)), [v for row in part for v in row])

    def _shed_over_bound(self, new: int) -> list[tuple[str, AlertEvent]]:
        """Inside the commit: drop each over-full sink's oldest ordinary deliveries."""
        shed: list[tuple[str, AlertEvent]] = []
        for sink in self._sinks:
            over = self._depth[sink] + new - self._max
            if over <= 0:
                continue
            rows = self._db.execute(
                "SELECT d.seq, e.body FROM deliveries d JOIN events e ON e.seq = d.seq "
                "WHERE d.sink = ? AND d.life_safety = 0 ORDER BY d.seq LIMIT ?",
                (sink, over),
            ).fetchall()
            seqs = [int(seq) for seq, _ in rows]
            drop = [(sink, q) for q in seqs]
            self._db.executemany("DELETE FROM deliveries WHERE sink = ? AND seq = ?", drop)
            self._forget_unneeded(seqs)
            shed.extend((sink, decode_event(bytes(body))) for _, body in rows)
        return shed

    def _report_shed(self, shed: list[tuple[str, AlertEvent]]) -> None:
        if shed and threading.get_ident() == self._writer_thread:
            with self._shed_lock:
                self._deferred_shed += shed  # reported by `run_in_writer`, on the loop
            return
        for sink, event in shed:
            self._metrics.outbox_shed.labels(sink).inc()
            if self._on_shed is not None:
                self._on_shed(event, sink, f"shed: sink {sink} had more than {self._max} events waiting")

    def _forget_unneeded(self, seqs: Sequence[int]) -> None:
        """Delete the events of `seqs` that no sink (configured or not) still waits for."""
        self._db.executemany(
            "DELETE FROM events WHERE seq = ? AND NOT EXISTS (SELECT 1 FROM deliveries WHERE seq = ?)",
            [(s, s) for s in seqs],
        )

    def snapshot(self) -> bytes | None:
        """The last saved engine state, if any: its file, else the row an older sensord
        kept in the database."""
        saved = self.snapshots.load()
        if saved is not None:
            return saved
        with self._lock:
            row = self._db.execute("SELECT body FROM engine_snapshot WHERE id = 1").fetchone()
        return bytes(row[0]) if row else None

    def dispatch_state(self) -> list[tuple[str, bytes]]:
        """The dispatch stage's state rows (key, body), as committed."""
        with self._lock:
            return [(str(k), bytes(b)) for k, b in self._db.execute("SELECT key, body FROM dispatch_state")]

    def stream_clock(self) -> float | None:
        """The event-time clock after the last committed batch, if any."""
        with self._lock:
            row = self._db.execute("SELECT at FROM stream_clock WHERE id = 1").fetchone()
        return float(row[0]) if row else None

    def active_rows(self) -> list[bytes]:
        """The checkpointed pending/firing alerts."""
        with self._lock:
            return [bytes(r[0]) for r in self._db.execute("SELECT body FROM active_alerts")]

    def due(self, sink: str, limit: int) -> list[tuple[int, AlertEvent]]:
        """The next events for this sink: every life-safety event first, then in commit
        order (so the events of one alert keep their order: life-safety is a rule's
        property, the same for all of them)."""
        try:
            rows = self._reader.execute(
                "SELECT d.seq, e.body FROM deliveries d JOIN events e ON e.seq = d.seq "
                "WHERE d.sink = ? ORDER BY d.life_safety DESC, d.seq LIMIT ?",
                (sink, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox read failed: {exc}") from None
        return [(int(seq), decode_event(bytes(body))) for seq, body in rows]

    def ack(self, sink: str, seqs: Sequence[int]) -> None:
        """This sink has these events; delete events no sink still needs."""
        if not seqs:
            return
        with self._tx():
            cur = self._db.executemany(
                "DELETE FROM deliveries WHERE sink = ? AND seq = ?", [(sink, s) for s in seqs]
            )
            # Only rows still there count: a delivery shed while it was being sent is
            # already gone, and counting it again would drift the depth below the truth.
            gone = max(cur.rowcount, 0)
            self._forget_unneeded(seqs)
            if sink in self._depth:
                self._depth[sink] -= gone

    def depth(self, sink: str) -> int:
        """Events this sink has not yet taken."""
        return self._depth.get(sink, 0)

    def waiting_life_safety(self, sink: str) -> int:
        """Life-safety events (or messages, for a channel) this sink has not yet taken."""
        return self._scalar(
            "SELECT (SELECT COUNT(*) FROM deliveries WHERE sink = ? AND life_safety = 1)"
            " + (SELECT COUNT(*) FROM notices WHERE sink = ? AND life_safety = 1)",
            sink,
            sink,
        )

    def queues(self) -> list[SinkQueue]:
        """Every sink with deliveries waiting (configured or not), and every configured one."""
        with self._lock:
            rows = self._db.execute(
                "SELECT d.sink, COUNT(*), SUM(d.life_safety), MIN(e.created) FROM deliveries d "
                "JOIN events e ON e.seq = d.seq GROUP BY d.sink "
                "UNION ALL SELECT sink, COUNT(*), SUM(life_safety), MIN(created) FROM notices GROUP BY sink"
            ).fetchall()
        known = (*self._sinks, *self._channels)
        found = {
            str(r[0]): SinkQueue(str(r[0]), int(r[1]), int(r[2]), float(r[3]), configured=r[0] in known)
            for r in rows
        }
        for sink in (*self._sinks, *self._channels):
            found.setdefault(sink, SinkQueue(sink, 0, 0, None, configured=True))
        return sorted(found.values(), key=lambda q: q.sink)

    def purge(self, sink: str) -> int:
        """Drop every delivery of `sink` (an operator's decision for a removed sink) and
        the events nobody else waits for. Returns how many deliveries were dropped."""
        with self._tx():
            seqs = [int(r[0]) for r in self._db.execute("SELECT seq FROM deliveries WHERE sink = ?", (sink,))]
            self._db.execute("DELETE FROM deliveries WHERE sink = ?", (sink,))
            self._forget_unneeded(seqs)
            notices = self._db.execute("DELETE FROM notices WHERE sink = ?", (sink,)).rowcount
            if sink in self._depth:
                self._depth[sink] = 0
        self.orphaned.pop(sink, None)
        return len(seqs) + max(notices, 0)

    def close(self) -> None:
        self.finish_writes()  # a write under way finishes first
        self.snapshots.finish()
        with self._lock:
            self._reader.close()
            self._db.close()
