"""Rule-count benchmark: what evaluating 10, 100 and 1,000 rules costs per message.

The fleet is wristbands only: 100,000 devices by default, one family, so every rule sees
every message. A pre-generated stream of telemetry (10 s report interval, devices in a
random phase within each interval, timestamps rising from a day ago) goes through
`Pipeline.evaluate` in batches of 5,000: decode, every rule, alert lifecycle, the
event-time timer (`advance`). No broker, outbox or sink is involved, so the time is the
pipeline's alone.

The rules are generated: nine kinds of threshold on heart_rate, spo2, systolic,
diastolic, skin_temp_c and battery_pct (some with `and`/`or` or arithmetic), each rule
with its own parameter value, some with `for: 10s`/`for: 30s`, some with a `clear:`
hysteresis. Rule i is the same whatever the rule count, so the 10 rules are the first
ten of the 100, which are the first hundred of the 1,000. About 7.5 % of the devices are
unwell in some way and 1 % of readings carry a brief heart-rate spike, so alerts fire.
The first ten rules use everyday thresholds; rules beyond them use thresholds that are
rarely crossed (heart rate over 170, SpO2 under 80, ...), as most rules of a large rule
set are: a thousand rules that each page for the same unwell resident would measure
alert creation, not rule evaluation. The alert events column shows what fired.
With the defaults each device reports twice (20 s of event time), so `for: 30s` rules
reach pending but not firing; their pending runs still cost the `advance` scan.

The decoder alone is timed over the same stream first, so the table shows how much of
each run's time is rules (run time minus decode time) and how the cost grows against
the 10-rule baseline measured in the same run.

    .venv/bin/python bench/rules.py [--devices 100000] [--messages 200000] [--quick]

Prints msg/s and µs per message per rule count, the rules' share of that, the time
ratio to 10 rules (2.0 = twice as slow) and the alert events produced.
"""

from __future__ import annotations

import argparse
import gc
import logging
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import yaml

from sensord._metrics import Metrics
from sensord._pipeline import Pipeline
from sensord._registry import Registry, parse_registry
from sensord._settings import AlertSettings, DecodeSettings
from sensord._types import RawMessage
from sensord.alerts import Engine
from sensord.decode import Decoder
from sensord.rules import load_rules
from sensord.sinks import DeadLetter

TOPIC_TEMPLATE = "sensord/{community}/{family}/{device_id}/{kind}"
RULE_COUNTS = (10, 100, 1000)
BATCH = 5000
REPORT_INTERVAL_S = 10.0


@dataclass(frozen=True)
class Kind:
    """One kind of rule; `p`/`q` in the texts become the rule's own parameters."""

    name: str
    when: str
    clear: str
    p: tuple[float, float]
    q: tuple[float, float] | None
    severity: str
    summary: str
    rare_p: tuple[float, float] = (0, 0)
    rare_q: tuple[float, float] | None = None


# Threshold ranges straddle both the normal spread and the unwell groups in `readings`,
# so across 1,000 rules some fire often, some rarely, most only for the unwell devices.
KINDS = (
    Kind("heart_rate_high", "heart_rate > p", "heart_rate <= p - 5", (110, 160), None,
         "warning", "Heart rate {heart_rate:.0f} bpm on {device_id}", (170, 240)),
    Kind("heart_rate_low", "heart_rate < p", "heart_rate >= p + 5", (40, 55), None,
         "warning", "Heart rate {heart_rate:.0f} bpm on {device_id}", (20, 35)),
    Kind("spo2_low", "spo2 < p", "spo2 >= p + 2", (85, 93), None,
         "critical", "SpO2 {spo2:.0f}% on {device_id}", (60, 80)),
    Kind("bp_high", "systolic >= p or diastolic >= q", "systolic < p - 10 and diastolic < q - 10",
         (160, 190), (100, 125), "critical", "Blood pressure {systolic:.0f}/{diastolic:.0f} on {device_id}",
         (210, 280), (140, 190)),
    Kind("bp_low", "systolic < p and diastolic < q", "systolic >= p + 5 or diastolic >= q + 5",
         (85, 95), (50, 60), "warning", "Blood pressure {systolic:.0f}/{diastolic:.0f} on {device_id}",
         (55, 75), (30, 45)),
    Kind("skin_temp_high", "skin_temp_c > p", "skin_temp_c <= p - 0.3", (37.0, 38.5), None,
         "warning", "Skin temperature {skin_temp_c:.1f} C on {device_id}", (40, 44)),
    Kind("battery_low", "battery_pct < p", "battery_pct >= p + 10", (10, 25), None,
         "info", "Wristband {device_id} battery at {battery_pct:.0f}%", (0.5, 2)),
    Kind("distress", "heart_rate > p and spo2 < q", "heart_rate <= p - 5 or spo2 >= q + 2",
         (100, 130), (88, 94), "critical", "Heart rate {heart_rate:.0f}, SpO2 {spo2:.0f}% on {device_id}",
         (170, 220), (60, 80)),
    Kind("pulse_pressure_wide", "systolic - diastolic > p", "systolic - diastolic <= p - 5",
         (80, 100), None, "info", "Pulse pressure {systolic:.0f}/{diastolic:.0f} on {device_id}", (130, 200)),
)  # fmt: skip
EVERYDAY = 10  # rules 0..9 use everyday thresholds; the rest rare ones


