"""The dispatch webhook, signed per Standard Webhooks.

One POST per alert event, `Content-Type: application/json`, body:

    {
      "fingerprint": "3f0a9c1d2b4e5f60",   stable id of the alert (rule + device + labels)
      "status": "firing",                  firing | resolved (pending if configured)
      "severity": "critical",              info | warning | critical
      "lifeSafety": true,
      "rule": "wristband_sos",
      "summary": "SOS pressed on wb-0007",
      "description": "",
      "device": "wb-0007",
      "family": "wristband",
      "community": "maple-court",
      "grid": "g3",
      "location": {"building": "3", "unit": "3-402", "floor": 4, "lat": 31.23, "lon": 121.47},
      "labels": {"team": "elder-care"},
      "dispatch": ["elder_care_desk", "family_contact", "grid_worker"],
      "readings": {"sos": true, "ts": 1790000000.0},   only the fields the rule reads
      "startsAt": "2026-09-21T12:00:00.000Z",
      "endsAt": null,                      set on resolved
      "eventTime": "2026-09-21T12:00:00.000Z",
      "repeat": false,                     true on a repeat notification while firing
      "texts": {                           summary and description in every locale
        "en": {"summary": "SOS pressed on wb-0007", "description": ""},
        "zh-CN": {"summary": "手环 wb-0007 SOS求救", "description": ""}
      }
    }

`summary`/`description` are the rule's default text (its `en` one, as before there were
locales); `texts` has every locale sensord knows (`en`, `zh-CN`), the default text where
the rule gives none of its own, so a receiver can pick its language.

Headers: `webhook-id` (the event id: the same on every retry, so a receiver can
de-duplicate), `webhook-timestamp` (integer seconds at sending), `webhook-signature`
(`v1,` + base64 HMAC-SHA256 over `{id}.{timestamp}.{body}`). The secret is
`whsec_<base64>` and its decoded bytes are the key, as Standard Webhooks libraries do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from sensord._secret_url import SecretUrl
from sensord._settings import WebhookSettings, signing_key
from sensord._types import LOCALES, AlertEvent
from sensord.sinks._client import SinkClient
from sensord.sinks._http import classify, transport_error


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one message."""
    mac = hmac.new(signing_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """Check a received webhook: a matching v1 signature and a timestamp within tolerance."""
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, ts = h.get("webhook-id", ""), h.get("webhook-timestamp", "")
    if not msg_id or not ts.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(ts)) > tolerance_s:
        return False
    expected = sign(secret, msg_id, int(ts), body)
    return any(hmac.compare_digest(expected, s) for s in h.get("webhook-signature", "").split())


def _rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(e: AlertEvent, locale: str) -> dict[str, str]:
    summary, description = e.text(locale)
    return {"summary": summary, "description": description}


def webhook_body(e: AlertEvent) -> dict[str, Any]:
    """The documented JSON body of one event."""
    return {
        "fingerprint": e.fingerprint,
        "status": e.status.value,
        "severity": e.severity.value,
        "lifeSafety": e.life_safety,
        "rule": e.rule,
        "summary": e.summary,
        "description": e.description,
        "device": e.device_id,
        "family": e.family,
        "community": e.community,
        "grid": e.grid,
        "location": e.location,
        "labels": e.labels,
        "dispatch": list(e.dispatch),
        "readings": e.readings,
        "startsAt": _rfc3339(e.starts_at),
        "endsAt": _rfc3339(e.ends_at),
        "eventTime": _rfc3339(e.event_time),
        "repeat": e.repeat,
        "texts": {locale: _text(e, locale) for locale in LOCALES},
    }


def signed_headers(secret: SecretStr, msg_id: str, body: bytes) -> dict[str, str]:
    """The headers of one signed POST, stamped now (the id is the same on every retry)."""
    ts = int(time.time())
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret.get_secret_value(), msg_id, ts, body),
    }


async def post_signed(  # noqa: PLR0913 - one signed request's parts
    client: httpx.AsyncClient, sink: str, url: SecretUrl, secret: SecretStr, *, msg_id: str, body: bytes
) -> None:
    """POST a JSON body signed per Standard Webhooks with httpx; raise the sink error the
    answer means. The receivers' webhook channels send this way (the sink: `WebhookSink`)."""
    headers = signed_headers(secret, msg_id, body)
    try:
        response = await client.post(url.reveal(), content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise transport_error(sink, exc, url) from None
    classify(sink, response, url)


class WebhookSink:
    """POSTs each event to the dispatch platform, signed, over one keep-alive connection pool."""

    name = "webhook"
    batched = False

    def __init__(self, settings: WebhookSettings, *, secret: SecretStr) -> None:
        self._settings = settings
        self._secret = secret
        self._client = SinkClient(self.name, settings.url, timeout_s=settings.timeout_s)

    async def send(self, events: Sequence[AlertEvent]) -> None:
        for e in events:
            if e.status.value in self._settings.statuses:
                await self._post(e)

    async def _post(self, e: AlertEvent) -> None:
        body = orjson.dumps(webhook_body(e))
        await self._client.post(body, signed_headers(self._secret, e.event_id, body))

    async def aclose(self) -> None:
        await self._client.aclose()
