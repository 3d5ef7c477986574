"""The batch commit off the event loop: it runs on the outbox's writer thread, the loop
keeps running while it fsyncs, and a batch is acknowledged only once its commit returned;
the engine snapshot is the state of its own batch, saved on a thread of its own after the
commit, without holding up the batches; what a commit sheds is reported on the loop's
thread."""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sensord._app import build_daemon
from sensord._errors import OutboxError
from sensord._metrics import Metrics
from sensord._settings import OutboxSettings
from sensord._types import AlertEvent
from sensord.outbox import Outbox
from sensord.outbox._snapshot import SnapshotFile
from sensord.sinks import MemorySink
from sensord.testing import MemorySource
from tests.unit.test_daemon_unit import msg, run_until, settings_for
from tests.unit.test_sinks import event


class TestWriterThread:
    def test_loop_runs_and_nothing_is_acked_while_the_commit_is_held(self, tmp_path: Path) -> None:
        """While a batch's commit is held on the writer thread, the event loop goes on (a
        coroutine releases it) and the batch stays unacknowledged; the ack follows the return."""
        now = time.time()
        source = MemorySource([[msg(1, "wb-01", "wristband", {"ts": now, "sos": True})]])
        sink = MemorySink("webhook")
        release = threading.Event()
        seen: dict[str, Any] = {}

        async def scenario() -> None:
            daemon, _ = await build_daemon(settings_for(tmp_path), sinks=[sink])
            daemon.source = source
            real_commit = daemon.outbox.commit

            def held(events: list[AlertEvent], **kw: Any) -> int:
                if events:
                    seen["thread"] = threading.current_thread().name
                    # Released by a coroutine: only possible if the loop is not blocked here.
                    seen["released_by_loop"] = release.wait(5)
                    seen["acked_before_return"] = list(source.acked)
                return real_commit(events, **kw)

            async def releaser() -> None:
                while "thread" not in seen:  # noqa: ASYNC110 - waiting on a plain flag
                    await asyncio.sleep(0.005)
                seen["acked_while_held"] = list(source.acked)
                release.set()

            daemon.outbox.commit = held  # type: ignore[method-assign,assignment]
            task = asyncio.create_task(releaser())
            await run_until(daemon, lambda: bool(sink.events) and bool(source.acked))
            await task

        asyncio.run(scenario())
        assert seen["thread"].startswith("outbox-writer")
        assert seen["released_by_loop"] is True
        assert seen["acked_while_held"] == []
        assert seen["acked_before_return"] == []
        assert source.acked == [1]


class TestSnapshotState:
    def test_encoded_later_it_is_the_state_when_taken(self, tmp_path: Path) -> None:
        """A snapshot state encoded after the engine moved on holds the state at the moment
        it was taken, not the later one."""
        now = time.time()

        async def scenario() -> tuple[bytes, bytes, bytes]:
            daemon, _ = await build_daemon(settings_for(tmp_path), sinks=[MemorySink("webhook")])
            pipeline = daemon.pipeline
            pipeline.evaluate([msg(1, "wb-01", "wristband", {"ts": now, "heart_rate": 70})])
            before = pipeline.engine.snapshot()
            state = pipeline.engine.snapshot_state()
            pipeline.evaluate([msg(2, "wb-01", "wristband", {"ts": now + 1, "heart_rate": 150, "sos": True})])
            after = pipeline.engine.snapshot()
            daemon.outbox.close()
            daemon.deadletter.close()
            return before, state.encode(), after

        before, encoded, after = asyncio.run(scenario())
        assert _arrays(encoded).keys() == _arrays(before).keys()
        assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(
            _arrays(encoded).values(), _arrays(before).values(), strict=True))  # fmt: skip
        assert not all(np.array_equal(a, b, equal_nan=True) for a, b in zip(
            _arrays(encoded).values(), _arrays(after).values(), strict=True))  # fmt: skip


def _arrays(blob: bytes) -> dict[str, Any]:
    with np.load(io.BytesIO(blob)) as z:
        return {k: z[k] for k in sorted(z.files)}


