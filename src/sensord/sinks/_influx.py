"""InfluxDB sink: alert events (and optionally telemetry) as line protocol.

`api: v1` writes `POST /write?db=…&rp=…` (InfluxDB 1.x, user/password);
`api: v2` writes `POST /api/v2/write?org=…&bucket=…` with `Authorization: Token …`
(InfluxDB 2.x and 3.x, and VictoriaMetrics, which accepts both paths).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import SecretStr

from sensord._registry import Registry
from sensord._settings import InfluxSettings
from sensord._types import AlertEvent, Message
from sensord.decode import FamilyBatch, field_specs
from sensord.sinks._client import SinkClient

_KEY_ESC = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_MEAS_ESC = str.maketrans({",": r"\,", " ": r"\ "})


def _key(s: str) -> str:
    return s.replace("\\", "\\\\").translate(_KEY_ESC).replace("\n", "\\n")


def _str_field(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _field(v: Any) -> str | None:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v}i"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else None
    if isinstance(v, str):
        return _str_field(v)
    return None


def line(measurement: str, tags: dict[str, str], fields: dict[str, Any], ts_ns: int) -> str:
    """One line of line protocol; tags sorted (as InfluxDB prefers), empty tags dropped."""
    tag_part = "".join(f",{_key(k)}={_key(v)}" for k, v in sorted(tags.items()) if v != "")
    parts = [(k, _field(v)) for k, v in fields.items()]
    field_part = ",".join(f"{_key(k)}={v}" for k, v in parts if v is not None)
    return f"{measurement.translate(_MEAS_ESC)}{tag_part} {field_part} {ts_ns}"


def alert_line(measurement: str, e: AlertEvent) -> str:
    """An alert event as one point at its event time."""
    tags = {
        "rule": e.rule,
        "family": e.family,
        "community": e.community,
        "grid": e.grid,
        "device_id": e.device_id,
        "severity": e.severity.value,
        "status": e.status.value,
        "life_safety": "true" if e.life_safety else "false",
    }
    fields: dict[str, Any] = {
        "fingerprint": e.fingerprint,
        "event_id": e.event_id,
        "summary": e.summary,
        "starts_at": float(e.starts_at),
        "repeat": e.repeat,
    }
    if e.ends_at is not None:
        fields["ends_at"] = float(e.ends_at)
    for k, v in e.readings.items():
        if k != "ts":
            fields[f"r_{k}"] = v
    return line(measurement, tags, fields, round(e.event_time * 1e9))


def telemetry_lines(
    batch: FamilyBatch,
    registry: Registry,
    *,
    every_s: float = 0.0,
    last: dict[tuple[str, int], float] | None = None,
) -> list[str]:
    """Readings as `sensord_telemetry` points; with `every_s`, at most one per device per interval."""
    devices = registry.devices(batch.family)
    specs = field_specs(batch.family)
    out: list[str] = []
    fam = batch.family.value
    for r in range(len(batch)):
        dv, ts = int(batch.device[r]), float(batch.ts[r])
        if every_s and last is not None:
            if ts - last.get((fam, dv), -math.inf) < every_s:
                continue
            last[(fam, dv)] = ts
        fields: dict[str, Any] = {}
        for s in specs:
            v = float(batch.columns[s.name][r])
            if not np.isnan(v):
                fields[s.name] = s.choices[int(v)] if s.kind == "enum" else v
        device = devices[dv]
        tags = {"family": fam, "device_id": device.device_id, "community": device.entry.community}
        out.append(line("sensord_telemetry", tags, fields, round(ts * 1e9)))
    return out


class InfluxSink:
    """Writes alert events in batches; retryable on timeouts, 5xx and 429."""

    name = "influx"
    batched = True

    def __init__(
        self,
        settings: InfluxSettings,
        *,
        password: SecretStr | None = None,
        token: SecretStr | None = None,
    ) -> None:
        self._settings = settings
        base = settings.url.reveal().rstrip("/")
        headers = {"content-type": "text/plain; charset=utf-8"}
        auth = None
        if settings.api == "v1":
            target = f"{base}/write"
            params = {"db": settings.database, "precision": "ns"}
            if settings.retention_policy:
                params["rp"] = settings.retention_policy
            if settings.username and password is not None:
                auth = (settings.username, password.get_secret_value())
        else:
            target = f"{base}/api/v2/write"
            params = {"org": settings.org, "bucket": settings.bucket, "precision": "ns"}
            if token is not None:
                headers["authorization"] = f"Token {token.get_secret_value()}"
        self._client = SinkClient(
            self.name,
            settings.url,
            timeout_s=settings.timeout_s,
            target=target,
            params=params,
            headers=headers,
            auth=auth,
        )

    async def _write(self, body: str) -> None:
        await self._client.post(body.encode(), {})

    async def send(self, events: Sequence[AlertEvent]) -> None:
        if events:
            await self._write("\n".join(alert_line(self._settings.alerts_measurement, e) for e in events))

    async def write_telemetry(self, lines: Sequence[str]) -> None:
        """Best-effort telemetry write (the caller counts failures)."""
        if lines:
            await self._write("\n".join(lines))

    async def aclose(self) -> None:
        await self._client.aclose()


WORK_ORDER_QUEUE = "influx/work_orders"


class WorkOrderPoints:
    """Work-order changes as `sensord_work_orders` points. A channel over the outbox's
    notices (queue `influx/work_orders`), so a change is durable with the batch or the
    API action that made it, and retried like any message."""

    name = WORK_ORDER_QUEUE
    per_recipient = False

    def __init__(self, sink: InfluxSink) -> None:
        self._sink = sink

    async def send(self, message: Message) -> None:
        d = message.data
        tags = {
            "community": str(d["community"]), "grid": str(d["grid"]), "family": str(d["family"]),
            "rule": str(d["rule"]), "action": str(d["action"]), "state": str(d["state"]),
            "life_safety": "true" if d["lifeSafety"] else "false",
        }  # fmt: skip
        fields: dict[str, Any] = {
            "work_order": str(d["workOrder"]), "by": str(d["by"]), "note": str(d["note"]),
            "source": str(d["source"]), "age_s": float(d["at"]) - float(d["openedAt"]),
        }  # fmt: skip
        point = line("sensord_work_orders", tags, fields, round(float(d["at"]) * 1e9))
        await self._sink.write_telemetry([point])

    async def aclose(self) -> None:
        """The InfluxDB sink closes the shared client."""
