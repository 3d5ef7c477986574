"""Fault-injection benchmark: the scenarios of `tests/faults`, long. The daemon SIGKILLed
at seeded random points under QoS 1 load, the webhook (503, then hanging) and InfluxDB
down for minutes under load, Mosquitto SIGKILLed under load; each judged against an
offline replay of the stream it published.

    .venv/bin/python bench/faults.py            # the CI sizes (about 4 minutes)
    .venv/bin/python bench/faults.py --long     # 20 kills, 3-minute outages (about 20 minutes)
    .venv/bin/python bench/faults.py --only sinks --outage 120 --keep
    .venv/bin/python bench/faults.py --long --only dispatch   # with a dispatch file on

Prints one table row per scenario and, below it, every broken promise; exit 1 if any.
"""

from __future__ import annotations

import argparse
import functools
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import orjson

from sensord.outbox import encode_event
from sensord.testing import Run, Workload, broker_kills, daemon_kills, dispatch_kills, sinks_down

COLUMNS = (
    "scenario",
    "kills",
    "published",
    "acked",
    "resent",
    "events",
    "LS events",
    "delivered",
    "missing LS",
    "missing",
    "two ids",
    "resurrected",
    "out of order",
    "LS wait max s",
    "LS wait med s",
    "LS behind ordinary",
    "seconds",
)


def _print_table(runs: list[Run]) -> None:
    rows = [{k: str(v) for k, v in run.row().items()} for run in runs]
    if not rows:  # only the dispatch scenario ran: it prints its own line
        return
    widths = {c: max([len(c), *(len(r.get(c, "")) for r in rows)]) for c in COLUMNS}
    print("  ".join(c.rjust(widths[c]) for c in COLUMNS))
    for r in rows:
        print("  ".join(r.get(c, "").rjust(widths[c]) for c in COLUMNS))


def _post_mortem(run: Run, folder: Path) -> Path:
    """Everything the judge saw, for reading after the run: the reference events, every
    request the receiver answered (in order) and the wall-clock time of each kill."""
    path = folder / (run.name.replace(" ", "-").replace("(", "").replace(")", "") + ".json")
    path.write_bytes(
        orjson.dumps(
            {
                "kill_times": run.kill_times,
                "reference": [orjson.loads(encode_event(e)) for e in run.reference],
                "received": [
                    {
                        "id": r.headers.get("webhook-id"),
                        "answered": r.answered,
                        "valid": r.valid,
                        "at": r.at,
                        "body": r.body,
                    }
                    for r in run.received
                ],
            }
        )
    )
    return path


def _dispatch(work: Path, load: Workload, kills: int, seed: int) -> list[tuple[str, str]]:
    """Every alert routed to one chat robot, the daemon SIGKILLed: its life-safety
    messages judged against the reference. Returns the problems."""
    name = "dispatch SIGKILL"
    try:
        d = dispatch_kills(work, load, kills=kills, seed=seed)
    except (TimeoutError, RuntimeError, AssertionError) as exc:
        return [(name, f"did not finish: {exc}")]
    print(
        f"{name}: {d.kills} kills, {d.expected} life-safety messages expected, {d.received} received, "
        f"{len(d.missing)} missing, {len(d.unexpected)} not in the reference, {d.seconds:.0f} s",
        flush=True,
    )
    return [(name, p) for p in d.problems()]


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--long", action="store_true", help="the long sizes: 20 kills, 180 s outages")
    ap.add_argument(
        "--only",
        choices=["daemon", "sinks", "broker", "dispatch"],
        action="append",
        help="run only these scenarios (repeatable)",
    )
    ap.add_argument("--kills", type=int, help="daemon SIGKILLs (CI 3, long 20)")
    ap.add_argument("--broker-kills", type=int, help="broker SIGKILLs (CI 2, long 10)")
    ap.add_argument("--outage", type=float, help="seconds the sinks are down (CI 20, long 180)")
    ap.add_argument("--ticks", type=int, help="ticks of load for the kill scenarios (CI 50, long 400)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, outbox) and print it")
    return ap.parse_args()


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    args = _args()
    kills = args.kills or (20 if args.long else 3)
    broker = args.broker_kills or (10 if args.long else 2)
    outage = args.outage or (180.0 if args.long else 20.0)
    ticks = args.ticks or (400 if args.long else 50)
    load = Workload(ticks=ticks, seed=args.seed)
    only = set(args.only or ["daemon", "sinks", "broker", "dispatch"])
    print(f"load: {load.devices} devices, {ticks} ticks of {load.wall_tick_s}s, seed {args.seed}")
    work = Path(tempfile.mkdtemp(prefix="sensord-faults-"))
    runs: list[Run] = []
    failed: list[tuple[str, str]] = []

    def attempt(name: str, scenario: Callable[[], Run]) -> None:
        # One scenario that cannot finish (a timeout) must not cost the others' figures.
        try:
            run = scenario()
        except (TimeoutError, RuntimeError, AssertionError) as exc:
            failed.append((name, f"did not finish: {exc}"))
            print(f"{name}: did not finish: {exc}", flush=True)
            return
        runs.append(run)
        print(f"{name}: {run.row()}", flush=True)
        if args.keep:
            print(f"{name}: post-mortem in {_post_mortem(run, work)}", flush=True)

    try:
        if "daemon" in only:
            attempt(
                "daemon SIGKILL", lambda: daemon_kills(work / "daemon", load, kills=kills, seed=args.seed)
            )
        if "sinks" in only:
            # The load lasts as long as the outage (the scenario sizes it from `outage`).
            short = replace(load, ticks=1)
            for mode in ("503", "hang"):
                attempt(
                    f"sinks down ({mode})",
                    functools.partial(sinks_down, work / f"sinks-{mode}", short, mode=mode, outage_s=outage),
                )
        if "broker" in only:
            attempt(
                "broker SIGKILL",
                lambda: broker_kills(work / "broker", load, kills=broker, seed=args.seed + 1),
            )
        if "dispatch" in only:
            failed.extend(_dispatch(work / "dispatch", load, kills, args.seed + 2))
    finally:
        if args.keep:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    _report(runs, failed)


def _report(runs: list[Run], failed: list[tuple[str, str]]) -> None:
    """The table, then every broken promise; exit 1 if any."""
    _print_table(runs)
    problems = failed + [(run.name, p) for run in runs for p in run.problems()]
    for name, p in problems:
        print(f"{name}: {p}")
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    t0 = time.monotonic()
    try:
        main()
    finally:
        print(f"total {time.monotonic() - t0:.0f}s")
