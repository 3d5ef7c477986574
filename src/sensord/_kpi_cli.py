"""`sensord kpi`: response times and closure rate of the work orders in the outbox.

Reads the outbox database read-only (beside a running daemon: WAL lets it), so a KPI
report can never change a work order or hold up a batch.
"""

from __future__ import annotations

import argparse
import sys
import time
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson

from sensord._errors import ConfigError, OutboxError
from sensord._settings import load_settings
from sensord._since import parse_since
from sensord.outbox import read_only_store
from sensord.workorders import ALL, GROUPINGS, Kpi, WorkOrder, kpis

HEAD = (
    "orders", "taken", "done", "auto", "open", "closure",
    "accept p50", "accept p90", "done p50", "done p90", "breaches a/d", "rating",
)  # fmt: skip


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kpi = sub.add_parser("kpi", help="work-order response times, closure rate (办结率) and breaches")
    kpi.add_argument("-c", "--config", type=Path, required=True, help="config file (YAML)")
    kpi.add_argument(
        "--since",
        default="7d",
        help="work orders opened since: a span back from now (7d, 24h) or an ISO date or time "
        "(2026-12-01, 2026-12-01T08:00+08:00; without a zone: this machine's local time)",
    )
    kpi.add_argument("--by", choices=tuple(GROUPINGS), help="one row per group (and a total)")
    kpi.add_argument("--html", type=Path, metavar="DIR", help="also write DIR/index.html with plots")
    kpi.add_argument("--json", action="store_true", help="print the figures as JSON (times in seconds)")


def kpi_command(args: argparse.Namespace, *, now: float | None = None) -> int:
    now = time.time() if now is None else now
    try:
        since = parse_since(args.since, now)
        settings = load_settings(args.config)
        orders = read_work_orders(settings.data_path(settings.outbox.path), since)
    except (ConfigError, OutboxError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    total = kpis(orders)[0]
    groups = kpis(orders, args.by) if args.by else [total]
    note = _note(orders, since, args.by)
    if args.json:
        out = {"since": since, "by": args.by, "groups": [k.figures() for k in groups], ALL: total.figures()}
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        print(note)
        print(_render(table(groups, total, args.by)))
    if args.html is not None:
        from sensord.report import write_kpi_report  # noqa: PLC0415 - the report pulls in replay and rules

        index = write_kpi_report(args.html, groups, table(groups, total, args.by), note=note)
        print(f"wrote {index}", file=sys.stderr if args.json else sys.stdout)
    return 0


def read_work_orders(path: Path, since: float) -> list[WorkOrder]:
    """The work orders opened at or after `since`, from the outbox opened read-only."""
    with read_only_store(path) as store:
        bodies = store.all_bodies(since)
    return [WorkOrder.decode(b) for b in bodies]


def table(groups: Sequence[Kpi], total: Kpi, by: str | None) -> list[list[str]]:
    """A header row, a row per group and, when grouped, the total: as printed."""
    rows = [[by or "group", *HEAD]] + [_row(k) for k in groups]
    return [*rows, _row(total)] if by else rows


def _row(k: Kpi) -> list[str]:
    closure = f"{k.closure_rate * 100:.1f} %" if k.closure_rate is not None else "-"
    rating = f"{k.mean_rating:.1f} ({k.rated})" if k.mean_rating is not None else "-"
    counts = (k.work_orders, k.accepted, k.done, k.auto_resolved, k.open)
    times = (k.accept_p50, k.accept_p90, k.done_p50, k.done_p90)
    breaches = f"{k.accept_breaches}/{k.done_breaches}"
    return [k.group, *map(str, counts), closure, *map(span, times), breaches, rating]


def span(seconds: float | None) -> str:
    """A response time as people say it: 45 s, 12 min, 3.5 h, 2.1 d."""
    if seconds is None:
        return "-"
    if seconds < 2 * 60:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _render(rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned: the first to the left, numbers to the right (CJK counts double)."""
    widths = [max(_width(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        first = r[0] + " " * (widths[0] - _width(r[0]))
        rest = ["  " + " " * (w - _width(c)) + c for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append((first + "".join(rest)).rstrip())
    return "\n".join(lines)


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _note(orders: Sequence[WorkOrder], since: float, by: str | None) -> str:
    grouped = f", by {by}" if by else ""
    return f"{len(orders)} work orders opened since {_when(since)} (event time){grouped}."
