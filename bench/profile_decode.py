"""In-process profile of the decode path: decode → default rules → alert events → outbox
commit, without the network, at a quiet and at alert-heavy mixes.

    .venv/bin/python bench/profile_decode.py [--messages 100000] [--profile]
    .venv/bin/python bench/profile_decode.py --baseline /work/main   # before/after in one run

The backlog is the drain benchmark's (bench/_backlog.py). For an alert share s, about
s·n/2 messages are rewritten so that they change an alert and the device's next reading
changes it back: a bin reading 95 % full, a smoke alarm, and (one per wristband) an SOS
press. The alert events per message actually produced are printed beside the figures.

With `--baseline DIR`, each measurement runs in a child process, alternating between
DIR/src (before) and this tree's src (after), so the two see the same machine load; the
figures per CPU-second of the process are the steadier ones when other work shares the box.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import logging
import os
import pstats
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from _backlog import messages, registry_doc, scenario
from sensord._metrics import Metrics
from sensord._pipeline import Pipeline, commit
from sensord._registry import parse_registry
from sensord._settings import AlertSettings, BrokerSettings, DecodeSettings, OutboxSettings
from sensord._types import RawMessage
from sensord.alerts import Engine
from sensord.decode import Decoder
from sensord.outbox import Outbox
from sensord.rules import load_rules
from sensord.sinks import DeadLetter

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve()
TOPIC_TEMPLATE = "sensord/{community}/{family}/{device_id}/{kind}"
SHARES = (0.0002, 0.01, 0.1)


@dataclass(frozen=True)
class Run:
    """One measurement: n messages through evaluate (+ commit)."""

    share: float
    msg_s: float
    evaluate_s: float
    commit_s: float
    events: int
    accepted: int
    cpu_msg_s: float = 0.0  # per second of this process's CPU time: steadier on a busy box


def alert_mix(msgs: list[tuple[str, bytes]], share: float) -> list[tuple[str, bytes]]:
    """The backlog with about share·n/2 messages rewritten to flip an alert (see module doc)."""
    want = int(share * len(msgs) / 2)
    if want == 0:
        return msgs
    out = list(msgs)
    step = max(1, len(msgs) // (want * 2))  # bins, fire and wristbands are half of the mix
    sos_done: set[str] = set()
    done = 0
    for i in range(0, len(out), step):
        topic, payload = out[i]
        family, device = topic.split("/")[2:4]
        body = orjson.loads(payload)
        if family == "bin":
            body["fill_pct"] = 95.0
        elif family == "fire":
            body["smoke_alarm"] = True
        elif family == "wristband" and device not in sos_done:
            body["sos"] = True
            sos_done.add(device)
        else:
            continue
        out[i] = (topic, orjson.dumps(body))
        done += 1
        if done >= want:
            break
    return out


def backlog(n: int) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    """The drain benchmark's backlog and registry. Only its first minutes are generated:
    a whole day of the scenario takes minutes to generate and the backlog is its start."""
    sc = scenario().model_copy(update={"duration_s": 600})
    return messages(sc, n, start_ts=time.time() - 86400), registry_doc(sc)


def measure(
    base: tuple[list[tuple[str, bytes]], dict[str, Any]],
    share: float,
    batch: int,
    *,
    profile: bool,
    work: Path,
) -> tuple[Run, str]:
    raw = alert_mix(base[0], share)
    n = len(raw)
    reg = parse_registry(base[1], source="bench")
    metrics = Metrics()
    pipeline = Pipeline(
        decoder=Decoder(reg, DecodeSettings(max_clock_skew_s=0), TOPIC_TEMPLATE),
        engine=Engine(load_rules(ROOT / "rules", reg), reg, AlertSettings()),
        ack_topic_template=BrokerSettings().ack_topic_template,
        deadletter=DeadLetter(work / "dl.jsonl"),
        metrics=metrics,
    )
    outbox = Outbox(work / f"outbox-{share}.sqlite3", ["webhook"], OutboxSettings(), metrics)
    now = time.time()
    batches = [
        [RawMessage(t, p, now, k) for k, (t, p) in enumerate(raw[i : i + batch], start=i)]
        for i in range(0, n, batch)
    ]
    del raw
    prof = cProfile.Profile() if profile else None
    events = accepted = 0
    ev_s = co_s = 0.0
    gc.collect()
    if prof is not None:
        prof.enable()
    cpu = time.process_time()
    for b in batches:
        t0 = time.perf_counter()
        ev = pipeline.evaluate(b)
        t1 = time.perf_counter()
        commit(outbox, ev)
        co_s += time.perf_counter() - t1
        ev_s += t1 - t0
        events += len(ev.events)
        accepted += ev.accepted
    cpu = time.process_time() - cpu
    if prof is not None:
        prof.disable()
    outbox.close()
    text = ""
    if prof is not None:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
        text = buf.getvalue()
    return Run(share, n / (ev_s + co_s), ev_s, co_s, events, accepted, n / cpu), text


def child(args: argparse.Namespace) -> None:
    """Measure once per share in this process; print one JSON line per share."""
    base = backlog(args.messages)
    with tempfile.TemporaryDirectory(prefix="sensord-prof-") as d:
        for share in args.share:
            run, text = measure(base, share, args.batch, profile=args.profile, work=Path(d))
            if text:
                sys.stderr.write(f"--- share {share:.2%}, top 15 by self time ---\n{text}")
            sys.stdout.write(json.dumps(run.__dict__) + "\n")
            sys.stdout.flush()


def spawn(src: Path, args: argparse.Namespace, share: float) -> Run:
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{HERE.parent}"}
    cmd = [sys.executable, str(HERE), "--child", "--messages", str(args.messages)]
    cmd += ["--batch", str(args.batch), "--share", str(share)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=900).stdout
    return Run(**json.loads(out.strip().splitlines()[-1]))


def compare(args: argparse.Namespace) -> None:
    before_src, after_src = Path(args.baseline).resolve() / "src", ROOT / "src"
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; {args.messages} messages")
    head = ("alert share", "events/msg", "before msg/s", "after msg/s", "ratio", "per CPU-s", "ratio", "load")
    print(
        f"{head[0]:<12}{head[1]:>11}{head[2]:>14}{head[3]:>13}{head[4]:>7}"
        f"{head[5]:>22}{head[6]:>7}{head[7]:>7}"
    )
    for share in args.share:
        befores, afters = [], []
        for _ in range(args.repeat):
            befores.append(spawn(before_src, args, share))
            afters.append(spawn(after_src, args, share))
        b, a = max(r.msg_s for r in befores), max(r.msg_s for r in afters)
        bc, ac = max(r.cpu_msg_s for r in befores), max(r.cpu_msg_s for r in afters)
        ev = afters[0].events / args.messages
        print(
            f"{share:<12.2%}{ev:>11.4%}{b:>14,.0f}{a:>13,.0f}{a / b:>7.2f}"
            f"{bc:>11,.0f} → {ac:>7,.0f}{ac / bc:>7.2f}{os.getloadavg()[0]:>7.2f}"
        )


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--share", type=float, action="append", help="alert share (repeatable)")
    ap.add_argument("--profile", action="store_true", help="print the top 15 functions by self time")
    ap.add_argument("--baseline", help="a checkout to compare against (its src/ is 'before')")
    ap.add_argument("--repeat", type=int, default=2, help="runs per side with --baseline (best counts)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.share = args.share or list(SHARES)
    if args.baseline:
        compare(args)
        return
    if args.child:
        child(args)
        return
    print(f"load average {os.getloadavg()[0]:.2f}; {args.messages} messages, batches of {args.batch}")
    base = backlog(args.messages)
    with tempfile.TemporaryDirectory(prefix="sensord-prof-") as d:
        for share in args.share:
            run, text = measure(base, share, args.batch, profile=args.profile, work=Path(d))
            print(
                f"alert share {share:.2%}: {run.msg_s:,.0f} msg/s ({run.cpu_msg_s:,.0f} per CPU-s; "
                f"evaluate {run.evaluate_s:.2f} s, "
                f"commit {run.commit_s:.2f} s), {run.events} events = {run.events / args.messages:.3%}"
                f" of messages, {run.accepted} accepted"
            )
            if text:
                print(text)


if __name__ == "__main__":
    main()
