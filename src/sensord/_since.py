"""`--since` of the operator commands (kpi, audit): a span back from now, or an ISO time."""

from __future__ import annotations

from datetime import datetime

from sensord.rules._spec import parse_duration


def parse_since(text: str, now: float) -> float:
    """Event time from `--since`: now minus a span (7d), or an ISO date or time."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: neither a span (7d, 24h) nor an ISO date (2026-12-01)") from None
    return when.timestamp()  # a naive time is this machine's local time
