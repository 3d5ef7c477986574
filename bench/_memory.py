"""Where a fleet's memory goes: tracemalloc snapshots around each stage of the daemon's
start (registry, rules, engine, decoder) and after a day of traffic run through the
pipeline in this process (no broker), grouped by the sensord module that allocated."""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sensord._metrics import Metrics
from sensord._pipeline import Pipeline, commit
from sensord._registry import Registry, load_registry
from sensord._settings import AlertSettings, BrokerSettings, DecodeSettings, OutboxSettings
from sensord._types import RawMessage
from sensord.alerts import Engine
from sensord.decode import Decoder
from sensord.outbox import Outbox
from sensord.rules import RuleSet, load_rules
from sensord.simulate import Scenario, generate
from sensord.sinks import DeadLetter

ROOT = Path(__file__).resolve().parent.parent
TOPIC_TEMPLATE = "sensord/{community}/{family}/{device_id}/{kind}"


def _mb(n: int) -> str:
    return f"{n / 2**20:7.1f} MB"


class Stages:
    """Grows a report: the memory each stage added, and who allocated it."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._last = tracemalloc.take_snapshot()

    def step(self, name: str, action: Callable[[], Any]) -> Any:
        t = time.process_time()
        out = action()
        cpu = time.process_time() - t
        snap = tracemalloc.take_snapshot()
        added = snap.compare_to(self._last, "filename")
        grew = sum(s.size_diff for s in added)
        self.lines.append(f"  {name:<28} +{_mb(grew)}  ({cpu:.2f} s CPU)")
        diff_snap = [s for s in added if s.size_diff > 0]
        diff_snap.sort(key=lambda s: -s.size_diff)
        self.lines.extend(
            f"      {_mb(s.size_diff)}  {_short(s.traceback[0].filename)}" for s in diff_snap[:5]
        )
        self._last = snap
        return out


def _short(name: str) -> str:
    marker = "/src/" if "/src/sensord/" in name else "site-packages/"
    return name.rsplit(marker, maxsplit=1)[-1]


def breakdown(registry_file: Path, day: Scenario, work: Path) -> list[str]:
    """Stage by stage: registry, rules, engine, decoder, then the day; plus the total."""
    gc.collect()
    tracemalloc.start()
    stages = Stages()
    reg: Registry = stages.step("registry", lambda: load_registry(registry_file))
    rules: RuleSet = stages.step("rules", lambda: load_rules(ROOT / "rules", reg))
    engine: Engine = stages.step("engine (rule state)", lambda: Engine(rules, reg, AlertSettings()))
    metrics = Metrics()
    decoder: Decoder = stages.step(
        "decoder", lambda: Decoder(reg, DecodeSettings(max_clock_skew_s=300), TOPIC_TEMPLATE)
    )
    pipeline = Pipeline(
        decoder=decoder,
        engine=engine,
        ack_topic_template=BrokerSettings().ack_topic_template,
        deadletter=DeadLetter(work / "dl.jsonl"),
        metrics=metrics,
    )
    outbox = Outbox(work / "outbox.sqlite3", ["webhook"], OutboxSettings(), metrics)

    def run_day() -> int:
        n = 0
        batch: list[RawMessage] = []
        start = time.time() - day.duration_s
        for ts, topic, payload, _qos in generate(day, seed=1, start_ts=start):
            batch.append(RawMessage(topic, payload, ts))
            if len(batch) == 5000:
                commit(outbox, pipeline.evaluate(batch))
                n += len(batch)
                batch = []
        if batch:
            commit(outbox, pipeline.evaluate(batch))
        return n + len(batch)

    n = stages.step("a day through the pipeline", run_day)
    total = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    outbox.close()
    return [*stages.lines, f"  {n} messages; traced in total {_mb(total)}"]
