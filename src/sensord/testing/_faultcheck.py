"""Judging a fault-injection run: what the webhook receiver got against what an offline
replay of the published stream says a daemon that never failed would have sent.

An alert transition is identified by (rule, device, status, startsAt): the same
transition must never arrive under two webhook ids, and per fingerprint the events must
arrive in event-time order (never a `resolved` before its `firing`).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sensord._types import AlertEvent
from sensord.testing._servers import Received

# (rule, device, status, startsAt): one alert transition.
Key = tuple[str, str, str, str]


def _iso(ts: float | None) -> str:
    # As the webhook body writes it.
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_key(e: AlertEvent) -> Key:
    return (e.rule, e.device_id, e.status.value, _iso(e.starts_at))


@dataclass(frozen=True)
class Delivery:
    """One request the receiver answered 200, reduced to what the checks need."""

    event_id: str
    key: Key
    fingerprint: str
    event_time: str
    life_safety: bool
    at: float  # time.monotonic() of the answer

    @classmethod
    def of(cls, r: Received) -> Delivery:
        b = r.body
        key = (str(b["rule"]), str(b["device"]), str(b["status"]), str(b["startsAt"]))
        return cls(r.headers["webhook-id"], key, str(b["fingerprint"]), str(b["eventTime"]),
                   bool(b["lifeSafety"]), r.at)


@dataclass
class Findings:
    """The figures of one run; `problems()` lists every broken promise in words."""

    expected: int = 0
    expected_ls: int = 0
    delivered: int = 0
    distinct_ids: int = 0
    missing_ls: list[Key] = field(default_factory=list)
    missing: list[Key] = field(default_factory=list)
    unexpected: list[Key] = field(default_factory=list)
    unexpected_ls: list[Key] = field(default_factory=list)
    repeated_ids: int = 0  # one id delivered (answered 200) more than once
    two_ids: list[Key] = field(default_factory=list)
    out_of_order: list[tuple[Key, Key]] = field(default_factory=list)
    ls_waits: list[float] = field(default_factory=list)
    ls_after_ordinary: int = 0  # waiting LS events received after a waiting ordinary one
    waiting_ls: int = 0
    waiting_ordinary: int = 0

    @property
    def resurrected(self) -> list[Key]:
        """Transitions to `resolved` delivered under two ids: an alert that came back."""
        return [k for k in self.two_ids if k[2] == "resolved"]

    def problems(self, *, exact: bool, resend_ok: bool = False) -> list[str]:
        """Broken promises. `exact`: every reference event must arrive and nothing else
        (no crash of the daemon); otherwise only life-safety is held to the reference.
        `resend_ok`: a delivery repeated under its own id is allowed (a daemon killed
        between a webhook's answer and recording it sends that event again)."""
        out: list[str] = []

        def add(what: str, items: Sequence[object]) -> None:
            if items:
                out.append(f"{len(items)} {what}, e.g. {list(items)[:5]}")

        add("life-safety transitions never delivered", self.missing_ls)
        add("life-safety transitions delivered that the reference does not have", self.unexpected_ls)
        add("transitions delivered under two webhook ids", self.two_ids)
        add("pairs of one fingerprint's events delivered out of event-time order", self.out_of_order)
        if self.ls_after_ordinary:
            out.append(
                f"{self.ls_after_ordinary} of {self.waiting_ls} waiting life-safety events arrived after an "
                f"ordinary event that was waiting at recovery ({self.waiting_ordinary} ordinary waiting)"
            )
        if exact:
            add("transitions never delivered", self.missing)
            add("transitions delivered that the reference does not have", self.unexpected)
            if self.repeated_ids and not resend_ok:
                out.append(f"{self.repeated_ids} webhook ids delivered more than once")
        return out

    def row(self) -> dict[str, object]:
        """The figures as one table row."""
        waits = self.ls_waits
        return {
            "events": self.expected,
            "LS events": self.expected_ls,
            "delivered": self.delivered,
            "missing LS": len(self.missing_ls),
            "missing": len(self.missing),
            "two ids": len(self.two_ids),
            "resurrected": len(self.resurrected),
            "out of order": len(self.out_of_order),
            "LS wait max s": round(max(waits), 1) if waits else "-",
            "LS wait med s": round(statistics.median(waits), 1) if waits else "-",
            "LS behind ordinary": self.ls_after_ordinary,
        }


def _order_rank(d: Delivery) -> tuple[str, int]:
    return (d.event_time, 0 if d.key[2] == "firing" else 1)


def judge(
    received: Iterable[Received], reference: Sequence[AlertEvent], *, recovered_at: float | None = None
) -> Findings:
    """Compare the receiver's 200-answered deliveries (in arrival order) with the reference.
    `recovered_at` (time.monotonic()): the moment the sinks came back; every event not yet
    delivered then was waiting, and its life-safety ones must all arrive first."""
    got = sorted((Delivery.of(r) for r in received if r.valid and r.answered == 200), key=lambda d: d.at)
    f = Findings(len(reference), sum(e.life_safety for e in reference), len(got))
    ref_keys = {event_key(e) for e in reference}
    ref_ls = {event_key(e) for e in reference if e.life_safety}
    ids_per_key: dict[Key, set[str]] = defaultdict(set)
    seen_ids: set[str] = set()
    for d in got:
        ids_per_key[d.key].add(d.event_id)
        f.repeated_ids += d.event_id in seen_ids
        seen_ids.add(d.event_id)
    f.distinct_ids = len(seen_ids)
    delivered_keys = set(ids_per_key)
    f.missing_ls = sorted(ref_ls - delivered_keys)
    f.missing = sorted(ref_keys - delivered_keys)
    f.unexpected = sorted(delivered_keys - ref_keys)
    ls_keys = {d.key for d in got if d.life_safety}
    f.unexpected_ls = sorted((delivered_keys - ref_keys) & ls_keys)
    f.two_ids = sorted(k for k, ids in ids_per_key.items() if len(ids) > 1)
    f.out_of_order = _out_of_order(got)
    if recovered_at is not None:
        _after_recovery(f, got, recovered_at)
    return f


def _out_of_order(got: Sequence[Delivery]) -> list[tuple[Key, Key]]:
    """Consecutive deliveries of one fingerprint whose event time (then firing before
    resolved) goes backwards. A repeated delivery of one id is not an order problem."""
    last: dict[str, Delivery] = {}
    seen: set[str] = set()
    bad: list[tuple[Key, Key]] = []
    for d in got:
        if d.event_id in seen:
            continue
        seen.add(d.event_id)
        prev = last.get(d.fingerprint)
        if prev is not None and _order_rank(d) < _order_rank(prev):
            bad.append((prev.key, d.key))
        else:
            last[d.fingerprint] = d
    return bad


def _after_recovery(f: Findings, got: Sequence[Delivery], recovered_at: float) -> None:
    delivered_before = {d.event_id for d in got if d.at < recovered_at}
    waiting = [d for d in got if d.at >= recovered_at and d.event_id not in delivered_before]
    first: dict[str, Delivery] = {}
    for d in waiting:
        first.setdefault(d.event_id, d)
    ls = [d for d in first.values() if d.life_safety]
    ordinary = [d for d in first.values() if not d.life_safety]
    f.waiting_ls, f.waiting_ordinary = len(ls), len(ordinary)
    f.ls_waits = [d.at - recovered_at for d in ls]
    if ordinary:
        first_ordinary = min(d.at for d in ordinary)
        f.ls_after_ordinary = sum(d.at > first_ordinary for d in ls)
