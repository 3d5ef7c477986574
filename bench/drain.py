"""Drain benchmark: a backlog of N mixed six-family messages queued for a persistent
session, drained in the same run by the C client `mosquitto_sub` (the baseline: receive
and count), by Node-RED 4 (mqtt in → json → one function node with five of sensord's
thresholds → a counter) and by sensord's whole pipeline (decode → default rules → outbox
commit → acknowledgement).

    .venv/bin/python bench/drain.py                       # ~4 min: shares 0.02, 1, 10 %
    .venv/bin/python bench/drain.py --alert-share 10 --no-node-red
    .venv/bin/python bench/drain.py --html out/ --devices 1000,10000,100000
    .venv/bin/python bench/drain.py --html out/ --devices 1000,10000,100000 --latency

The backlog is shaped so that about P % of its messages change an alert state (see
bench/_alertshare.py); the share achieved is counted from sensord's alert events and
Node-RED's own and printed next to the requested one. Every client is timed from the
first message it received to the last it processed (for sensord: acknowledged), so
start-up is not in the figure. Node-RED is installed with npm into bench/.node-red/ on
the first run. Prints msg/s per alert share and QoS, the ratios sensord/Node-RED and
sensord/mosquitto_sub, and the load average (other processes on the box skew it).

`--latency` then runs bench/latency.py's sweeps over the same alert shares and device
counts (`--sweep-share` for the latter; 5,000 msg/s, `--latency-seconds` per point, the
daemon of `--latency-baseline REV` first if given), prints their table, and puts p99 and
p50 latency against alert share and device count on the same HTML page.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import _nodered
import latency
from _alertshare import SHARES, shape
from _backlog import (
    broker,
    create_session,
    drain_mosquitto_sub_first_to_last,
    messages,
    publish_backlog,
    registry_doc,
    scenario,
)
from _plots import line_chart, table, write_index
from sensord._metrics import Metrics
from sensord._pipeline import Evaluated, Pipeline, commit
from sensord._registry import parse_registry
from sensord._settings import AlertSettings, BatchSettings, BrokerSettings, DecodeSettings, OutboxSettings
from sensord._types import Family
from sensord.alerts import Engine
from sensord.decode import Decoder
from sensord.ingest import MqttSource
from sensord.outbox import CommitChain, Outbox
from sensord.report._svg import LINE_COLOURS
from sensord.rules import load_rules
from sensord.sinks import DeadLetter
from sensord.testing import MosquittoServer

ROOT = Path(__file__).resolve().parent.parent
TOPIC_TEMPLATE = "sensord/{community}/{family}/{device_id}/{kind}"
DEFAULT_DEVICES = 12_000
# One colour per client on every chart (those of sensord's reports).
COLOURS = {"mosquitto_sub": LINE_COLOURS[0], "Node-RED": LINE_COLOURS[1], "sensord": LINE_COLOURS[2]}


@dataclass(frozen=True)
class Session:
    port: int
    client_id: str
    qos: int


@dataclass(frozen=True)
class SensordDrain:
    seconds: float
    events: int  # alert transitions
    accepted: int


@dataclass(frozen=True)
class Row:
    """One backlog drained by every client at one alert share and QoS."""

    share: float  # requested, % of messages
    qos: int
    devices: int
    n: int
    mosquitto_sub: float  # msg/s
    node_red: float | None  # None: not run (the reason is printed)
    sensord: float
    sensord_share: float  # achieved, from sensord's alert events
    node_red_share: float | None
    load: tuple[float, float, float]


def drain_sensord(
    session: Session, n: int, work: Path, registry: dict[str, Any], *, overlap: bool = False
) -> SensordDrain:
    """sensord's pipeline, as the daemon runs it (the commit on the writer thread), until n
    messages are acknowledged; timed from the first message's receipt to the last batch's
    acknowledgement."""
    port, client_id, qos = session.port, session.client_id, session.qos
    reg = parse_registry(registry, source="bench")
    metrics = Metrics()
    pipeline = Pipeline(
        decoder=Decoder(reg, DecodeSettings(max_clock_skew_s=0), TOPIC_TEMPLATE),
        engine=Engine(load_rules(ROOT / "rules", reg), reg, AlertSettings()),
        ack_topic_template=BrokerSettings().ack_topic_template,
        deadletter=(deadletter := DeadLetter(work / f"dl-{client_id}.jsonl")),
        metrics=metrics,
    )
    outbox = Outbox(work / f"outbox-{client_id}.sqlite3", ["webhook"], OutboxSettings(), metrics)
    settings = BrokerSettings(port=port, client_id=client_id, qos=qos)  # type: ignore[arg-type]
    source = MqttSource(settings, None, metrics, BatchSettings(max_size=5000, max_wait_ms=5))
    events = accepted = 0

    async def go() -> float:
        nonlocal events, accepted
        runner = asyncio.create_task(source.run())
        chain = CommitChain(outbox)
        first: float | None = None
        done = 0
        landing: asyncio.Task[None] | None = None

        def landed(ev: Evaluated) -> None:
            deadletter.sync()
            source.ack(ev.tokens)

        async for batch in source.batches():
            if first is None:
                first = batch[0].received_at  # wall clock, taken as the bytes arrived
            ev = pipeline.evaluate(batch)
            # As the daemon commits (Daemon._process_loop): queued on the outbox's writer
            # thread; with --overlap-commits, while the loop is behind the stream (a batch
            # of a quarter of max_size or more), the next batch is evaluated meanwhile; each batch
            # acknowledged once its commit has landed; at most one commit in flight.
            before, landing = (
                landing,
                chain.submit(functools.partial(commit, outbox, ev), functools.partial(landed, ev)),
            )
            if not overlap or len(batch) < 5000 // 4:  # as the daemon: wait for this commit
                await landing
            elif before is not None:  # behind the stream: overlap it with the next batch
                await before
            events += len(ev.events)
            accepted += ev.accepted
            done += len(batch)
            if done >= n:
                break
        await chain.settle()
        elapsed = time.time() - (first or time.time())
        await source.aclose()
        runner.cancel()
        return elapsed

    # As the daemon does once built (Daemon.run): the registry and rules out of the
    # collector's sight, so a full collection does not walk them in the middle of a drain.
    gc.freeze()
    try:
        elapsed = asyncio.run(go())
    finally:
        gc.unfreeze()  # the next drain builds its own
    outbox.close()
    return SensordDrain(elapsed, events, accepted)


@dataclass(frozen=True)
class Backlog:
    msgs: list[tuple[str, bytes]]
    registry: dict[str, Any]
    devices: int
    share: float


def backlog(devices: int, n: int, share: float) -> Backlog:
    """n messages of `devices` devices (spread over the six families), shaped to share %."""
    sc = scenario(devices_per_family=max(1, devices // len(Family)), messages=n, incidents=False)
    msgs = messages(sc, n, start_ts=time.time() - 86400)
    if len(msgs) < n:
        raise SystemExit(f"the scenario gave {len(msgs)} of {n} messages")
    shaped, _ = shape(msgs, share)
    return Backlog(shaped, registry_doc(sc), sum(sc.devices.values()), share)


@dataclass(frozen=True)
class Run:
    server: MosquittoServer
    work: Path
    red: Path | None  # None: no Node-RED this run
    clients: tuple[str, ...]
    overlap: bool = False  # batch.overlap_commits


def drain_all(run: Run, bl: Backlog, qos: int, attempt: int = 0) -> Row:
    """Queue the backlog once for every client's session, then let each drain it in turn."""
    n, port, tag = len(bl.msgs), run.server.port, f"s{bl.share:g}-d{bl.devices}-q{qos}-{attempt}"
    for who in run.clients:
        create_session(port, f"{who}-{tag}", qos)
    publish_backlog(port, bl.msgs, qos)
    c_s = drain_mosquitto_sub_first_to_last(port, f"mosquitto_sub-{tag}", qos, n, run.work / "sub.out")
    nr = None
    if run.red is not None and "node_red" in run.clients:
        nr = _nodered.drain(run.red, run.work, (port, f"node_red-{tag}", qos), n)
    s = drain_sensord(Session(port, f"sensord-{tag}", qos), n, run.work, bl.registry, overlap=run.overlap)
    return Row(
        share=bl.share,
        qos=qos,
        devices=bl.devices,
        n=n,
        mosquitto_sub=n / c_s,
        node_red=n / nr.seconds if nr is not None else None,
        sensord=n / s.seconds,
        sensord_share=100 * s.events / n,
        node_red_share=100 * nr.flips / n if nr is not None else None,
        load=os.getloadavg(),
    )


