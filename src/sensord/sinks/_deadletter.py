"""Dead-letter: a JSON-lines file of what could not be used or delivered, with reasons.

Each line is a record a person can act on: when, what kind, why, and the original
topic and payload (text when it is UTF-8, base64 otherwise) so it can be replayed.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from sensord._types import AlertEvent, Reject


def _payload(raw: bytes) -> dict[str, str]:
    try:
        return {"payload": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"payload_b64": base64.b64encode(raw).decode()}


class DeadLetter:
    """Appends records to a file (flushed per record); `on_record` may forward them (MQTT)."""

    def __init__(self, path: Path, *, on_record: Callable[[dict[str, Any]], None] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("ab")
        self._on_record = on_record

    def _write(self, record: dict[str, Any]) -> dict[str, Any]:
        self._file.write(orjson.dumps(record) + b"\n")
        self._file.flush()
        if self._on_record is not None:
            self._on_record(record)
        return record

    def reject(self, r: Reject) -> dict[str, Any]:
        """A message that could not be used."""
        return self._write(
            {
                "at": time.time(),
                "kind": "reject",
                "reason": r.reason,
                "detail": r.detail,
                "topic": r.topic,
                "received_at": r.received_at,
                **_payload(r.payload),
            }
        )

    def undeliverable(self, event: AlertEvent, sink: str, reason: str) -> dict[str, Any]:
        """An alert event a sink refused for good."""
        return self._write(
            {
                "at": time.time(),
                "kind": "undeliverable",
                "sink": sink,
                "reason": reason,
                "event": asdict(event),
            }
        )

    def close(self) -> None:
        self._file.close()