class TestSnapshotThread:
    def test_batches_commit_and_ack_while_a_snapshot_is_being_saved(self, tmp_path: Path) -> None:
        """A snapshot whose encoding hangs does not hold up the batch that took it nor the
        next: both are committed, delivered and acknowledged meanwhile, and the snapshot
        lands in its file once released."""
        now = time.time()
        source = MemorySource([
            [msg(1, "wb-01", "wristband", {"ts": now, "sos": True})],
            [msg(2, "wb-02", "wristband", {"ts": now + 1, "sos": True})],
        ])  # fmt: skip
        sink = MemorySink("webhook")
        release = threading.Event()
        seen: dict[str, Any] = {}

        async def scenario() -> None:
            settings = settings_for(tmp_path)
            alerts = settings.alerts.model_copy(update={"snapshot_every_s": 0.001})  # due every batch
            daemon, _ = await build_daemon(settings.model_copy(update={"alerts": alerts}), sinks=[sink])
            daemon.source = source
            real_save = daemon.outbox.snapshots.save_later

            def slow(encode: Any) -> bool:
                def held() -> bytes:
                    seen["released"] = release.wait(10)
                    return bytes(encode())

                return real_save(held)

            daemon.outbox.snapshots.save_later = slow  # type: ignore[method-assign]
            task = asyncio.create_task(daemon.run())
            deadline = time.monotonic() + 5
            while not (source.acked == [1, 2] and len(sink.events) == 2) and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a plain predicate
                await asyncio.sleep(0.01)
            seen["acked_while_held"] = list(source.acked)
            seen["file_while_held"] = daemon.outbox.snapshots.path.exists()
            release.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            daemon.outbox.close()  # waits for the snapshot being saved
            daemon.deadletter.close()
            seen["file_after"] = daemon.outbox.snapshots.path.exists()

        asyncio.run(scenario())
        assert seen["acked_while_held"] == [1, 2]
        assert seen["file_while_held"] is False
        assert seen["released"] is True
        assert seen["file_after"] is True


class TestSnapshotFile:
    def test_a_failed_save_keeps_the_previous_snapshot(self, tmp_path: Path) -> None:
        """A save that cannot write (its folder gone read-only here: a directory in the
        temporary file's place) raises OutboxError and leaves the previous file whole."""
        snap = SnapshotFile(tmp_path / "o.engine.npz")
        snap.save(b"first")
        (tmp_path / "o.engine.npz.tmp").mkdir()
        with pytest.raises(OutboxError, match="cannot write the engine snapshot"):
            snap.save(b"second")
        assert snap.load() == b"first"

    def test_a_second_background_save_is_skipped_while_one_is_under_way(self, tmp_path: Path) -> None:
        """save_later refuses (False) while the previous save is still running, so copies
        of the engine never queue behind a slow disk; the first one lands."""
        snap = SnapshotFile(tmp_path / "o.engine.npz")
        gate = threading.Event()

        def first() -> bytes:
            gate.wait(10)
            return b"first"

        assert snap.save_later(first) is True
        assert snap.save_later(lambda: b"second") is False
        gate.set()
        snap.finish()
        assert snap.load() == b"first"

    def test_an_older_database_row_is_read_when_there_is_no_file(self, tmp_path: Path) -> None:
        """An outbox written by an older sensord keeps its snapshot as a row; it is restored
        from there until the first file is saved, after which the file wins."""
        box = Outbox(tmp_path / "o.sqlite3", ("a",), OutboxSettings(), Metrics())
        box._db.execute("INSERT INTO engine_snapshot VALUES (1, 0, ?)", (b"row",))
        assert box.snapshot() == b"row"
        box.snapshots.save(b"file")
        assert box.snapshot() == b"file"
        box.close()


class TestShedOnTheWriterThread:
    def test_shed_deliveries_are_reported_on_the_loop_thread(self, tmp_path: Path) -> None:
        """A commit on the writer thread that sheds deliveries reports them (dead-letter,
        metrics) on the event loop's thread, once the commit returned."""
        reported: list[tuple[str, str]] = []
        box = Outbox(
            tmp_path / "o.sqlite3",
            ("a",),
            OutboxSettings(max_events=2),
            Metrics(),
            on_shed=lambda e, sink, _why: reported.append((e.event_id, threading.current_thread().name)),
        )

        async def scenario() -> None:
            await box.run_in_writer(lambda: box.commit([event(1), event(2), event(3)]))

        asyncio.run(scenario())
        box.close()
        assert reported == [("id-1", threading.current_thread().name)]


class TestStopDuringAQueuedWrite:
    def test_a_write_queued_behind_another_lands_though_its_caller_is_cancelled(self, tmp_path: Path) -> None:
        """A batch commit waiting behind another write (a delivery ack) when the daemon is
        stopped still runs: `finish_writes` returns only after it, so the stop-time snapshot
        never holds a batch whose events and checkpoint were not written."""
        outbox = Outbox(tmp_path / "o.sqlite3", ["webhook"], OutboxSettings(), Metrics())
        hold = threading.Event()

        async def scenario() -> None:
            first = asyncio.ensure_future(outbox.run_in_writer(lambda: hold.wait(5)))
            queued = asyncio.ensure_future(outbox.run_in_writer(lambda: outbox.commit([event(1)])))
            await asyncio.sleep(0.05)
            queued.cancel()
            await asyncio.sleep(0.05)
            hold.set()
            await first

        asyncio.run(scenario())
        outbox.finish_writes()
        assert [e.event_id for _, e in outbox.due("webhook", 10)] == ["id-1"]
        outbox.close()
