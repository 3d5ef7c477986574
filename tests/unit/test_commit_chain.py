"""Batch commits queued on the writer thread while the next batch is evaluated
(outbox.CommitChain, Daemon._process_loop): order, retries, acknowledgements, and the
multi-row statements and encodings that keep the writer thread off the GIL."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sensord._app import build_daemon
from sensord._daemon import SettledLock
from sensord._errors import OutboxError
from sensord._pipeline import active_from_event, encode_active, encode_active_event
from sensord._settings import BatchSettings
from sensord._types import AlertEvent, AlertStatus, RawMessage
from sensord.outbox import CommitChain, Outbox, decode_event
from sensord.sinks import MemorySink
from sensord.testing import MemorySource
from tests.unit.test_daemon_unit import msg, run_until, settings_for
from tests.unit.test_sinks import event, outbox


class TestChain:
    def test_a_failed_write_is_retried_before_any_write_queued_after_it(self, tmp_path: Path) -> None:
        """Write 1 fails once: writes 2 and 3, queued behind it, run only after its retry
        went through, and the `then`s come in the order the writes were queued."""
        box = outbox(tmp_path)
        ran: list[str] = []
        thens: list[int] = []
        failures = [OutboxError("disk full")]

        def write(n: int) -> None:
            if n == 1 and failures:
                ran.append("1 failed")
                raise failures.pop()
            ran.append(str(n))

        async def scenario() -> None:
            chain = CommitChain(box, retry_s=0.01)
            then = thens.append
            tasks = [chain.submit(functools.partial(write, n), functools.partial(then, n)) for n in (1, 2, 3)]
            await asyncio.wait_for(asyncio.gather(*tasks), 5)

        asyncio.run(scenario())
        box.finish_writes()
        assert ran == ["1 failed", "1", "2", "3"]
        assert thens == [1, 2, 3]

    def test_a_defect_in_a_write_stops_every_write_after_it(self, tmp_path: Path) -> None:
        """Not a disk error but a defect: it is raised to whoever waits, and nothing queued
        after it runs (its checkpoint would land ahead of the batch it follows)."""
        box = outbox(tmp_path)
        ran: list[int] = []

        def broken() -> None:
            raise ValueError("a defect")

        async def scenario() -> tuple[BaseException | None, BaseException | None]:
            chain = CommitChain(box, retry_s=0.01)
            first = chain.submit(broken, lambda: None)
            second = chain.submit(lambda: ran.append(2), lambda: None)
            out = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 5)
            return out[0] if isinstance(out[0], BaseException) else None, (
                out[1] if isinstance(out[1], BaseException) else None
            )

        first_exc, second_exc = asyncio.run(scenario())
        box.finish_writes()
        assert isinstance(first_exc, ValueError)
        assert isinstance(second_exc, ValueError)
        assert ran == []

    def test_the_settled_lock_waits_for_queued_writes(self, tmp_path: Path) -> None:
        """An API action takes the batch lock only after the batch commits queued before it
        have landed, so its own write never lands ahead of them."""
        box = outbox(tmp_path)
        release = threading.Event()
        order: list[str] = []

        def held() -> None:
            release.wait(5)
            order.append("batch write")

        async def scenario() -> None:
            chain = CommitChain(box)
            lock = SettledLock(asyncio.Lock(), chain)
            chain.submit(held, lambda: order.append("batch acked"))
            await asyncio.sleep(0.05)
            assert chain.waiting_s() > 0  # the health check sees a write not landed
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, release.set)
            async with lock:
                order.append("action")

        asyncio.run(scenario())
        box.finish_writes()
        assert order == ["batch write", "batch acked", "action"]


class TestDaemonPipelining:
    def test_the_next_batch_is_evaluated_while_a_commit_is_held(self, tmp_path: Path) -> None:
        """Batch 1's commit is held on the writer thread until batch 2 has been evaluated:
        possible only if evaluation does not wait for the commit. Acks stay in order and
        come only after each batch's own commit."""
        now = time.time()
        source = MemorySource(
            [
                [msg(1, "wb-01", "wristband", {"ts": now, "sos": True})],
                [msg(2, "wb-02", "wristband", {"ts": now + 1, "sos": True})],
            ]
        )
        sink = MemorySink("webhook")
        second_evaluated = threading.Event()
        seen: dict[str, Any] = {}

        async def scenario() -> None:
            # Batches of one are full batches: the loop is behind the stream.
            batch = BatchSettings(max_size=1, overlap_commits=True)
            settings = settings_for(tmp_path).model_copy(update={"batch": batch})
            daemon, _ = await build_daemon(settings, sinks=[sink])
            daemon.source = source
            real_evaluate = daemon.pipeline.evaluate
            real_commit = daemon.outbox.commit

            def evaluate(messages: list[RawMessage]) -> Any:
                out = real_evaluate(messages)
                if messages[0].token == 2:
                    seen["acked_when_2_evaluated"] = list(source.acked)
                    second_evaluated.set()
                return out

            def commit(events: list[AlertEvent], **kw: Any) -> int:
                if events and events[0].device_id == "wb-01":
                    seen["evaluated_while_held"] = second_evaluated.wait(5)
                return real_commit(events, **kw)

            daemon.pipeline.evaluate = evaluate  # type: ignore[method-assign,assignment]
            daemon.outbox.commit = commit  # type: ignore[method-assign,assignment]
            await run_until(daemon, lambda: source.acked == [1, 2] and len(sink.events) == 2)

        asyncio.run(scenario())
        assert seen["evaluated_while_held"] is True
        assert seen["acked_when_2_evaluated"] == []
        assert source.acked == [1, 2]

    def test_in_steady_traffic_a_commit_lands_before_the_next_batch(self, tmp_path: Path) -> None:
        """Small batches (the default max_size, traffic the loop keeps up with): each
        batch's commit lands and is acknowledged before the next batch is evaluated,
        so the writer thread never competes with the loop for the GIL."""
        now = time.time()
        source = MemorySource(
            [
                [msg(1, "wb-01", "wristband", {"ts": now, "sos": True})],
                [msg(2, "wb-02", "wristband", {"ts": now + 1, "sos": True})],
            ]
        )
        sink = MemorySink("webhook")
        seen: dict[str, Any] = {}

        async def scenario() -> None:
            daemon, _ = await build_daemon(settings_for(tmp_path), sinks=[sink])
            daemon.source = source
            real_evaluate = daemon.pipeline.evaluate

            def evaluate(messages: list[RawMessage]) -> Any:
                if messages[0].token == 2:
                    seen["acked_when_2_evaluated"] = list(source.acked)
                return real_evaluate(messages)

            daemon.pipeline.evaluate = evaluate  # type: ignore[method-assign,assignment]
            await run_until(daemon, lambda: source.acked == [1, 2] and len(sink.events) == 2)

        asyncio.run(scenario())
        assert seen["acked_when_2_evaluated"] == [1]


