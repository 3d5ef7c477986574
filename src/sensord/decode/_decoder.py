"""Batched decode: a list of raw messages → one columnar FamilyBatch per family + rejects.

Per message, only what must be per message happens in Python: size check, the topic's
route (cached), the JSON decode and the timestamp. The common payload is decoded by
msgspec straight into a typed struct (decode/_typed.py); anything else goes the generic
way (orjson, then checks) that words every reject reason. Type, range and required-field
checks run per column over the whole batch with numpy. A bad message never affects the
others: it becomes a `Reject` with a reason label (for the metric) and a detail a person
can act on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import numpy.typing as npt
import orjson

from sensord._errors import DecodeError
from sensord._types import Family, RawMessage, Reject
from sensord.decode._batch import FamilyBatch
from sensord.decode._schemas import FieldSpec, field_specs
from sensord.decode._topic import TopicTemplate
from sensord.decode._typed import TS, TypedPayload

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sensord._registry import Device, Registry
    from sensord._settings import DecodeSettings

# What one cached route costs beside its topic text: the dict slot, the tuple, the str header.
_ROUTE_OVERHEAD_BYTES = 200
# Reject reasons of a registered device another instance serves (see _app._elsewhere).
ELSEWHERE = frozenset({"not_this_shard", "handed_over"})
# Remembered topics of other instances' devices: a device's topics vary only in {kind}.
_MAX_SKIP_TOPICS = 200_000
_FAMILIES = {f.value: f for f in Family}
_NUMBER_TYPES: frozenset[type] = frozenset({int, float, type(None)})
_BOOL_TYPES: frozenset[type] = frozenset({bool, type(None)})


@dataclass
class DecodeResult:
    """What one batch decoded into."""

    batches: dict[Family, FamilyBatch] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)
    unknown: dict[Family, list[str]] = field(default_factory=dict)
    accepted: int = 0
    skipped: int = 0  # another instance's messages (shard.subscribe: all)


# One accepted message of a family before column checks: the message, its device index,
# its time and its payload struct (decode/_typed.py).
_Row = tuple[RawMessage, int, float, msgspec.Struct]


@dataclass
class _Accepted:
    """A batch's accepted-so-far messages per family, before column checks."""

    # Families in the order they first appear: the engine takes them in this order.
    rows: dict[Family, list[_Row]] = field(default_factory=dict)
    # Families with a row read the generic way: its values' types are not checked yet.
    untyped: set[Family] = field(default_factory=set)

    def add(self, family: Family, row: _Row) -> None:
        r = self.rows.get(family)
        if r is None:  # not setdefault: that would build a throw-away list per message
            r = self.rows[family] = []
        r.append(row)


def shown(value: object, limit: int = 40) -> str:
    """A value for a reject reason: never recursive (a payload may nest 1,000 levels deep)
    and never long."""
    if value is None or isinstance(value, bool | int | float | str):
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 1] + "…"
    return f"a JSON {'object' if isinstance(value, dict) else 'array'}"


def depth_over(obj: object, limit: int) -> bool:
    """Does `obj` nest deeper than `limit` containers? Iterative: no recursion to exhaust."""
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _timestamp(value: object, received_at: float) -> float:
    """Reading time in epoch seconds; raises ValueError with the reason."""
    if value is None:
        return received_at
    if type(value) is int or type(value) is float:
        ts = float(value)
    elif isinstance(value, str):
        ts = datetime.fromisoformat(value).timestamp()
    else:
        raise ValueError(f"ts must be epoch seconds or RFC 3339 text, got {type(value).__name__}")
    if not math.isfinite(ts) or ts <= 0:
        raise ValueError(f"ts {shown(value)} is not a valid time")
    return ts


