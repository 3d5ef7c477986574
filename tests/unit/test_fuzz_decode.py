"""Property-based fuzzing of decode and the ack path (hypothesis).

Property: hostile messages (arbitrary bytes, deep nesting, huge numbers, NaN, odd
unicode in topics and fields, malformed acks, unknown devices) mixed anywhere into a
batch of good readings change nothing about the good readings' alerts (the same event
ids, each alert's in the same order, as the good readings alone), and each hostile
message is dead-lettered exactly once with a reason.
"""

from __future__ import annotations

import base64
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensord._registry import Registry, load_registry
from sensord._settings import Settings
from sensord._types import Family, RawMessage
from sensord.decode import Decoder, field_specs
from sensord.replay import ReplayResult, replay
from sensord.rules import RuleSet, load_rules

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_790_000_000.0
KNOWN = {"wristband": "wb-01", "bin": "bin-01", "fire": "fire-01", "lift": "lift-01"}
FIELDS = {f.name for fam in Family for f in field_specs(fam)}

# Good readings with known alerts: an SOS, a full bin, a sustained high heart rate.
GOOD = [
    RawMessage("sensord/maple-court/wristband/wb-01/telemetry", orjson.dumps({"ts": T0, "sos": True}), T0),
    RawMessage("sensord/maple-court/bin/bin-01/telemetry", orjson.dumps({"ts": T0, "fill_pct": 93}), T0),
    *(
        RawMessage(
            "sensord/maple-court/wristband/wb-02/telemetry",
            orjson.dumps({"ts": T0 + t, "heart_rate": 150}),
            T0 + t,
        )
        for t in range(0, 50, 10)
    ),
    RawMessage(
        "sensord/maple-court/wristband/wb-02/telemetry", orjson.dumps({"ts": T0 + 60, "heart_rate": 70}), T0
    ),
]


@cache
def setup() -> tuple[Registry, RuleSet, Settings]:
    registry = load_registry(ROOT / "config" / "devices.yaml")
    rules = load_rules(ROOT / "rules", registry)
    return registry, rules, Settings.model_validate({"decode": {"max_clock_skew_s": 0}})


def run(messages: list[RawMessage], deadletter: Path) -> ReplayResult:
    registry, rules, cfg = setup()
    return replay(messages, registry=registry, rules=rules, settings=cfg, deadletter=deadletter)


def per_alert(result: ReplayResult) -> dict[str, list[str]]:
    """Each alert's event ids in order (the order across alerts of one batch is free)."""
    out: dict[str, list[str]] = {}
    for e in result.events:
        out.setdefault(e.fingerprint, []).append(e.event_id)
    return out


@cache
def good_alerts() -> dict[str, list[str]]:
    with tempfile.TemporaryDirectory() as d:
        return per_alert(run(GOOD, Path(d) / "dl.jsonl"))


odd_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
i64 = st.integers(-(2**63), 2**63 - 1)  # what JSON encoders write
# Values no field accepts: text where numbers go, nesting, huge or non-finite numbers.
bad_value = st.one_of(
    odd_text.filter(lambda s: s not in {"idle", "moving", "stopped", "charging", "fault"}),
    st.lists(i64, max_size=3),
    st.dictionaries(odd_text, i64, max_size=2),
    st.sampled_from([1e308, -1e308]),
)
deep = st.integers(min_value=9, max_value=3000).map(lambda n: b'{"sos": ' + b"[" * n + b"]" * n + b"}")
junk_object = st.dictionaries(
    st.one_of(odd_text.filter(lambda k: k not in FIELDS and k != "ts"), st.sampled_from(sorted(FIELDS))),
    bad_value,
    min_size=1,
    max_size=4,
)
hostile_payload = st.one_of(
    st.binary(max_size=300),
    deep,
    junk_object.map(orjson.dumps),
    st.sampled_from(
        [
            b'{"heart_rate": NaN}',
            b'{"sos": Infinity}',
            b'{"heart_rate": 1e999}',
            b'{"fill_pct": 123456789012345678901234567890}',
            b"1e400",
            b"[]",
            b'"x"',
            b"null",
            b"{}",
            '{"state": "\u202e\ufffd\U0001f525"}'.encode(),
        ]
    ),
    st.binary(min_size=9000, max_size=12000),
)
not_a_rule = st.one_of(i64, st.lists(st.text(), max_size=2), st.none())
hostile_ack = st.one_of(
    st.binary(max_size=100),
    st.fixed_dictionaries({"rule": not_a_rule}).map(orjson.dumps),
    st.fixed_dictionaries({"rule": odd_text.filter(lambda r: not r.startswith(("wristband", "bin")))}).map(
        orjson.dumps
    ),
    st.fixed_dictionaries({"rule": st.just("wristband_sos"), "by": st.sampled_from(["", "  ", None, 1])}).map(
        orjson.dumps
    ),
    st.fixed_dictionaries(
        {"rule": st.just("wristband_sos"), "by": st.just("desk"), "startsAt": st.one_of(odd_text, i64)}
    ).map(orjson.dumps),
    st.just(b'{"rule": "wristband_sos", "by": {"name": "x"}}'),
)
# A well-formed ack: still hostile on a device's own topic (only the dispatch side acks).
device_ack = st.just(b'{"rule": "wristband_sos", "by": "desk"}')


