"""An in-memory Source for tests and offline replay: batches from a list, acks recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence

from sensord._types import RawMessage


class MemorySource:
    """Yields the given batches, then waits (like a quiet broker) until cancelled.

    `acked` lists every token acknowledged, in order, so a test can check that nothing was
    acknowledged before it was durable.
    """

    def __init__(self, batches: Iterable[Sequence[RawMessage]] = ()) -> None:
        self._queue: asyncio.Queue[list[RawMessage]] = asyncio.Queue()
        for b in batches:
            self._queue.put_nowait(list(b))
        self.connected = asyncio.Event()
        self.acked: list[int] = []
        self.closed = False
        self.drained = asyncio.Event()

    def put(self, batch: Sequence[RawMessage]) -> None:
        """Queue one more batch."""
        self.drained.clear()
        self._queue.put_nowait(list(batch))

    async def run(self) -> None:
        self.connected.set()
        await asyncio.Event().wait()

    async def batches(self) -> AsyncIterator[list[RawMessage]]:
        while True:
            if self._queue.empty():
                self.drained.set()
            yield await self._queue.get()

    def ack(self, tokens: Sequence[int]) -> None:
        self.acked.extend(tokens)

    async def aclose(self) -> None:
        self.closed = True
