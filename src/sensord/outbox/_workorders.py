"""Work orders and the audit log, in the outbox database.

A work order's row is written in the same transaction as the batch (or the API action)
that changed it, with the notices that tell people about it: after a crash the work
order, its history and its escalation timer are exactly as last committed.

The audit log is append-only: triggers refuse every UPDATE and DELETE, so not even a
defect in sensord can rewrite who did what.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from sensord._errors import OutboxError

SCHEMA = """
CREATE TABLE IF NOT EXISTS work_orders (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    community TEXT NOT NULL,
    grid TEXT NOT NULL,
    family TEXT NOT NULL,
    rule TEXT NOT NULL,
    life_safety INTEGER NOT NULL,
    opened_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    body BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS work_orders_list ON work_orders (life_safety DESC, opened_at);
CREATE INDEX IF NOT EXISTS work_orders_state ON work_orders (state, community, grid);
-- A list by state in the list's order (the console's open work orders) without a sort.
CREATE INDEX IF NOT EXISTS work_orders_state_list ON work_orders (state, life_safety DESC, opened_at);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail BLOB NOT NULL,
    remote TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
-- One-tap links used: each allows one action once.
CREATE TABLE IF NOT EXISTS used_links (
    id TEXT PRIMARY KEY,
    at REAL NOT NULL
) WITHOUT ROWID;
"""

# Work orders that still need something: loaded at start, the rest stay on disk.
_UNFINISHED = ("dispatched", "accepted", "done", "reopened", "rejected")


@dataclass(frozen=True, slots=True)
class WorkOrderRow:
    """A work order as stored: the columns lists filter on, and its whole body."""

    id: str
    state: str
    community: str
    grid: str
    family: str
    rule: str
    life_safety: bool
    opened_at: float
    updated_at: float
    body: bytes


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who changed what, when (wall clock) and from where."""

    at: float
    who: str
    role: str
    action: str
    target: str
    detail: dict[str, Any]
    remote: str
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Filter:
    """A list query: every field given must match."""

    state: Sequence[str] = ()
    community: str | None = None
    grid: str | None = None
    family: str | None = None
    since: float | None = None  # opened at or after (event time)
    limit: int = 100
    offset: int = 0