def rule_doc(n: int) -> dict[str, Any]:
    """The wristband rule file with the first n generated rules."""
    params: dict[str, float] = {}
    rules: list[dict[str, Any]] = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        # Seeded by i alone so that rule i is identical in the 10-, 100- and 1,000-rule files.
        rnd = random.Random(i)
        names = {"p": f"{kind.name}_p{i}", "q": f"{kind.name}_q{i}"}
        everyday = i < EVERYDAY
        params[names["p"]] = round(rnd.uniform(*(kind.p if everyday else kind.rare_p)), 1)
        if kind.q is not None:
            q_range = kind.q if everyday or kind.rare_q is None else kind.rare_q
            params[names["q"]] = round(rnd.uniform(*q_range), 1)
        rule: dict[str, Any] = {
            "name": f"{kind.name}_{i:04d}",
            "when": _subst(kind.when, names),
            "for": rnd.choice(("0s", "0s", "10s", "30s")),
            "severity": kind.severity,
            "summary": kind.summary,
        }
        if rnd.random() < 0.5:
            rule["clear"] = _subst(kind.clear, names)
        rules.append(rule)
    return {"family": "wristband", "params": params, "rules": rules}


def _subst(text: str, names: dict[str, str]) -> str:
    return " ".join(names.get(word, word) for word in text.split())


def registry_doc(devices: int) -> dict[str, Any]:
    return {
        "devices": {
            f"wb-{i:06d}": {"family": "wristband", "community": "c1", "grid": "g1"} for i in range(devices)
        }
    }


def readings(devices: int, rng: np.random.Generator) -> dict[str, npt.NDArray[np.float64]]:
    """Per-device baseline vitals; a few percent of devices are unwell in one way."""
    hr = rng.normal(74, 8, devices)
    spo2 = np.minimum(rng.normal(97, 1, devices), 99.5)
    sys_ = rng.normal(125, 12, devices)
    dia = rng.normal(80, 8, devices)
    temp = rng.normal(33.5, 0.8, devices)
    battery = rng.uniform(30, 100, devices)
    group = rng.random(devices)
    groups = (  # (share of devices, column, low, high)
        (0.015, hr, 125, 150),
        (0.005, hr, 38, 46),
        (0.010, spo2, 84, 90),
        (0.010, sys_, 175, 200),
        (0.005, sys_, 80, 92),
        (0.010, temp, 37.5, 39),
        (0.020, battery, 3, 25),
    )
    lo = 0.0
    for share, col, a, b in groups:
        sel = (group >= lo) & (group < lo + share)
        col[sel] = rng.uniform(a, b, int(sel.sum()))
        lo += share
    # A hypertensive crisis raises both numbers, hypotension lowers both.
    dia[sys_ >= 175] = rng.uniform(105, 125, int((sys_ >= 175).sum()))
    dia[sys_ < 92] = rng.uniform(48, 58, int((sys_ < 92).sum()))
    # Tachycardic residents in this group are also short of breath: the `distress` rules.
    distress = (hr > 120) & (rng.random(devices) < 0.3)
    spo2[distress] = rng.uniform(86, 92, int(distress.sum()))
    return {
        "heart_rate": hr,
        "spo2": spo2,
        "systolic": sys_,
        "diastolic": dia,
        "skin_temp_c": temp,
        "battery_pct": battery,
    }