def median_row(run: Run, bl: Backlog, qos: int, repeat: int) -> Row:
    """The drain repeated; each client's median msg/s (a busy box makes single runs noisy)."""
    rows = [drain_all(run, bl, qos, k) for k in range(repeat)]
    nr = [r.node_red for r in rows if r.node_red is not None]
    return replace(
        rows[-1],
        mosquitto_sub=statistics.median(r.mosquitto_sub for r in rows),
        node_red=statistics.median(nr) if nr else None,
        sensord=statistics.median(r.sensord for r in rows),
    )


def _f(v: float | None, fmt: str = ",.0f") -> str:
    return "-" if v is None else format(v, fmt)


SHARE_HEAD = (
    "alert %",
    "got (sensord/NR)",
    "QoS",
    "mosquitto_sub",
    "Node-RED",
    "sensord",
    "s/NR",
    "s/sub",
    "load 1/5/15 min",
)


def share_cells(r: Row) -> list[str]:
    nr_ratio = r.sensord / r.node_red if r.node_red else None
    return [
        f"{r.share:g}",
        f"{r.sensord_share:.2f} / {_f(r.node_red_share, '.2f')}",
        str(r.qos),
        _f(r.mosquitto_sub),
        _f(r.node_red),
        _f(r.sensord),
        _f(nr_ratio, ".2f"),
        f"{r.sensord / r.mosquitto_sub:.2f}",
        " ".join(f"{x:.2f}" for x in r.load),
    ]