class TestMultiRowStatements:
    def test_events_stored_across_statements_keep_order_and_skip_duplicates(self, tmp_path: Path) -> None:
        """Two rows per statement (a tiny variable limit): seven events, one of them a
        re-processed duplicate, are stored once each, in order, for every sink."""
        box = outbox(tmp_path)
        box._max_variables = 9
        events = [event(n) for n in (1, 2, 3, 4, 5, 6)]
        assert box.commit(events[:2]) == 2
        assert box.commit([events[1], *events[2:]]) == 4
        for sink in ("a", "b"):
            assert [e.event_id for _, e in box.due(sink, 10)] == [f"id-{n}" for n in range(1, 7)]
        box.close()

    def test_checkpoint_rows_upserted_and_deleted_across_statements(self, tmp_path: Path) -> None:
        box = outbox(tmp_path)
        box._max_variables = 3
        rows = [(f"fp-{n}", encode_active(active_from_event(event(n)))) for n in range(5)]
        box.commit([], upsert_active=rows)
        box.commit([], upsert_active=rows[:1], delete_active=["fp-1", "fp-3", "fp-4"])
        assert sorted(fp for fp, _ in box_rows(box)) == ["fp-0", "fp-2"]
        box.close()


def box_rows(box: Outbox) -> list[tuple[str, bytes]]:
    return [(str(fp), bytes(body)) for fp, body in box._db.execute("SELECT * FROM active_alerts")]


class TestCheckpointEncoding:
    @pytest.mark.parametrize("status", [AlertStatus.FIRING, AlertStatus.PENDING])
    @pytest.mark.parametrize("family", ["bin", "community"])
    def test_the_row_from_an_event_is_the_bytes_of_the_active_alert(
        self, status: AlertStatus, family: str
    ) -> None:
        """encode_active_event writes what encode_active(active_from_event(...)) wrote, so a
        checkpoint written by either reads back the same."""
        e = decode_event(_with(event(3), status=status, family=family))
        assert encode_active_event(e) == encode_active(active_from_event(e))


def _with(e: AlertEvent, **changes: Any) -> bytes:
    import dataclasses  # noqa: PLC0415 - only here

    from sensord.outbox import encode_event  # noqa: PLC0415 - only here

    return encode_event(dataclasses.replace(e, **changes))


class TestEventSubjects:
    def test_a_kept_subject_gives_the_event_a_fresh_one_gives(self, tmp_path: Path) -> None:
        """The engine keeps each alert's fingerprint, labels, place and names: its second
        event is the event built from scratch, and its dicts are its own."""
        from sensord._registry import load_registry  # noqa: PLC0415 - only here
        from sensord._settings import AlertSettings  # noqa: PLC0415 - only here
        from sensord.alerts import Engine  # noqa: PLC0415 - only here
        from sensord.alerts._events import make_event  # noqa: PLC0415 - only here
        from sensord.alerts._model import _params  # noqa: PLC0415 - only here
        from sensord.rules import load_rules  # noqa: PLC0415 - only here

        settings = settings_for(tmp_path)
        registry = load_registry(settings.input_path(settings.registry))
        rules = load_rules(settings.input_path(settings.rules_dir), registry)
        engine = Engine(rules, registry, AlertSettings())
        fr = rules.by_family[next(iter(rules.by_family))]
        rule = next(r for r in fr.rules if r.when is not None)
        device = registry.devices(rule.family)[0]
        params = _params(rule, fr, device.index)
        args: dict[str, Any] = {"status": AlertStatus.FIRING, "starts_at": 10.0, "ends_at": None,
                                "event_time": 11.0, "values": {"ts": 11.0}}  # fmt: skip
        first = engine._ev(rule, device, params, AlertStatus.FIRING, 10.0, None, 11.0, {"ts": 11.0})
        second = engine._ev(rule, device, params, AlertStatus.FIRING, 10.0, None, 11.0, {"ts": 11.0})
        fresh = make_event(rule, device, params, **args)
        assert first == fresh
        assert second == fresh
        assert second.labels is not first.labels
        assert second.location is not first.location
