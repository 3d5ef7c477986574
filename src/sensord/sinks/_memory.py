"""An in-memory sink for tests and offline replay, scriptable to fail."""

from __future__ import annotations

from collections.abc import Sequence

from sensord._errors import PermanentSinkError, RetryableSinkError
from sensord._types import AlertEvent


class MemorySink:
    """Keeps what it is sent. `fail_next(n, permanent=...)` makes the next n calls fail."""

    def __init__(self, name: str = "memory", *, batched: bool = True) -> None:
        self.name = name
        self.batched = batched
        self.events: list[AlertEvent] = []
        self.calls = 0
        self._fail = 0
        self._permanent = False
        self._retry_after: float | None = None

    def fail_next(self, n: int, *, permanent: bool = False, retry_after: float | None = None) -> None:
        self._fail, self._permanent, self._retry_after = n, permanent, retry_after

    async def send(self, events: Sequence[AlertEvent]) -> None:
        self.calls += 1
        if self._fail > 0:
            self._fail -= 1
            if self._permanent:
                raise PermanentSinkError(self.name, "refused (scripted)")
            raise RetryableSinkError(self.name, "unavailable (scripted)", retry_after=self._retry_after)
        self.events.extend(events)

    async def aclose(self) -> None:
        return None
