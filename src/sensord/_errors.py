"""The one error tree of sensord.

Every error a person may have to act on carries a reason written for that person.

    SensordError
    ├── ConfigError            config file, secrets, device registry: stops start-up
    ├── RuleError              a rule file or rule expression that cannot be compiled
    ├── DecodeError            one message rejected; goes to dead-letter with `reason`
    ├── OutboxError            the on-disk outbox is full or unusable
    ├── RecordingError         a recording file that cannot be read (file:line)
    ├── IngestError            broker connection problems
    │   └── ConnectRefused     the broker refused us (bad credentials, bad client id)
    ├── WorkOrderError         a work-order action that cannot be done (HTTP 4xx)
    │   ├── NotFound           no such work order (404)
    │   └── Conflict           not allowed in the work order's state (409)
    └── SinkError              a delivery to a sink failed
        ├── RetryableSinkError timeout, 5xx, 429, connection refused: try again later
        └── PermanentSinkError other 4xx, rejected body: dead-letter, never retried

Foreign exceptions (aiohttp, httpx, sqlite3, yaml, pydantic) are translated at the boundary
of the module that calls the library, so callers only ever see this tree.
"""

from __future__ import annotations


class SensordError(Exception):
    """Base of every error sensord raises on purpose."""


class ConfigError(SensordError):
    """The configuration, a secret or the device registry is invalid."""

    def __init__(self, message: str, *, source: str = "", key: str = "") -> None:
        self.source = source
        self.key = key
        where = ":".join(p for p in (source, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


class RuleError(SensordError):
    """A rule file or expression is invalid; names file, line and reason."""

    def __init__(self, message: str, *, file: str = "", line: int = 0, rule: str = "") -> None:
        self.file = file
        self.line = line
        self.rule = rule
        self.reason = message
        where = file + (f":{line}" if line else "")
        who = f" rule {rule!r}" if rule else ""
        prefix = f"{where}{who}: " if (where or who) else ""
        super().__init__(f"{prefix}{message}")


class DecodeError(SensordError):
    """One message cannot be decoded. `reason` is a short metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class OutboxError(SensordError):
    """The durable outbox cannot take or give events."""


class RecordingError(SensordError):
    """A recording (replay input) that cannot be read; the message names file and line."""


class IngestError(SensordError):
    """The broker connection failed."""


class ConnectRefused(IngestError):  # noqa: N818 - reads as the broker's answer
    """The broker answered CONNECT with a refusal code."""


class WorkOrderError(SensordError):
    """A work-order action refused; `reason` says why, for the person who asked."""

    status = 400

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class NotFound(WorkOrderError):  # noqa: N818 - reads as the answer it is
    """No work order (or silence) by that id."""

    status = 404


class Conflict(WorkOrderError):  # noqa: N818 - reads as the answer it is
    """The action is not allowed in the work order's current state."""

    status = 409


class SinkError(SensordError):
    """Delivering to a sink failed."""

    def __init__(self, sink: str, message: str) -> None:
        self.sink = sink
        self.reason = message
        super().__init__(f"sink {sink}: {message}")


class RetryableSinkError(SinkError):
    """A failure worth retrying; `retry_after` (seconds) when the sink said so."""

    def __init__(self, sink: str, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(sink, message)


class PermanentSinkError(SinkError):
    """The sink will never accept this event; it goes to dead-letter."""
