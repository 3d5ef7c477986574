"""`sensord silence add|list|expire`: maintenance windows, kept in the outbox database
beside the daemon (which applies a change at its next batch or idle tick)."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sensord._errors import ConfigError, OutboxError
from sensord._metrics import Metrics
from sensord._settings import load_settings
from sensord.dispatch import max_silence, silence_terms
from sensord.outbox import Outbox, SilenceRow


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    silence = sub.add_parser("silence", help="maintenance windows: hold alerts back for a while")
    cmds = silence.add_subparsers(dest="silence_command", required=True)
    add = cmds.add_parser("add", help="silence the alerts matching every --match for --for")
    add.add_argument("-c", "--config", type=Path, required=True)
    add.add_argument("--match", action="append", required=True, metavar='K=V or K=~"RE"', help="repeatable")
    add.add_argument(
        "--for", dest="duration", required=True, help="how long: 30m, 2h, 1d (at most max_silence)"
    )
    add.add_argument(
        "--from",
        dest="start",
        help="when it starts: ISO 8601 with a zone, e.g. 2026-12-05T22:00+08:00 (default: now)",
    )
    add.add_argument("--by", required=True, help="who silences (kept and listed)")
    add.add_argument("--comment", required=True, help="why (kept and listed)")
    add.add_argument(
        "--life-safety", action="store_true", help="also hold life-safety alerts (needs --reason)"
    )
    add.add_argument("--reason", default="", help="why life-safety alerts may be held")
    ls = cmds.add_parser("list", help="every silence: active, pending and expired, with who and why")
    ls.add_argument("-c", "--config", type=Path, required=True)
    expire = cmds.add_parser("expire", help="end a silence now (it stays listed)")
    expire.add_argument("-c", "--config", type=Path, required=True)
    expire.add_argument("id", type=int)


def silence_command(args: argparse.Namespace, *, now: float | None = None) -> int:
    now = time.time() if now is None else now
    try:
        settings = load_settings(args.config)
        outbox = Outbox(settings.data_path(settings.outbox.path), (), settings.outbox, Metrics())
    except (ConfigError, OutboxError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        if args.silence_command == "list":
            for row in outbox.silences.all():
                print(_line(row, now))
            return 0
        if args.silence_command == "expire":
            if not outbox.silences.expire(args.id, at=now):
                print(f"error: no active or pending silence {args.id}", file=sys.stderr)
                return 1
            print(f"silence {args.id} expired")
            return 0
        from sensord._shard_cli import refuse_foreign_silence  # noqa: PLC0415

        refuse_foreign_silence(settings, args.match)
        return _add(args, outbox, now, max_silence(settings))
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        outbox.close()


def _add(args: argparse.Namespace, outbox: Outbox, now: float, max_s: float) -> int:
    if not args.by.strip() or not args.comment.strip():
        raise ValueError("--by and --comment must say who and why")
    start = now if args.start is None else _parse_start(args.start)
    terms = silence_terms(
        args.match, args.duration, start=start, max_s=max_s, comment=args.comment,
        life_safety=args.life_safety, reason=args.reason,
    )  # fmt: skip
    sid = outbox.silences.add(
        terms.matchers,
        starts_at=terms.starts_at,
        ends_at=terms.ends_at,
        created_by=args.by.strip(),
        comment=terms.comment,
        life_safety=terms.life_safety,
        reason=terms.reason,
    )
    shown = ", ".join(terms.matchers)
    print(f"silence {sid} from {_when(terms.starts_at)} until {_when(terms.ends_at)}: {shown}")
    if args.life_safety:
        print(
            "warning: this silence also holds life-safety alerts; the daemon logs each one it holds",
            file=sys.stderr,
        )
    return 0


def _parse_start(text: str) -> float:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--from {text!r} is not an ISO 8601 time (2026-12-05T22:00+08:00)") from None
    if when.tzinfo is None:
        raise ValueError(f"--from {text!r} needs a zone (+08:00 or Z): local time is ambiguous")
    return when.timestamp()


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _line(row: SilenceRow, now: float) -> str:
    state = "active" if row.active(now) else ("pending" if now < row.starts_at else "expired")
    ls = f" LIFE-SAFETY ({row.reason})" if row.life_safety else ""
    return (
        f"{row.id}\t{state}\t{_when(row.starts_at)} .. {_when(row.ends_at)}\t{', '.join(row.matchers)}\t"
        f"by {row.created_by} at {_when(row.created_at)}: {row.comment}{ls}"
    )