DEVICE_HEAD = ("devices", "alert %", "got", "QoS", "mosquitto_sub", "sensord", "s/sub", "load 1/5/15 min")


def device_cells(r: Row) -> list[str]:
    return [
        f"{r.devices:,}",
        f"{r.share:g}",
        f"{r.sensord_share:.2f}",
        str(r.qos),
        _f(r.mosquitto_sub),
        _f(r.sensord),
        f"{r.sensord / r.mosquitto_sub:.2f}",
        " ".join(f"{x:.2f}" for x in r.load),
    ]


def print_table(head: tuple[str, ...], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)), flush=True)


def write_html(
    folder: Path, share_rows: list[Row], device_rows: list[Row], note: str, extra: Sequence[str] = ()
) -> Path:
    """The page: msg/s curves and tables, then `extra` sections (the latency curves)."""
    sections = [f"<p>{note}</p>"]
    for qos in sorted({r.qos for r in share_rows}):
        rows = [r for r in share_rows if r.qos == qos]
        series = {
            "mosquitto_sub": ([r.share for r in rows], [r.mosquitto_sub for r in rows]),
            "Node-RED": ([r.share for r in rows], [r.node_red or float("nan") for r in rows]),
            "sensord": ([r.share for r in rows], [r.sensord for r in rows]),
        }
        sections += [
            f"<h2>msg/s against alert share, QoS {qos}</h2>",
            line_chart(
                f"drain msg/s vs alert share, QoS {qos}",
                "alert share (% of messages)",
                "msg/s",
                series,
                colours=COLOURS,
            ),
        ]
    if share_rows:
        # Ratios measured side by side move less with the box's load than msg/s does.
        ratios: dict[str, tuple[list[float], list[float]]] = {}
        for r in share_rows:
            for name, peer in (("Node-RED", r.node_red), ("mosquitto_sub", r.mosquitto_sub)):
                xs, ys = ratios.setdefault(f"sensord/{name} QoS {r.qos}", ([], []))
                xs.append(r.share)
                ys.append(r.sensord / peer if peer else float("nan"))
        sections += [
            "<h2>sensord's ratios against alert share</h2>",
            line_chart("sensord / peer vs alert share", "alert share (% of messages)", "ratio", ratios),
            table(SHARE_HEAD, [share_cells(r) for r in share_rows]),
        ]
    if device_rows:
        xs = [float(r.devices) for r in device_rows]
        series = {
            "mosquitto_sub": (xs, [r.mosquitto_sub for r in device_rows]),
            "sensord": (xs, [r.sensord for r in device_rows]),
        }
        r0 = device_rows[0]
        sections += [
            f"<h2>msg/s against device count (alert share {r0.share:g} %, QoS {r0.qos})</h2>",
            line_chart("drain msg/s vs devices", "devices in the registry", "msg/s", series, colours=COLOURS),
            table(DEVICE_HEAD, [device_cells(r) for r in device_rows]),
        ]
    return write_index(folder, "sensord drain benchmark", [*sections, *extra])


