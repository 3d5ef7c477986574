"""Dead-letter: a JSON-lines file of what could not be used or delivered, with reasons.

Each line is a record a person can act on: when, what kind, why, and the original
topic and payload (text when it is UTF-8, base64 otherwise) so it can be replayed.

Durable before acknowledged: the process loop calls `sync()` (one fsync for the batch)
after the outbox commit and before the batch's messages are acknowledged, and an
undeliverable alert is synced before the outbox forgets it. The file is rotated at
`max_bytes` (`deadletter.jsonl.1`, `.2`, … up to `keep` old files) and a payload longer
than `max_payload_bytes` is kept as a prefix with its full length and SHA-256, so a flood
of hostile messages cannot fill the disk the outbox lives on.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from sensord._types import AlertEvent, Reject
from sensord.channels import Message


def _payload(raw: bytes, limit: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if len(raw) > limit:
        digest = hashlib.sha256(raw).hexdigest()
        out = {"payload_bytes": len(raw), "payload_sha256": digest, "truncated": True}
        raw = raw[:limit]
    try:
        out["payload"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        out["payload_b64"] = base64.b64encode(raw).decode()
    return out


class DeadLetter:
    """Appends records to a file; `on_record` may forward them (MQTT)."""

    def __init__(
        self,
        path: Path,
        *,
        on_record: Callable[[dict[str, Any]], None] | None = None,
        max_bytes: int = 64 * 1024 * 1024,
        keep: int = 3,
        max_payload_bytes: int = 16 * 1024,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("ab")
        self._on_record = on_record
        self._max_bytes = max_bytes
        self._keep = keep
        self._max_payload = max_payload_bytes
        # /dev/null (offline replay) is neither rotated nor synced.
        self._regular = path.is_file()
        self._size = path.stat().st_size if self._regular else 0
        self._dirty = False

    def _write(self, record: dict[str, Any]) -> dict[str, Any]:
        line = orjson.dumps(record, default=str) + b"\n"
        if self._regular and self._size and self._size + len(line) > self._max_bytes:
            self._rotate()
        self._file.write(line)
        self._size += len(line)
        self._dirty = True
        if self._on_record is not None:
            self._on_record(record)
        return record

    def _rotate(self) -> None:
        """deadletter.jsonl → .1 → .2 …; the oldest beyond `keep` is removed."""
        self.sync()
        self._file.close()
        for n in range(self._keep, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if n == self._keep:
                older.unlink(missing_ok=True)
            else:
                newer = self.path.with_name(f"{self.path.name}.{n + 1}")
                if older.exists():
                    older.rename(newer)
        if self._keep:
            self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self._file = self.path.open("ab")
        self._size = 0

    def sync(self) -> None:
        """Make every record written so far durable (flush + fsync)."""
        if not self._dirty:
            return
        self._file.flush()
        if self._regular:
            os.fsync(self._file.fileno())
        self._dirty = False

    def reject(self, r: Reject) -> dict[str, Any]:
        """A message that could not be used (durable at the next `sync()`)."""
        return self._write(
            {
                "at": time.time(),
                "kind": "reject",
                "reason": r.reason,
                "detail": r.detail,
                "topic": r.topic,
                "received_at": r.received_at,
                **_payload(r.payload, self._max_payload),
            }
        )

    def undeliverable(self, event: AlertEvent, sink: str, reason: str) -> dict[str, Any]:
        """An alert event a sink refused for good (or shed): durable before this returns,
        since the outbox forgets the event next."""
        record = self._write(
            {
                "at": time.time(),
                "kind": "undeliverable",
                "sink": sink,
                "reason": reason,
                "event": asdict(event),
            }
        )
        self.sync()
        return record

    def undeliverable_message(self, message: Message, sink: str, reason: str) -> dict[str, Any]:
        """A dispatch message a channel refused for good: durable before this returns."""
        body = {"kind": "undeliverable", "sink": sink, "reason": reason, "message": asdict(message)}
        record = self._write({"at": time.time(), **body})
        self.sync()
        return record

    def close(self) -> None:
        self.sync()
        self._file.close()
