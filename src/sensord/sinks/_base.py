"""The sink seam: something that accepts alert events, or says why it cannot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sensord._types import AlertEvent


class Sink(Protocol):
    """A destination for alert events.

    `send` raises RetryableSinkError (try again later) or PermanentSinkError (never
    accepted: dead-letter). Returning means every event in the call was accepted.
    """

    name: str
    # True: one call may carry many events (InfluxDB). False: one event per call, so a
    # refusal names exactly one event (the webhook: one job per request).
    batched: bool

    async def send(self, events: Sequence[AlertEvent]) -> None: ...

    async def aclose(self) -> None: ...
