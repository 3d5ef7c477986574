"""Broker failover benchmark: the long version of `tests/faults/test_cluster_failover.py`.

A three-node nats-server cluster (config/nats-cluster.conf's settings) on free loopback
ports, the daemon with `broker.hosts` listing all three, a seeded workload of QoS 1
readings and acknowledgements published through another node, and the node the daemon
is connected to SIGKILLed several times under load (started again `--down` seconds
later; the cluster caught up before the next kill). Judged exactly against an offline
replay of the published stream.

    .venv/bin/python bench/failover.py                         # 4 kills in 120 s of load
    .venv/bin/python bench/failover.py --seconds 600 --kills 15
    .venv/bin/python bench/failover.py --redelivery-wait 0    # what the gathering prevents
    .venv/bin/python bench/failover.py --target daemon        # SIGKILL sensord, not a node
    .venv/bin/python bench/failover.py --target bridge --kills 1   # an edge bridge's node

Prints the run's row (events missing, extra, under two ids: each must be 0), then one row
per kill: what the node led, where the daemon went, how long no message was processed,
when the daemon had processed as many messages since the kill as were published since
(backlog drained), from how long after the kill new readings' alerts reached the webhook
within 2 s again, and the worst alert delay; then every broken promise; exit 1 if any.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from sensord.outbox import encode_event
from sensord.testing import ClusterRun, Workload, cluster_failover

RUN_COLUMNS = ("kills", "failovers", "published", "acked", "resent", "events", "LS events", "delivered",
               "missing", "extra", "two ids", "acks redated", "seconds")  # fmt: skip
KILL_COLUMNS = ("node", "led", "failed over to", "no ingest s", "backlog drained s", "on time again s",
                "worst alert delay s")


def _table(rows: list[dict[str, object]], columns: tuple[str, ...]) -> None:
    text = [{c: str(r.get(c, "")) for c in columns} for r in rows]
    widths = {c: max([len(c), *(len(r[c]) for r in text)]) for c in columns}
    print("  ".join(c.rjust(widths[c]) for c in columns))
    for r in text:
        print("  ".join(r[c].rjust(widths[c]) for c in columns))


def _run_row(run: ClusterRun) -> dict[str, object]:
    f = run.findings
    return {"kills": run.kills, "failovers": int(run.failovers), "published": run.published,
            "acked": run.acked, "resent": run.resent, "events": f.expected, "LS events": f.expected_ls,
            "delivered": f.distinct_ids, "missing": len(f.missing), "extra": len(f.unexpected),
            "two ids": len(f.two_ids), "acks redated": run.acks_redated, "seconds": round(run.seconds)}


def _post_mortem(run: ClusterRun, work: Path) -> Path:
    """For each device with a missing or extra transition: what was published for it,
    the reference's events and what the webhook got, on the publisher's clock (seconds
    since the first message was due), beside the kills."""
    keys = run.findings.missing + run.findings.unexpected + run.other_ids
    devices = {k[1] for k in keys} | {x[2] for x in run.slowest[:3]}
    origin = run.stream[0][0] if run.stream else 0.0
    per_s = 0.5 / 2.5  # wall seconds per stream second (Workload: wall_tick_s / tick_s)
    started = run.per_kill[0].at - run.kills_at[0] if run.per_kill else 0.0
    doc = {
        "kills_at": run.kills_at,
        "processed": run.processed,
        "devices": {
            d: {
                "published": [(round((ts - origin) * per_s, 3), topic, payload.decode())
                              for ts, topic, payload, _ in run.stream if f"/{d}" in topic],
                "reference": [orjson.loads(encode_event(e)) for e in run.reference if e.device_id == d],
                "received": [{"at": round(r.at - started, 3), "id": r.headers.get("webhook-id"),
                              "body": r.body} for r in run.received if r.body.get("device") == d],
            }
            for d in devices
        },
    }
    path = work / "post-mortem.json"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return path


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0, help="seconds of load (default 120)")
    ap.add_argument("--kills", type=int, default=4, help="SIGKILLs of the daemon's node (default 4)")
    ap.add_argument("--down", type=float, default=3.0, help="seconds a killed node stays down (default 3)")
    ap.add_argument("--redelivery-wait", type=float, default=6.0,
                    help="the daemon's broker.redelivery_wait_s (default 6; the cluster's ack_wait is 4)")
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--target", choices=("node", "daemon", "bridge"), default="node",
                    help="SIGKILL the daemon's node (default), the daemon itself, or the node an "
                         "edge Mosquitto bridges the readings through (use --kills 1)")  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, node data) and print it")
    return ap.parse_args()


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    args = _args()
    load = Workload(wristbands=150, fire=50, bins=100, ticks=int(args.seconds / 0.5), wall_tick_s=0.5)
    print(f"load: {load.devices} devices, one QoS 1 reading each per {load.wall_tick_s}s "
          f"({load.devices / load.wall_tick_s:.0f} msg/s) for {args.seconds:.0f}s; {args.kills} kills, "
          f"down {args.down}s, redelivery_wait_s {args.redelivery_wait}, seed {args.seed}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="sensord-failover-"))
    try:
        run = cluster_failover(work, load, kills=args.kills, seed=args.seed, down_s=args.down,
                               redelivery_wait_s=args.redelivery_wait, target=args.target)
    finally:
        if args.keep:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    _table([_run_row(run)], RUN_COLUMNS)
    print()
    _table([k.row() for k in run.per_kill], KILL_COLUMNS)
    print("slowest alerts (delay s, rule, device, published at s):", run.slowest)
    problems = run.problems()
    if args.keep:
        print(f"post-mortem: {_post_mortem(run, work)}")
    for p in problems:
        print(p)
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    t0 = time.monotonic()
    try:
        main()
    finally:
        print(f"total {time.monotonic() - t0:.0f}s")
