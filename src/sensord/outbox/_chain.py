"""Batch commits queued in order, so the next batch is evaluated while one is written.

A batch's commit (its events, checkpoint and notices: one durable SQLite transaction with
an fsync) used to be awaited before the next batch was evaluated, so the rule engine sat
idle for the length of every commit: a fifth of the drain's time when one message in ten
changes an alert. Here a commit is queued on the outbox's writer thread the moment its
batch is evaluated, and the loop goes on to the next batch; the writer thread writes
meanwhile, on the other core (SQLite and fsync release the GIL).

What does not change: a batch is acknowledged only after its commit is durable, batches
land and are acknowledged in the order they were evaluated, and a failed write (a full or
failing disk) is retried until it goes through, with nothing queued after it landing
first. That last part is what the sequence numbers are for: the writer thread runs
queued writes in turn, and a write queued behind one that failed must not run before the
failed one is retried, or a checkpoint would land ahead of the events of the batch
before it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sensord._errors import OutboxError
from sensord.outbox._sqlite import Outbox

log = logging.getLogger("sensord.outbox")


class _NotRun(Exception):  # noqa: N818 - not an error: a write that waits for its turn
    """A write reached the writer thread while an earlier one has not landed yet."""


class CommitChain:
    """Writes queued at once and landed in order; each one's `then` (a batch's
    acknowledgement) runs after its own write and after every earlier one's `then`."""

    def __init__(self, outbox: Outbox, *, retry_s: float = 0.5, max_retry_s: float = 10.0) -> None:
        self._outbox = outbox
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._issued = 0  # the last write queued (event loop thread)
        self._next = 1  # the write whose turn it is (writer thread only)
        self._last: asyncio.Task[None] | None = None
        # When each write not landed yet was queued: the health check's "stuck" clock.
        self._queued_at: dict[int, float] = {}

    def submit(self, write: Callable[[], object], then: Callable[[], None]) -> asyncio.Task[None]:
        """Queue `write` on the writer thread now, behind every write queued before it,
        and return the task that waits for it (retrying it after an OutboxError) and
        then runs `then` on the event loop. Cancelling whoever awaits the task does not
        cancel the write: once queued it lands (the outbox's `finish_writes` waits)."""
        self._issued += 1
        seq = self._issued
        self._queued_at[seq] = time.monotonic()
        first = self._outbox.start_write(lambda: self._run(seq, write))
        task = asyncio.get_running_loop().create_task(self._land(seq, write, first, self._last, then))
        self._last = task
        return task

    def _run(self, seq: int, write: Callable[[], object]) -> None:
        """On the writer thread: the write, if its turn has come."""
        if seq != self._next:
            raise _NotRun
        write()
        self._next = seq + 1

    async def _land(
        self,
        seq: int,
        write: Callable[[], object],
        first: asyncio.Future[None],
        before: asyncio.Task[None] | None,
        then: Callable[[], None],
    ) -> None:
        done = first
        delay = self._retry_s
        while True:
            try:
                await self._outbox.wait_write(done)
                break
            except _NotRun:
                # An earlier write failed and is being retried: ours goes after it.
                assert before is not None  # the first write queued is always the one due
                await asyncio.shield(before)
            except OutboxError as exc:
                # The disk failed (a full outbox never refuses: it sheds per sink). The batch
                # stays unacknowledged at the broker until the write goes through.
                log.error("outbox write failed; retrying", extra={"fields": {"error": str(exc)}})  # noqa: TRY400
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_retry_s)
            done = self._outbox.start_write(lambda: self._run(seq, write))
        del self._queued_at[seq]
        if before is not None:
            await asyncio.shield(before)  # acknowledgements in the order of the batches
        then()

    def waiting_s(self) -> float:
        """How long the oldest write not landed yet has waited (0: none waits)."""
        if not self._queued_at:
            return 0.0
        return time.monotonic() - min(self._queued_at.values())

    async def settle(self) -> None:
        """Wait until every write queued so far has landed and its `then` has run."""
        last = self._last
        if last is not None:
            await asyncio.shield(last)