@st.composite
def hostile(draw: st.DrawFn) -> RawMessage:
    """One message that must be rejected: its topic and payload are both drawn."""
    family = draw(st.sampled_from(sorted(KNOWN)))
    kind = draw(st.sampled_from(["known", "ack", "device_ack", "unknown_device", "bad_topic"]))
    if kind == "known":
        topic = f"sensord/maple-court/{family}/{KNOWN[family]}/telemetry"
        payload = draw(hostile_payload)
    elif kind == "ack":
        topic = f"sensord-dispatch/ack/maple-court/wristband/{KNOWN['wristband']}"
        payload = draw(hostile_ack)
    elif kind == "device_ack":
        topic = f"sensord/maple-court/wristband/{KNOWN['wristband']}/ack"
        payload = draw(device_ack)
    elif kind == "unknown_device":
        name = draw(odd_text.filter(lambda s: "/" not in s))
        topic = f"sensord/maple-court/{family}/{name}x/telemetry"
        payload = orjson.dumps({"ts": T0, "sos": True, "fill_pct": 99})
    else:
        topic = draw(odd_text)
        payload = draw(hostile_payload)
    return RawMessage(topic, payload, T0 + 1)


def dead_letters(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


def payload_of(record: dict[str, Any]) -> bytes:
    if "payload" in record:
        return str(record["payload"]).encode()
    return base64.b64decode(record["payload_b64"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad=st.lists(hostile(), min_size=1, max_size=12), data=st.data())
def test_hostile_messages_change_no_alert_and_are_dead_lettered_once(
    bad: list[RawMessage], data: st.DataObject
) -> None:
    """Good readings give the same alerts (same ids, same order per alert) with hostile messages
    mixed in anywhere, and every hostile message is in dead-letter once, with a reason."""
    batch = list(GOOD)
    for m in bad:
        batch.insert(data.draw(st.integers(min_value=0, max_value=len(batch))), m)
    with tempfile.TemporaryDirectory() as d:
        dl = Path(d) / "dl.jsonl"
        result = run(batch, dl)
        records = dead_letters(dl)
    assert per_alert(result) == good_alerts()
    assert len(records) == len(bad)
    assert all(r["reason"] and r["detail"] for r in records)
    got = sorted((r["topic"], payload_of(r)) for r in records)
    assert got == sorted((m.topic, m.payload) for m in bad)


def _refuse(payload: bytes) -> Any:
    """A typed decode that takes nothing: every message goes the generic way."""
    raise msgspec.ValidationError(f"refused {len(payload)} bytes")


any_value = st.one_of(
    st.none(),
    st.booleans(),
    i64,
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([-0.0, 0.5, 1e308, "idle", "moving", "charging", "2026-01-01T00:00:00+00:00", T0]),
    bad_value,
)


@st.composite
def any_reading(draw: st.DrawFn) -> RawMessage:
    """A reading of a known device: mostly objects of its family's fields, any values."""
    family = draw(st.sampled_from(sorted(KNOWN)))
    names = [f.name for f in field_specs(Family(family))] + ["ts"]
    keys = st.one_of(st.sampled_from(names), odd_text)
    payload = draw(
        st.one_of(
            st.dictionaries(keys, any_value, max_size=6).map(orjson.dumps),
            st.dictionaries(st.sampled_from(names), any_value, max_size=6).map(orjson.dumps),
            hostile_payload,
            st.sampled_from(
                [
                    b'{"ts": -123456789012345678901234567890, "heart_rate": 80}',
                    b'{"ts": 123456789012345678901234567890, "fill_pct": 80}',
                    b'{"ts": -0, "heart_rate": -0, "fill_pct": -0.0}',
                    b'{"ts": 1e-400, "sos": true}',
                    b'{"fill_pct": 1, "fill_pct": 99, "ts": 1790000000}',
                    b'{"state": "idle", "floor": 2.5, "ts": "2026-01-01T00:00:00"}',
                    b'{"heart_rate": 80, "x": "\\ud800"}',
                    b'{"heart_rate": 80, "x": 1e999}',
                    b'{"heart_rate": 80, "x": "\xff"}',
                ]
            ),
        )
    )
    return RawMessage(f"sensord/maple-court/{family}/{KNOWN[family]}/telemetry", payload, T0 + 1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(any_reading(), min_size=1, max_size=20))
def test_typed_fast_path_decodes_as_the_generic_path(batch: list[RawMessage]) -> None:
    """The typed (msgspec) fast path changes nothing: the same columns, bit for bit, and
    the same rejects with the same reasons and details, in the same order, as decoding
    every message the generic (orjson) way."""
    registry, _, cfg = setup()
    template = cfg.broker.topic_template
    fast, generic = Decoder(registry, cfg.decode, template), Decoder(registry, cfg.decode, template)
    for typed in generic._typed.values():
        typed.decode = _refuse
    a, b = fast(batch), generic(batch)
    assert list(a.batches) == list(b.batches)
    for family, x in a.batches.items():
        y = b.batches[family]
        pairs = [(x.device, y.device), (x.ts, y.ts), (x.received_at, y.received_at)]
        pairs += [(x.columns[k], y.columns[k]) for k in x.columns]
        assert all(p.tobytes() == q.tobytes() for p, q in pairs)
    assert a.rejects == b.rejects
    assert a.accepted == b.accepted