def stream(devices: int, n: int, start_ts: float) -> list[RawMessage]:
    """n messages in timestamp order: every device once per report interval, at its own phase."""
    rng = np.random.default_rng(1)
    base = readings(devices, rng)
    phase = rng.uniform(0, REPORT_INTERVAL_S, devices)
    order = np.argsort(phase)
    rounds = -(-n // devices)
    dev = np.tile(order, rounds)[:n]
    ts = start_ts + np.repeat(np.arange(rounds) * REPORT_INTERVAL_S, devices)[:n] + phase[dev]
    noise = {"heart_rate": 4.0, "spo2": 0.7, "systolic": 5.0, "diastolic": 4.0, "skin_temp_c": 0.2}
    cols = {k: base[k][dev] + rng.normal(0, noise.get(k, 0.0), n) for k in base}
    # Exertion (climbing stairs) on 1 % of readings: a spike that crosses and clears at once.
    cols["heart_rate"] += np.where(rng.random(n) < 0.01, rng.uniform(30, 60, n), 0)
    # Batteries drain a little with every report.
    cols["battery_pct"] -= np.repeat(np.arange(rounds) * 0.05, devices)[:n]
    ints = {
        "heart_rate": np.clip(np.rint(cols["heart_rate"]), 20, 250).astype(int).tolist(),
        "spo2": np.clip(np.rint(cols["spo2"]), 50, 100).astype(int).tolist(),
        "systolic": np.clip(np.rint(cols["systolic"]), 50, 300).astype(int).tolist(),
        "diastolic": np.clip(np.rint(cols["diastolic"]), 30, 200).astype(int).tolist(),
        "battery_pct": np.clip(np.rint(cols["battery_pct"]), 0, 100).astype(int).tolist(),
    }
    temp = np.round(cols["skin_temp_c"], 1).tolist()
    ts_list = np.round(ts, 3).tolist()
    ids = [f"wb-{i:06d}" for i in range(devices)]
    out: list[RawMessage] = []
    for j, d in enumerate(dev.tolist()):
        payload = {
            "ts": ts_list[j],
            "heart_rate": ints["heart_rate"][j],
            "spo2": ints["spo2"][j],
            "systolic": ints["systolic"][j],
            "diastolic": ints["diastolic"][j],
            "skin_temp_c": temp[j],
            "battery_pct": ints["battery_pct"][j],
        }
        topic = f"sensord/c1/wristband/{ids[d]}/telemetry"
        # Received a fraction of a second after the reading, as over a healthy link.
        out.append(RawMessage(topic, orjson.dumps(payload), ts_list[j] + 0.2, j))
    return out


def time_decode(reg: Registry, batches: list[list[RawMessage]]) -> float:
    decoder = Decoder(reg, DecodeSettings(max_clock_skew_s=0), TOPIC_TEMPLATE)
    gc.collect()
    t = time.perf_counter()
    for b in batches:
        decoder(b)
    return time.perf_counter() - t


def time_rules(n: int, reg: Registry, batches: list[list[RawMessage]], work: Path) -> tuple[float, int]:
    """Seconds for the pipeline over every batch with n rules, and the alert events produced."""
    rules_dir = work / f"rules-{n}"
    rules_dir.mkdir()
    text = yaml.safe_dump(rule_doc(n), sort_keys=False, allow_unicode=True)
    (rules_dir / "wristband.yaml").write_text(text, encoding="utf-8")
    deadletter = DeadLetter(work / f"dl-{n}.jsonl")
    pipeline = Pipeline(
        decoder=Decoder(reg, DecodeSettings(max_clock_skew_s=0), TOPIC_TEMPLATE),
        engine=Engine(load_rules(rules_dir, reg), reg, AlertSettings()),
        ack_topic_template=None,
        deadletter=deadletter,
        metrics=Metrics(),
    )
    events = rejected = 0
    gc.collect()
    t = time.perf_counter()
    for b in batches:
        ev = pipeline.evaluate(b)
        events += len(ev.events)
        rejected += ev.rejected
    elapsed = time.perf_counter() - t
    deadletter.close()
    if rejected:
        # A rejected message skips the rules, so the numbers would flatter sensord.
        raise SystemExit(f"{rejected} messages rejected with {n} rules; see {deadletter.path}")
    return elapsed, events


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--quick", action="store_true", help="10,000 devices and 20,000 messages")
    args = ap.parse_args()
    devices, n = (10_000, 20_000) if args.quick else (args.devices, args.messages)
    reg = parse_registry(registry_doc(devices), source="bench")
    msgs = stream(devices, n, start_ts=time.time() - 86400)
    batches = [msgs[i : i + BATCH] for i in range(0, n, BATCH)]
    size = sum(len(m.payload) for m in msgs) / n
    span = msgs[-1].received_at - msgs[0].received_at
    print(
        f"wristband: {devices} devices, {n} messages over {span:.0f} s of event time, "
        f"mean payload {size:.0f} bytes, batches of {BATCH}"
    )
    decode_s = time_decode(reg, batches)
    decode_us = decode_s / n * 1e6
    rows: list[tuple[int, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="sensord-bench-") as d:
        for count in RULE_COUNTS:
            elapsed, events = time_rules(count, reg, batches, Path(d))
            rows.append((count, elapsed, events))
            gc.collect()  # the previous engine's per-rule state arrays go before the next run
    head = ("rules", "msg/s", "µs/msg", "rules µs/msg", "rules share", "time vs 10", "alert events")
    print(f"{head[0]:>10}{head[1]:>12}{head[2]:>10}{head[3]:>14}{head[4]:>13}{head[5]:>12}{head[6]:>14}")
    print(f"{'decode':>10}{n / decode_s:>12,.0f}{decode_us:>10.1f}{'-':>14}{'-':>13}{'-':>12}{'-':>14}")
    base = rows[0][1]
    for count, elapsed, events in rows:
        us = elapsed / n * 1e6
        rule_us = us - decode_us
        print(
            f"{count:>10}{n / elapsed:>12,.0f}{us:>10.1f}{rule_us:>14.1f}{rule_us / us:>13.0%}"
            f"{elapsed / base:>12.2f}{events:>14}"
        )


if __name__ == "__main__":
    main()
