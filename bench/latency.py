"""Latency benchmark: publish → signed webhook received, at a steady rate.

A private Mosquitto, `sensord run` as a real process with the default rules and a signed
webhook sink, and a keep-alive receiver that verifies every signature
(sensord.sinks.verify). A publisher process sends QoS 1 wristband readings at a steady
2,000, 5,000 and 10,000 msg/s; 1 % of them press SOS on a wristband that has not alerted
yet, so each of those raises one life-safety alert. Every reading carries its publish
time as `ts`, which the webhook body returns in `readings.ts`: the receiver's clock minus
that is the latency from publish to webhook received (one machine, one clock). The
registry holds 5,000 ordinary wristbands and 6,000 for the SOS (more if the stages need).

The last stage runs a second daemon at 5,000 msg/s with a slow InfluxDB sink beside the
webhook (a stand-in that answers each write after 200 ms): life-safety alerts must not
wait for it.

    .venv/bin/python bench/latency.py [--seconds 25] [--baseline main]
    .venv/bin/python bench/latency.py --alert-shares 0.02,1,10 --devices 1000,10000,100000 --html out/

Sweeps (instead of the stages above), each point one stage of `--seconds` at
`--sweep-rate` msg/s (5,000): `--alert-shares` makes that percentage of the messages an
SOS (one daemon; its registry holds a fresh wristband for every SOS of all the points, and
at least the 5,000 ordinary ones). `--devices` is the registry size, one daemon per point:
the ordinary readings cycle over the asked count, `--sweep-share` % (1) of the messages
are an SOS on the registry's last wristbands, and the registry grows beyond the count only
when a point needs more fresh ones (1,000 devices at 5 k msg/s and 1 % for 25 s: 1,265).
`--html DIR` writes DIR/index.html: p99 and p50 latency against alert share and against
device count (against the rate without a sweep), and a table with the load average per
point. bench/drain.py `--latency` runs the same sweeps and puts them on its own page.

`--baseline REV` runs the same stages first with the daemon of that git revision (its
src/ exported to a temporary folder), so before and after are measured side by side and
drawn as two series in each chart. Backlog: messages published minus messages the daemon
has processed (/healthz), sampled every half second; it "grows" when the last third of
the stage averages more than the first third plus a quarter second of traffic.
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing as mp
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _latency_rig import (
    ROOT,
    Daemon,
    Plan,
    Receiver,
    baseline_src,
    config,
    publisher,
    share_fraction,
    slow_influx,
    sos_count,
)
from _plots import latency_p99_section, table, write_index
from sensord.report._svg import LINE_COLOURS
from sensord.testing import MosquittoServer, start_mosquitto

NORMAL_DEVICES = 5000  # wristbands sending ordinary vitals
ALERT_DEVICES = 6000  # wristbands that press SOS once each (a fresh one per alert)
SWEEP_RATE = 5000
GOALS = "goals: p99 <= 25 ms and max <= 100 ms up to 5 k msg/s; p99 <= 50 ms at 10 k; no backlog growth; "
GOALS += "life-safety p99 <= 20 ms at 5 k with a slow sink"


@dataclass(frozen=True)
class Stage:
    name: str
    rate: int
    slow_sink: bool = False
    share: float = 1.0  # % of messages that press SOS
    devices: int = NORMAL_DEVICES  # ordinary wristbands (a sweep's: the registry size)
    sweep: str = ""  # "share" or "devices": the curve this stage is a point of


WARM_UP, WARM_UP_S = Stage("warm-up", 500), 3.0


def sos_needed(stage: Stage, seconds: float) -> int:
    """Fresh wristbands a stage may use: the publisher sends at most rate * seconds."""
    return sos_count(int(stage.rate * seconds) + 1, share_fraction(stage.share))


@dataclass(frozen=True)
class Layout:
    """One daemon's registry: ids [0, registry); ordinary readings cycle over [0, ordinary);
    the SOS go to fresh ids from first_sos on, one each."""

    ordinary: int
    first_sos: int
    registry: int


def layout(stages: Sequence[Stage], seconds: float) -> Layout:
    needed = sos_needed(WARM_UP, WARM_UP_S) + sum(sos_needed(s, seconds) for s in stages)
    devices = stages[0].devices
    if stages[0].sweep:
        # The registry size is the swept figure: the SOS wristbands are its last ones
        # (their earlier ordinary readings change no alert), added only if too few.
        registry = max(devices, needed)
        return Layout(devices, registry - needed, registry)
    return Layout(devices, devices, devices + max(ALERT_DEVICES, needed))


@dataclass
class StageResult:
    """One stage's figures: latencies in ms of the alerts published in it."""

    label: str
    stage: Stage
    published: int
    seconds: float
    latencies_ms: list[float]
    expected_alerts: int
    backlog: list[int] = field(default_factory=list)
    ingest_lag_s: float = 0.0
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    registry: int = 0

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    @property
    def sos_share(self) -> float:
        """The share of SOS the publisher sent, %."""
        return 100 * self.expected_alerts / self.published if self.published else float("nan")

    @property
    def backlog_grows(self) -> bool:
        third = max(1, len(self.backlog) // 3)
        first, last = self.backlog[:third], self.backlog[-third:]
        if not first:
            return False
        return statistics.fmean(last) > statistics.fmean(first) + self.stage.rate * 0.25


def series(results: list[StageResult], label: str = "after") -> list[tuple[float, float]]:
    """(msg/s, p99 ms) of the plain stages of one daemon, for a plot."""
    return [
        (r.stage.rate, r.pct(0.99))
        for r in results
        if r.label == label and not r.stage.slow_sink and not r.stage.sweep
    ]


# -- a run ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Rig:
    """One daemon under test with its broker, the receiver's latencies and its registry."""

    label: str
    daemon: Daemon
    broker: int
    receiver: Receiver
    layout: Layout


def _run_stage(rig: _Rig, stage: Stage, seconds: float, first_sos: int) -> StageResult:
    counts = mp.Array("q", 3)
    base = rig.daemon.processed()
    plan = Plan(stage.rate, seconds, share_fraction(stage.share), rig.layout.ordinary, first_sos)
    proc = mp.Process(target=publisher, args=(rig.broker, plan, counts))
    proc.start()
    backlog: list[int] = []
    t0 = time.monotonic()
    while proc.is_alive() and time.monotonic() - t0 < seconds:
        time.sleep(0.5)
        backlog.append(counts[0] - (rig.daemon.processed() - base))
    lag = rig.daemon.ingest_lag()
    load = os.getloadavg()
    proc.join(60)
    published, alerts = counts[0], counts[2]
    deadline = time.monotonic() + 20
    wanted = range(first_sos, first_sos + alerts)
    by_device = rig.receiver.by_device
    while time.monotonic() < deadline and sum(d in by_device for d in wanted) < alerts:
        time.sleep(0.2)
    lat = [by_device[d] for d in wanted if d in by_device]
    registry = rig.layout.registry
    return StageResult(rig.label, stage, published, seconds, lat, alerts, backlog, lag, load, registry)


def _daemon_groups(stages: list[Stage]) -> list[list[Stage]]:
    """Stages that share a daemon, in order: one for the plain stages, one for the slow
    sink, one for the alert-share sweep, one per device count."""
    groups: dict[tuple[bool, int, str], list[Stage]] = {}
    for s in stages:
        key = (s.slow_sink, s.devices if s.sweep == "devices" else 0, s.sweep)
        groups.setdefault(key, []).append(s)
    return list(groups.values())


def run_daemon(label: str, src: Path, stages: list[Stage], seconds: float, work: Path) -> list[StageResult]:
    """One daemon (from `src`) per group of stages (_daemon_groups)."""
    out: list[StageResult] = []
    for n, group in enumerate(_daemon_groups(stages)):
        folder = work / f"{label}-{n}"
        folder.mkdir()
        influx = slow_influx() if group[0].slow_sink else None
        influx_url = f"http://127.0.0.1:{influx.server_address[1]}" if influx is not None else None
        receiver = Receiver("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
        mosquitto: MosquittoServer = start_mosquitto(folder)
        plan = layout(group, seconds)
        try:
            cfg, http_port = config(folder, mosquitto.port, receiver, influx_url, plan.registry)
            daemon = Daemon(cfg, http_port, src)
            try:
                rig = _Rig(label, daemon, mosquitto.port, receiver, plan)
                first = plan.first_sos
                _run_stage(rig, WARM_UP, WARM_UP_S, first)
                first += sos_needed(WARM_UP, WARM_UP_S)
                for stage in group:
                    out.append(_run_stage(rig, stage, seconds, first))
                    print(_row(out[-1]), flush=True)
                    first += sos_needed(stage, seconds)
            finally:
                daemon.stop()
        finally:
            mosquitto.stop()
            receiver.stop()
            if influx is not None:
                influx.shutdown()
                influx.server_close()
            if receiver.invalid:
                print(f"  {receiver.invalid} webhook requests had no valid signature", flush=True)
    return out


HEADER = (
    f"{'daemon':<9} {'stage':<18} {'msg/s':>7} {'sos %':>6} {'registry':>8} {'alerts':>11} {'p50 ms':>7} "
    f"{'p99 ms':>7} {'max ms':>7} {'backlog':>15} {'lag s':>6}  load avg"
)


def _load(r: StageResult) -> str:
    return " ".join(f"{x:.2f}" for x in r.load)


def _backlog(r: StageResult) -> str:
    end = r.backlog[-1] if r.backlog else 0
    return f"{max(r.backlog, default=0)}/{end}{' GROWS' if r.backlog_grows else ''}"


def _max(r: StageResult) -> float:
    return max(r.latencies_ms, default=float("nan"))


def _row(r: StageResult) -> str:
    got = f"{len(r.latencies_ms)}/{r.expected_alerts}"
    return (
        f"{r.label:<9} {r.stage.name:<18} {r.published / r.seconds:>7.0f} {r.sos_share:>6.2f} "
        f"{r.registry:>8} {got:>11} {r.pct(0.5):>7.1f} {r.pct(0.99):>7.1f} {_max(r):>7.1f} {_backlog(r):>15} "
        f"{r.ingest_lag_s:>6.2f}  {_load(r)}"
    )


def default_stages(rates: tuple[int, ...] = (2000, 5000, 10000), slow_rate: int = 5000) -> list[Stage]:
    stages = [Stage(f"{r // 1000}k", r) for r in rates]
    if slow_rate:
        stages.append(Stage(f"{slow_rate // 1000}k + slow sink", slow_rate, slow_sink=True))
    return stages


def sweep_stages(
    shares: Sequence[float], devices: Sequence[int], rate: int = SWEEP_RATE, device_share: float = 1.0
) -> list[Stage]:
    """One stage per alert share (% of messages an SOS) and one per registry size, at `rate`."""
    for s in (*shares, device_share):
        share_fraction(s)  # a share out of range stops here, before any daemon starts
    if rate < 1 or any(d < 1 for d in devices):
        raise ValueError(f"a sweep needs a rate and device counts of at least 1, not {rate} and {devices}")
    stages = [Stage(f"{s:g} % SOS", rate, share=s, sweep="share") for s in shares]
    return stages + [
        Stage(f"{d:,} devices", rate, share=device_share, devices=d, sweep="devices") for d in devices
    ]


def measure(
    stages: list[Stage], seconds: float, *, baseline: str | None = None, keep: Path | None = None
) -> list[StageResult]:
    """Every stage with this tree's daemon ("after"), and first with the daemon of git
    revision `baseline` ("before") if given."""
    results: list[StageResult] = []
    with tempfile.TemporaryDirectory(prefix="sensord-latency-") as tmp:
        work = keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if baseline:
            results += run_daemon("before", baseline_src(baseline, work), stages, seconds, work)
        results += run_daemon("after", ROOT / "src", stages, seconds, work)
    return results


# -- the HTML page -------------------------------------------------------------------------
CURVES: tuple[tuple[str, str, str, Callable[[StageResult], float]], ...] = (
    # sweep, heading, x axis, x of a result
    ("share", "alert share", "alert share (% of messages an SOS)", lambda r: r.stage.share),
    ("devices", "device count", "devices in the registry", lambda r: float(r.registry)),
    ("", "rate", "steady rate (msg/s)", lambda r: float(r.stage.rate)),
)
TABLE_HEAD = (
    "daemon", "stage", "msg/s", "SOS % sent", "registry", "alerts got", "p50 ms", "p99 ms", "max ms",
    "backlog max/end", "load 1/5/15 min",
)  # fmt: skip
# One colour per curve on every chart (those of sensord's reports).
COLOURS = {"p99": LINE_COLOURS[2], "p50": LINE_COLOURS[0], "p99 before": LINE_COLOURS[3]}
COLOURS |= {"p50 before": LINE_COLOURS[1], "p99 after": LINE_COLOURS[2], "p50 after": LINE_COLOURS[0]}


def _cells(r: StageResult) -> list[str]:
    return [
        r.label, r.stage.name, f"{r.published / r.seconds:,.0f}", f"{r.sos_share:.2f}", f"{r.registry:,}",
        f"{len(r.latencies_ms)}/{r.expected_alerts}", f"{r.pct(0.5):.1f}", f"{r.pct(0.99):.1f}",
        f"{_max(r):.1f}", _backlog(r), _load(r),
    ]  # fmt: skip


def html_sections(results: list[StageResult]) -> list[str]:
    """A chart of p99 and p50 latency per curve measured (alert share, devices; the rate
    for the plain stages), before and after as their own series, and the figures' table."""
    labels = sorted({r.label for r in results}, reverse=True)  # before, after
    sections = []
    for sweep, name, against, x_of in CURVES:
        points = [r for r in results if r.stage.sweep == sweep and not r.stage.slow_sink]
        if not points:
            continue
        curves: dict[str, tuple[list[float], list[float]]] = {}
        for q in ("p99", "p50"):
            for label in labels:
                mine = sorted((x_of(r), r.pct(int(q[1:]) / 100)) for r in points if r.label == label)
                curve = q if len(labels) == 1 else f"{q} {label}"
                curves[curve] = ([x for x, _ in mine], [y for _, y in mine])
        heading = f"p99 and p50 latency against {name}"
        sections.append(latency_p99_section(against, curves, heading=heading, colours=COLOURS))
    sections.append(table(TABLE_HEAD, [_cells(r) for r in results]))
    return sections


def write_html(folder: Path, results: list[StageResult], note: str) -> Path:
    return write_index(folder, "sensord latency benchmark", [f"<p>{note}</p>", *html_sections(results)])


def note(seconds: float) -> str:
    return (
        f"Publish → signed webhook received, QoS 1, {seconds:g} s per point, {os.cpu_count()} cores; "
        "p50 / p99 / max over the SOS alerts of each point that arrived within 20 s of its end ('alerts "
        "got': received / sent); the load average at the end of each point in the table."
    )


def print_results(results: list[StageResult]) -> None:
    print("\n" + HEADER)
    for r in results:
        print(_row(r))
    print(GOALS)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    doc = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=doc)
    parser.add_argument("--seconds", type=float, default=25.0, help="length of each stage")
    parser.add_argument("--rates", default="2000,5000,10000", help="steady rates, msg/s (without a sweep)")
    parser.add_argument("--slow-rate", type=int, default=5000, help="rate of the slow-sink stage (0: skip)")
    parser.add_argument("--alert-shares", type=_floats, default=[], help="sweep: %% of messages an SOS")
    parser.add_argument("--devices", type=_ints, default=[], help="sweep: registry sizes")
    parser.add_argument("--sweep-rate", type=int, default=SWEEP_RATE, help="msg/s of the sweeps (5000)")
    parser.add_argument("--sweep-share", type=float, default=1.0, help="SOS %% of the device sweep (1)")
    parser.add_argument("--baseline", help="git revision whose daemon runs first, for before/after")
    parser.add_argument("--keep", type=Path, help="work in this (new) folder and keep it (daemon logs)")
    parser.add_argument("--html", type=Path, help="write DIR/index.html with the latency curves")
    args = parser.parse_args()
    if args.alert_shares or args.devices:
        try:
            stages = sweep_stages(args.alert_shares, args.devices, args.sweep_rate, args.sweep_share)
        except ValueError as exc:
            parser.error(str(exc))
    else:
        stages = default_stages(tuple(int(r) for r in args.rates.split(",")), args.slow_rate)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("backlog: max/end of published - processed; alerts: received/expected (all life-safety SOS)")
    print(HEADER, flush=True)
    results = measure(stages, args.seconds, baseline=args.baseline, keep=args.keep)
    print_results(results)
    if not (args.alert_shares or args.devices):
        print("p99 by rate:", {label: series(results, label) for label in ("before", "after")})
    if args.html is not None:
        print(f"wrote {write_html(args.html, results, note(args.seconds))}")


if __name__ == "__main__":
    main()