class WorkOrderStore:
    """The work_orders, audit and used_links tables on the outbox's connection."""

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

    def write(self, rows: Sequence[WorkOrderRow], audit: Sequence[AuditEntry]) -> None:
        """Inside a commit: the changed work orders and the audit entries."""
        if rows:
            self._db.executemany(
                "INSERT OR REPLACE INTO work_orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.id, r.state, r.community, r.grid, r.family, r.rule, int(r.life_safety), r.opened_at,
                  r.updated_at, r.body) for r in rows],
            )  # fmt: skip
        if audit:
            self._db.executemany(
                "INSERT INTO audit (at, who, role, action, target, detail, remote) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(a.at, a.who, a.role, a.action, a.target, orjson.dumps(a.detail), a.remote) for a in audit],
            )

    def use_link(self, link_id: str, at: float) -> bool:
        """Inside a commit: mark a one-tap link used. False if it was used before."""
        cur = self._db.execute("INSERT OR IGNORE INTO used_links VALUES (?, ?)", (link_id, at))
        return cur.rowcount > 0

    def link_used(self, link_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM used_links WHERE id = ?", (link_id,)))

    def get(self, wo_id: str) -> bytes | None:
        row = self._read("SELECT body FROM work_orders WHERE id = ?", (wo_id,))
        return bytes(row[0][0]) if row else None

    def unfinished(self) -> list[bytes]:
        marks = ",".join("?" * len(_UNFINISHED))
        rows = self._read(f"SELECT body FROM work_orders WHERE state IN ({marks})", _UNFINISHED)  # noqa: S608
        return [bytes(r[0]) for r in rows]

    def unfinished_rows(self) -> list[WorkOrderRow]:
        """Unfinished work orders with their columns (a handover moves them by community)."""
        marks = ",".join("?" * len(_UNFINISHED))
        rows = self._read(
            "SELECT id, state, community, grid, family, rule, life_safety, opened_at, updated_at, body "  # noqa: S608
            f"FROM work_orders WHERE state IN ({marks})",
            _UNFINISHED,
        )
        return [
            WorkOrderRow(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), bool(r[6]),
                         float(r[7]), float(r[8]), bytes(r[9]))
            for r in rows
        ]  # fmt: skip

    def remove(self, ids: Sequence[str]) -> None:
        """Inside a commit: forget these work orders here (handed to another instance,
        which keeps them from now on; the audit log keeps what happened here)."""
        self._db.executemany("DELETE FROM work_orders WHERE id = ?", [(i,) for i in ids])

    def query(self, f: Filter) -> tuple[list[bytes], int]:
        """Matching work orders, life-safety first then oldest first, and how many match."""
        where, args = ["1"], list[object]()
        if f.state:
            where.append(f"state IN ({','.join('?' * len(f.state))})")
            args += list(f.state)
        for col, value in (("community", f.community), ("grid", f.grid), ("family", f.family)):
            if value is not None:
                where.append(f"{col} = ?")
                args.append(value)
        if f.since is not None:
            where.append("opened_at >= ?")
            args.append(f.since)
        cond = " AND ".join(where)
        total = int(self._read(f"SELECT COUNT(*) FROM work_orders WHERE {cond}", args)[0][0])  # noqa: S608
        rows = self._read(
            f"SELECT body FROM work_orders WHERE {cond} "  # noqa: S608 - only column names are formatted
            "ORDER BY life_safety DESC, opened_at, id LIMIT ? OFFSET ?",
            [*args, f.limit, f.offset],
        )
        return [bytes(r[0]) for r in rows], total

    def places(self, states: Sequence[str]) -> list[tuple[str, str, int]]:
        """(community, grid, how many) of the work orders in these states, by place."""
        marks = ",".join("?" * len(states))
        rows = self._read(
            f"SELECT community, grid, COUNT(*) FROM work_orders WHERE state IN ({marks}) "  # noqa: S608
            "GROUP BY community, grid ORDER BY community, grid",
            list(states),
        )
        return [(str(c), str(g), int(n)) for c, g, n in rows]

    def all_bodies(self, since: float | None = None) -> list[bytes]:
        """Every work order opened at or after `since` (KPIs)."""
        rows = self._read("SELECT body FROM work_orders WHERE opened_at >= ?", (since or 0.0,))
        return [bytes(r[0]) for r in rows]

    def audit(self, since: float | None = None, limit: int = 1000) -> list[AuditEntry]:
        rows = self._read(
            "SELECT seq, at, who, role, action, target, detail, remote FROM audit WHERE at >= ? "
            "ORDER BY seq LIMIT ?",
            (since or 0.0, limit),
        )
        return [
            AuditEntry(float(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), orjson.loads(r[6]), str(r[7]),
                       seq=int(r[0]))
            for r in rows
        ]  # fmt: skip

    def _read(self, sql: str, args: Sequence[object]) -> list[Any]:
        try:
            with self._lock:
                return self._db.execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox read failed: {exc}") from None


@contextlib.contextmanager
def read_only_store(path: Path) -> Iterator[WorkOrderStore]:
    """The work-order tables of an outbox on a read-only connection, for the operator
    commands (`sensord kpi`, `sensord audit`): they work while the daemon writes."""
    if not path.is_file():
        raise OutboxError(f"no outbox database at {path} (has the daemon run with this config?)")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise OutboxError(f"cannot open {path} read-only: {exc}") from None
    try:
        # Never written through: a read-only connection has no transaction to take.
        yield WorkOrderStore(db, contextlib.nullcontext)
    finally:
        db.close()
