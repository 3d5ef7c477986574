"""`sensord audit`: who changed what, read from the outbox database (read-only, so it
works while the daemon runs and can never write the log it shows)."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

import orjson

from sensord._errors import ConfigError, OutboxError
from sensord._settings import load_settings
from sensord._since import parse_since
from sensord.outbox import AuditEntry, read_only_store

# Enough for years of a community's actions; the log itself is never trimmed.
_LIMIT = 10_000_000


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="who accepted, closed or silenced what, and from where")
    audit.add_argument("-c", "--config", type=Path, required=True)
    audit.add_argument("--since", help="7d, 12h, or ISO 8601 with a zone (2026-12-01T00:00+08:00)")
    audit.add_argument("--json", action="store_true", help="one JSON object per entry")


def audit_command(args: argparse.Namespace, *, now: float | None = None) -> int:
    now = time.time() if now is None else now
    try:
        since = None if args.since is None else parse_since(args.since, now)
        settings = load_settings(args.config)
        entries = read_audit(settings.data_path(settings.outbox.path), since)
    except (ConfigError, OutboxError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for e in entries:
        print(orjson.dumps(_record(e)).decode() if args.json else _line(e))
    return 0


def read_audit(path: Path, since: float | None) -> list[AuditEntry]:
    """The audit entries at or after `since`, oldest first, from a read-only connection."""
    with read_only_store(path) as store:
        return store.audit(since, _LIMIT)


def _record(e: AuditEntry) -> dict[str, object]:
    return {"seq": e.seq, "at": e.at, "who": e.who, "role": e.role, "action": e.action, "target": e.target,
            "remote": e.remote, "detail": e.detail}  # fmt: skip


def _line(e: AuditEntry) -> str:
    when = datetime.fromtimestamp(e.at).astimezone().isoformat(timespec="seconds")
    # Only what was said: empty notes and defaults would drown the line.
    detail = {k: v for k, v in e.detail.items() if v not in (None, "", [], {})}
    return "\t".join((when, e.who, e.role, e.action, e.target, e.remote, orjson.dumps(detail).decode()))
