"""Generation benchmark: how fast a day of the large scenario is produced as a recording.

    .venv/bin/python bench/generate.py [--hours 24] [--scenario simulators/large.yaml]

Measures, in the same run:
- baseline: writing the same number of messages, all one fixed payload, to a gzip
  recording (what the file format and compression cost on their own);
- sensord: `generate` (device models, incidents, noise) writing the scenario's stream to a
  gzip recording, as `sensord simulate --out` does.
Prints messages/s for both and the ratio.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import orjson

from sensord.replay import RecordingWriter
from sensord.simulate import generate, load_scenario, start_time

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", type=Path, default=ROOT / "simulators" / "large.yaml")
    ap.add_argument("--hours", type=float, default=24.0, help="how much of the scenario to generate")
    args = ap.parse_args()
    sc = load_scenario(args.scenario)
    sc = sc.model_copy(update={"duration_s": min(sc.duration_s, args.hours * 3600)})
    devices = sum(sc.devices.values())
    with tempfile.TemporaryDirectory(prefix="sensord-bench-") as d:
        t = time.perf_counter()
        n = 0
        stream = generate(sc, seed=1, start_ts=start_time(sc))
        with RecordingWriter(Path(d) / "scenario.jsonl.gz") as out:
            while chunk := [
                (ts, topic, payload) for ts, topic, payload, _ in itertools.islice(stream, 10_000)
            ]:
                out.write_many(chunk)
                n += len(chunk)
        gen_s = time.perf_counter() - t
        size = (Path(d) / "scenario.jsonl.gz").stat().st_size
        body = {"ts": 1.0, "heart_rate": 70, "spo2": 97.0, "battery_pct": 80.0}
        t = time.perf_counter()
        payload = orjson.dumps(body)
        with RecordingWriter(Path(d) / "baseline.jsonl.gz") as out:
            for lo in range(0, n, 10_000):
                out.write_many(
                    (float(i), "sensord/c/wristband/wb-1/telemetry", payload)
                    for i in range(lo, min(n, lo + 10_000))
                )
        base_s = time.perf_counter() - t
    print(f"{args.scenario.name}: {devices} devices, {args.hours:g} h of event time, {n:,} messages")
    print(f"recording: {size / 1e6:.1f} MB gzip ({size / n:.1f} bytes/message)")
    print(f"{'':<34}{'msg/s':>12}{'seconds':>10}")
    print(f"{'baseline (fixed payload, write)':<34}{n / base_s:>12,.0f}{base_s:>10.1f}")
    print(f"{'sensord generate (models + write)':<34}{n / gen_s:>12,.0f}{gen_s:>10.1f}")
    print(f"ratio sensord / baseline: {base_s / gen_s:.2f}")


if __name__ == "__main__":
    main()
