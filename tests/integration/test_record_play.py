"""Recording live traffic and playing recordings back, against a real broker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from sensord._registry import parse_registry
from sensord._settings import BrokerSettings, Settings
from sensord.replay import Limits, play, read_recording, record, replay, write_recording
from sensord.rules import load_rules
from sensord.simulate import generate, load_scenario, registry_for
from sensord.testing import MosquittoServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_recording_of_a_live_run_replays_to_the_same_alerts(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    """A scenario is played to a broker while a recorder records it; the recording has
    every message in order and replays offline to the same alert events as the original."""
    sc = load_scenario(ROOT / "simulators" / "neighbourhood.yaml")
    original = tmp_path / "original.jsonl.gz"
    n = write_recording(
        original, ((ts, t, p) for ts, t, p, _ in generate(sc, seed=5, start_ts=time.time() - 700))
    )
    recorded = tmp_path / "recorded.jsonl.gz"

    async def go() -> int:
        rec_settings = BrokerSettings(
            port=mosquitto.port, client_id="it-recorder", clean_session=True, subscriptions=("sensord/#",)
        )
        recorder = asyncio.create_task(
            record(rec_settings, recorded, Limits(messages=n, seconds=60), progress=False)
        )
        await asyncio.sleep(0.5)  # subscribed before the first message
        pub = BrokerSettings(port=mosquitto.port, client_id="it-player", clean_session=True, subscriptions=())
        sent = await play(read_recording(original), pub, speed=None, progress=False)
        assert sent == n
        return await recorder

    assert asyncio.run(go()) == n
    a, b = list(read_recording(original)), list(read_recording(recorded))
    assert [(m.topic, m.payload) for m in b] == [(m.topic, m.payload) for m in a]
    reg = parse_registry(registry_for(sc), source="scenario")
    rules = load_rules(ROOT / "rules", reg)
    settings = Settings.model_validate({"decode": {"max_clock_skew_s": 0}})
    want = replay(a, registry=reg, rules=rules, settings=settings)
    got = replay(b, registry=reg, rules=rules, settings=settings)
    assert [e.event_id for e in got.events] == [e.event_id for e in want.events]
    assert want.events, "the scenario raised no alert; the test proves little"


def test_play_paces_by_receive_time(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """At --speed 10 a recording spanning 20 s of receive time takes about 2 s to play."""
    rec = tmp_path / "paced.jsonl"
    write_recording(
        rec, [(1000.0 + i, f"sensord/c/bin/b{i}/telemetry", b'{"fill_pct": 1}') for i in range(21)]
    )
    settings = BrokerSettings(port=mosquitto.port, client_id="it-pacer", clean_session=True, subscriptions=())
    t = time.monotonic()
    assert asyncio.run(play(read_recording(rec), settings, speed=10, progress=False)) == 21
    assert 1.8 <= time.monotonic() - t < 4.0