class Decoder:
    """Decode stage. Built once from the registry and settings; called once per batch."""

    def __init__(
        self,
        registry: Registry,
        settings: DecodeSettings,
        topic_template: str,
        *,
        elsewhere: Callable[[str], tuple[str, str] | None] | None = None,
        skip_elsewhere: bool = False,
    ) -> None:
        self._registry = registry
        # With a shard: why a device of the registry is not in this instance's part, as
        # (reject reason, detail naming its owner); None for a device of no instance.
        self.elsewhere = elsewhere
        # shard.subscribe: all. Every instance gets every message: another instance's are
        # skipped and counted, not rejected, and their topics remembered so each costs one
        # set lookup (whose they are changes only with the registry, which rebuilds this).
        self.skip_elsewhere = skip_elsewhere
        self._skip_topics: set[str] = set()
        self._settings = settings
        self._topic = TopicTemplate(topic_template)
        self.topic = self._topic
        self._specs = {f: field_specs(f) for f in Family}
        self._typed = {f: TypedPayload(f.value, specs) for f, specs in self._specs.items()}
        # Topic -> (family, registered device): a fleet sends the same topics all day, so
        # parsing and looking up each topic once saves work on every message.
        self._routes: dict[str, tuple[Family, Device]] = {}
        self._route_bytes = 0

    def device(self, device_id: str) -> Device | None:
        """The registered device with this id, if any."""
        return self._registry.get(device_id)

    def __call__(self, messages: Sequence[RawMessage]) -> DecodeResult:
        result = DecodeResult()
        accepted = _Accepted()
        rows = accepted.rows
        routes, typed = self._routes, self._typed
        limit, skew = self._settings.max_payload_bytes, self._settings.max_clock_skew_s
        skip = self._skip_topics
        for msg in messages:
            # The fast lane takes only a message that is certainly accepted: a known topic,
            # a typed payload, a plain epoch-seconds time not too far ahead. Any other
            # message takes the full path, which words every reject reason.
            route = routes.get(msg.topic)
            if route is None and msg.topic in skip:
                result.skipped += 1
                continue
            if route is not None and len(msg.payload) <= limit:
                family, device = route
                try:
                    payload = typed[family].decode(msg.payload)
                except msgspec.DecodeError:
                    pass
                else:
                    ts = payload.ts
                    plain = type(ts) is float and 0.0 < ts < math.inf
                    if plain and not (skew and ts > msg.received_at + skew):
                        r = rows.get(family)
                        if r is None:
                            r = rows[family] = []
                        r.append((msg, device.index, ts, payload))
                        continue
            self._one(msg, accepted, result)
        for family, r in rows.items():
            batch = self._columns(family, r, result.rejects, typed=family not in accepted.untyped)
            if len(batch):
                result.batches[family] = batch
                result.accepted += len(batch)
        return result

    def _one(self, msg: RawMessage, accepted: _Accepted, result: DecodeResult) -> None:
        reject = self._reject_reason(msg, accepted, result)
        if reject is not None:
            reason, detail = reject
            if self.skip_elsewhere and reason in ELSEWHERE:
                if len(self._skip_topics) >= _MAX_SKIP_TOPICS:
                    self._skip_topics.clear()  # a flood of made-up topics: start again
                self._skip_topics.add(msg.topic)
                result.skipped += 1
                return
            result.rejects.append(Reject(msg.topic, msg.payload, msg.received_at, reason, detail))

    def _reject_reason(
        self, msg: RawMessage, accepted: _Accepted, result: DecodeResult
    ) -> tuple[str, str] | None:
        limit = self._settings.max_payload_bytes
        if len(msg.payload) > limit:
            return "oversized", f"payload is {len(msg.payload)} bytes, limit {limit}"
        route = self._routes.get(msg.topic)
        if route is None:
            try:
                route = self._route(msg.topic, result)
            except DecodeError as exc:
                return exc.reason, exc.detail
        family, device = route
        typed = self._typed[family]
        try:
            payload = typed.decode(msg.payload)
            ts = _timestamp(payload.ts, msg.received_at)
        except (msgspec.DecodeError, ValueError):
            try:  # the generic path words the reason
                payload, ts = self._generic(typed, msg)
            except DecodeError as exc:
                return exc.reason, exc.detail
            accepted.untyped.add(family)
        skew = self._settings.max_clock_skew_s
        if skew and ts > msg.received_at + skew:
            return "future_timestamp", (
                f"ts is {ts - msg.received_at:.0f} s ahead of receive time (limit {skew:.0f} s); "
                "check the device clock"
            )
        accepted.add(family, (msg, device.index, ts, payload))
        return None

    def _generic(self, typed: TypedPayload, msg: RawMessage) -> tuple[msgspec.Struct, float]:
        """A payload the typed path did not take, read with orjson and checked: its
        struct and time. Raises DecodeError with the reason to reject it."""
        try:
            obj = orjson.loads(msg.payload)
        except orjson.JSONDecodeError as exc:
            if b"NaN" in msg.payload or b"Infinity" in msg.payload or "infinity" in str(exc):
                raise DecodeError("non_finite", f"NaN or infinite number in payload: {exc}") from None
            if "depth limit" in str(exc) or "recursion" in str(exc):
                detail = f"payload nests deeper than the JSON parser allows: {exc}"
                raise DecodeError("too_deep", detail) from None
            raise DecodeError("invalid_json", f"payload is not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise DecodeError("not_object", f"payload must be a JSON object, got {type(obj).__name__}")
        max_depth = self._settings.max_depth
        # Counting brackets is C-fast and bounds the depth; only a payload with more of
        # them than the limit (rare: flat objects have one) is walked.
        if msg.payload.count(b"{") + msg.payload.count(b"[") > max_depth and depth_over(obj, max_depth):
            detail = f"payload nests more than {max_depth} objects/arrays deep; send a flat object"
            raise DecodeError("too_deep", detail)
        try:
            ts = _timestamp(obj.get(TS), msg.received_at)
        except ValueError as exc:
            raise DecodeError("bad_timestamp", str(exc)) from None
        return typed.from_dict(obj), ts

    def _route(self, topic: str, result: DecodeResult) -> tuple[Family, Device]:
        """Parse and look up a topic not cached yet. Raises DecodeError to reject it; a
        device missing from the registry is also recorded in `result.unknown`."""
        limits = self._settings
        if len(topic) > limits.max_topic_chars:
            raise DecodeError("bad_topic", f"topic of {len(topic)} chars, limit {limits.max_topic_chars}")
        parts = self._topic.parse(topic)
        if parts is None:
            raise DecodeError("bad_topic", f"topic does not match {self._topic.template!r}")
        longest = max(len(parts.community), len(parts.family), len(parts.device_id), len(parts.kind))
        if longest > limits.max_topic_level_chars:
            raise DecodeError(
                "bad_topic", f"a topic level is {longest} characters, limit {limits.max_topic_level_chars}"
            )
        if parts.kind == "ack":
            # Acks used to come this way; a device (or a leaked gateway login) could close
            # its own SOS. Only the dispatch side's ack topics are taken now.
            raise DecodeError(
                "ack_on_device_topic",
                "acknowledgements are taken only from the dispatch side's topic (broker."
                "ack_topic_template), never from a device's own topics",
            )
        family = _FAMILIES.get(parts.family)
        if family is None:
            families = sorted(_FAMILIES)
            raise DecodeError("unknown_family", f"family {shown(parts.family)} is not one of {families}")
        known = self._registry.get(parts.device_id)
        if known is None and self.elsewhere is not None and (owner := self.elsewhere(parts.device_id)):
            raise DecodeError(*owner)
        if known is None:
            result.unknown.setdefault(family, []).append(parts.device_id)
            raise DecodeError(
                "unknown_device",
                f"device {shown(parts.device_id)} is not in the registry; register it, reload, and "
                "replay its dead letters (README: messages from unregistered devices)",
            )
        if known.family is not family:
            raise DecodeError(
                "family_mismatch",
                f"device {parts.device_id} is registered as {known.family}, topic says {family}",
            )
        cost = len(topic) + _ROUTE_OVERHEAD_BYTES
        if self._route_bytes + cost > limits.max_route_cache_bytes:
            self._routes.clear()  # a flood of made-up topics: start the cache again
            self._route_bytes = 0
        self._route_bytes += cost
        route = self._routes[topic] = (family, known)
        return route

    @property
    def route_cache_bytes(self) -> int:
        """The route cache's estimated size (topic text plus per-entry overhead)."""
        return self._route_bytes

    def _columns(self, family: Family, r: list[_Row], rejects: list[Reject], *, typed: bool) -> FamilyBatch:
        """The family's columns, checked. `typed`: every row came the typed way, so its
        values are already of their column's type (range and presence are still checked)."""
        n = len(r)
        msgs, device, ts, payloads = zip(*r, strict=True)
        bad: dict[int, tuple[str, str]] = {}
        columns: dict[str, npt.NDArray[np.float64]] = {}
        present = np.zeros(n, dtype=bool)
        # The transpose runs in C: no Python loop over the rows per field. `ts` comes
        # last and is left out (the rows carry it checked).
        by_field = self._typed[family].by_field(payloads)
        for spec, values in zip(self._specs[family], by_field, strict=False):
            col = _column(spec, values, bad, typed=typed)
            columns[spec.name] = col
            present |= ~np.isnan(col)
        for j in np.flatnonzero(~present):
            bad.setdefault(int(j), ("no_known_fields", f"no {family} field in payload"))
        keep = np.ones(n, dtype=bool)
        for i, (reason, detail) in sorted(bad.items()):
            keep[i] = False
            m = msgs[i]
            rejects.append(Reject(m.topic, m.payload, m.received_at, reason, detail))
        batch = FamilyBatch(
            family,
            np.asarray(device, dtype=np.int64),
            np.asarray(ts, dtype=np.float64),
            np.fromiter((m.received_at for m in msgs), dtype=np.float64, count=n),
            columns,
        )
        return batch if keep.all() else batch.take(np.flatnonzero(keep))


def _column(
    spec: FieldSpec, values: Sequence[Any], bad: dict[int, tuple[str, str]], *, typed: bool = False
) -> npt.NDArray[np.float64]:
    """One field over the batch as float64; bad rows are recorded in `bad`, first reason wins."""
    if spec.kind == "enum":
        col = _enum_column(spec, values, bad)
    else:
        allowed = _BOOL_TYPES if spec.kind == "bool" else _NUMBER_TYPES
        if typed or set(map(type, values)) <= allowed:
            col = np.array(values, dtype=np.float64)
        else:
            col = _slow_column(spec, values, allowed, bad)
        _check_range(spec, col, bad)
    if spec.required:
        for i in np.flatnonzero(np.isnan(col)):
            bad.setdefault(int(i), ("missing_field", f"required field {spec.name!r} is missing"))
    return col


def _slow_column(
    spec: FieldSpec, values: Sequence[Any], allowed: frozenset[type], bad: dict[int, tuple[str, str]]
) -> npt.NDArray[np.float64]:
    col = np.full(len(values), np.nan)
    want = "true/false" if spec.kind == "bool" else "a number"
    for i, v in enumerate(values):
        if type(v) in allowed:
            col[i] = np.nan if v is None else float(v)
        else:
            bad.setdefault(i, ("wrong_type", f"{spec.name} must be {want}, got {shown(v)}"))
    return col


def _enum_column(
    spec: FieldSpec, values: Sequence[Any], bad: dict[int, tuple[str, str]]
) -> npt.NDArray[np.float64]:
    codes = {c: float(i) for i, c in enumerate(spec.choices)}
    col = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if v is None:
            continue
        code = codes.get(v) if isinstance(v, str) else None
        if code is None:
            bad.setdefault(
                i,
                ("invalid_value", f"{spec.name} must be one of {list(spec.choices)}, got {shown(v)}"),
            )
        else:
            col[i] = code
    return col


def _check_range(spec: FieldSpec, col: npt.NDArray[np.float64], bad: dict[int, tuple[str, str]]) -> None:
    with np.errstate(invalid="ignore"):
        low = col <= spec.lo if spec.lo_open else col < spec.lo
        out = low | (col > spec.hi)
        if spec.kind == "integer":
            out |= np.isfinite(col) & (col != np.floor(col))
    for i in np.flatnonzero(out):
        bad.setdefault(
            int(i),
            (
                "out_of_range",
                (
                    f"{spec.name}={col[i]:g} is outside the plausible range "
                    f"{spec.lo:g}..{spec.hi:g}{' (whole numbers)' if spec.kind == 'integer' else ''}; "
                    "check the sensor"
                ),
            ),
        )