def _csv(kind: type[float | int]) -> Any:
    return lambda text: [kind(x) for x in text.split(",") if x]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000, help="backlog size (default 100,000)")
    ap.add_argument(
        "--alert-share",
        type=_csv(float),
        default=list(SHARES),
        help="percent of messages changing an alert, comma-separated (default 0.02,1,10)",
    )
    ap.add_argument("--qos", type=_csv(int), default=[0, 1], help="default 0,1")
    ap.add_argument(
        "--devices",
        type=_csv(int),
        default=[],
        help="a device-count sweep for sensord (and mosquitto_sub), e.g. 1000,10000,100000",
    )
    ap.add_argument("--sweep-share", type=float, default=1.0, help="alert share of the device sweep (1)")
    ap.add_argument("--sweep-qos", type=int, default=1, help="QoS of the device sweep (1)")
    ap.add_argument("--repeat", type=int, default=1, help="drain each backlog R times, print medians (1)")
    ap.add_argument("--no-node-red", action="store_true", help="leave Node-RED out")
    ap.add_argument(
        "--overlap-commits",
        action="store_true",
        help="sensord as with batch.overlap_commits: true (the next batch evaluated while one commits)",
    )
    ap.add_argument("--html", type=Path, help="write DIR/index.html with the scaling curves")
    ap.add_argument("--latency", action="store_true", help="then bench/latency.py's sweeps, on the same page")
    ap.add_argument("--latency-seconds", type=float, default=25.0, help="length of a latency point (25)")
    ap.add_argument("--latency-baseline", help="git revision whose daemon's latency is measured first")
    args = ap.parse_args()
    if args.latency:
        try:  # a bad sweep stops before the drains rather than after them
            latency.sweep_stages(args.alert_share, args.devices, device_share=args.sweep_share)
        except ValueError as exc:
            ap.error(str(exc))
    return args


def latency_sweeps(args: argparse.Namespace) -> list[str]:
    """bench/latency.py's sweeps at the drain's alert shares and device counts; their HTML."""
    stages = latency.sweep_stages(args.alert_share, args.devices, device_share=args.sweep_share)
    print(f"\nlatency, publish -> signed webhook ({args.latency_seconds:g} s per point)")
    print(latency.HEADER, flush=True)
    results = latency.measure(stages, args.latency_seconds, baseline=args.latency_baseline)
    latency.print_results(results)
    note = f"<h2>Latency: publish → signed webhook</h2><p>{latency.note(args.latency_seconds)}</p>"
    return [note, *latency.html_sections(results)]


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    args = parse_args()
    n = args.messages
    red: Path | None = None
    if not args.no_node_red:
        try:
            red = _nodered.install()
        except _nodered.NodeRedUnavailableError as exc:
            print(f"Node-RED left out: {exc}")
    clients = ("mosquitto_sub", "sensord") if red is None else ("mosquitto_sub", "node_red", "sensord")
    share_rows: list[Row] = []
    device_rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="sensord-bench-") as d:
        run = Run(broker(Path(d) / "mosquitto"), Path(d), red, clients, args.overlap_commits)
        try:
            for share in args.alert_share:
                bl = backlog(DEFAULT_DEVICES, n, share)
                print(f"backlog: {n:,} messages, {bl.devices:,} devices, alert share {share:g} % requested")
                for qos in args.qos:
                    share_rows.append(median_row(run, bl, qos, args.repeat))
                    print_table(SHARE_HEAD, [share_cells(share_rows[-1])])
            sweep = Run(run.server, run.work, None, ("mosquitto_sub", "sensord"), run.overlap)
            for devices in args.devices:
                bl = backlog(devices, n, args.sweep_share)
                device_rows.append(median_row(sweep, bl, args.sweep_qos, args.repeat))
                print_table(DEVICE_HEAD, [device_cells(device_rows[-1])])
        finally:
            run.server.stop()
    print(f"\n{n:,} messages per backlog; msg/s from first message received to last processed")
    if share_rows:
        print_table(SHARE_HEAD, [share_cells(r) for r in share_rows])
    if device_rows:
        print()
        print_table(DEVICE_HEAD, [device_cells(r) for r in device_rows])
    lat: list[str] = []
    if args.latency:
        lat = latency_sweeps(args)
    if args.html is not None:
        note = (
            f"{n:,} messages per backlog, {os.cpu_count()} cores; msg/s from first message received to last "
            "processed; load average after each drain in the tables."
        )
        print(f"wrote {write_html(args.html, share_rows, device_rows, note, lat)}")


if __name__ == "__main__":
    main()
