"""Framing benchmark: the MQTT parser with its C scanner against the pure-Python parser,
in one run, on the drain benchmark's backlog as the broker sends it.

    .venv/bin/python bench/framing.py [--messages 100000] [--qos 1] [--passes 9]

The backlog (bench/_backlog.py, 12,000 devices of six families) is encoded as PUBLISH
packets and fed to `Parser.feed` in 64 KB reads, as the socket hands them over; each
message then becomes the `RawMessage` the pipeline takes (what `MqttSource._received`
builds). Each side is timed on the process's CPU clock, the best of `--passes` passes,
alternating, so both see the same machine; prints µs per message and the ratio.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from collections.abc import Callable

from _backlog import messages, scenario
from sensord._types import RawMessage
from sensord.ingest import _packets as p

READ = 65_536  # what one socket read hands the parser at most


def wire(n: int, qos: int) -> list[bytes]:
    """n backlog messages as the broker sends them, cut into socket-sized reads."""
    sc = scenario(devices_per_family=2000, messages=n, incidents=False)
    msgs = messages(sc, n, start_ts=time.time() - 86400)
    data = b"".join(
        p.publish(t, pl, qos=qos, packet_id=(i % 65535) + 1 if qos else 0) for i, (t, pl) in enumerate(msgs)
    )
    return [data[i : i + READ] for i in range(0, len(data), READ)]


def frame(reads: list[bytes], *, compiled: bool, now: float = 0.0) -> list[RawMessage]:
    parser = p.Parser(compiled=compiled)
    out: list[RawMessage] = []
    for chunk in reads:
        pubs, _ = parser.feed(chunk)
        out += [RawMessage(topic, payload, now, pid or None) for topic, payload, _, pid in pubs]
    return out


def cpu(fn: Callable[[], object]) -> float:
    """The process's CPU time of one call."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    ap.add_argument("--passes", type=int, default=9)
    args = ap.parse_args()
    if not p.COMPILED:
        raise SystemExit("the C scanner is not built (sensord check says why): nothing to compare")
    reads = wire(args.messages, args.qos)
    n = len(frame(reads, compiled=False))
    assert frame(reads, compiled=True) == frame(reads, compiled=False), "the parsers disagree"
    gc.freeze()  # as the daemon: what was built before is not the collector's business
    pure = compiled = float("inf")
    for _ in range(args.passes):  # alternating, so both sides see the same machine
        pure = min(pure, cpu(lambda: frame(reads, compiled=False)))
        compiled = min(compiled, cpu(lambda: frame(reads, compiled=True)))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{n:,} messages, QoS {args.qos}, {len(reads)} reads of up to {READ:,} bytes; load {load}")
    print(f"pure Python parser  {pure * 1e6 / n:6.2f} us/message (framing + RawMessage)")
    print(f"C scanner           {compiled * 1e6 / n:6.2f} us/message")
    print(f"ratio               {pure / compiled:6.2f}x")


if __name__ == "__main__":
    main()
