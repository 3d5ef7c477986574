"""SMS through a provider's HTTP API, described in settings (`SmsSettings`) rather than
coded per provider: URL, method, headers, a body template and a success rule.

One request per phone number, even where the provider takes a list: a provider does not
de-duplicate (Aliyun's SendSms says it has no idempotency), so a retry after one failed
number must not text the others again. Dispatch gives this channel one recipient per
message (`per_recipient`); given several, each still gets its own request, in order.

An answer is judged in this order: a code in `retryable_codes` (throttling) is retryable
whatever the HTTP status; then 5xx and 429 are retryable, other non-2xx permanent; then
a 2xx whose `success_field` is not `success_value` is permanent, with the provider's code
and reason (bad credentials, unknown template, an invalid number: retrying changes nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from sensord._errors import ConfigError, PermanentSinkError, RetryableSinkError
from sensord.channels._base import Message, Recipient
from sensord.channels._mail_settings import SmsSettings
from sensord.channels._sms_body import compile_body, fit_text
from sensord.sinks import classify, retry_after, transport_error

_MISSING = object()


class SmsChannel:
    """Texts each recipient's phone through one SMS provider."""

    per_recipient = True

    def __init__(
        self,
        settings: SmsSettings,
        *,
        header_secrets: Mapping[str, SecretStr] | None = None,
        client: httpx.AsyncClient | None = None,
        name: str = "sms",
    ) -> None:
        self.name = name
        self._settings = settings
        self._headers = _headers(settings, header_secrets or {}, name)
        self._body = compile_body(settings.body, form=settings.body_format == "form")
        self._retryable = {_as_text(c) for c in settings.retryable_codes}
        self._client = client or httpx.AsyncClient(timeout=settings.timeout_s)

    async def send(self, message: Message) -> None:
        if not message.recipients:
            raise PermanentSinkError(self.name, f"no recipient to text for {message.receiver!r}")
        phones = [self._phone(r) for r in message.recipients]
        s = self._settings
        text = fit_text(message.text, message.id, max_chars=s.max_chars, id_suffix=s.id_suffix)
        for phone in phones:
            await self._text(phone, text, message.id)

    def _phone(self, recipient: Recipient) -> str:
        if not recipient.phone:
            raise PermanentSinkError(self.name, f"recipient {recipient.name!r} has no phone number")
        return recipient.phone

    async def _text(self, phone: str, text: str, message_id: str) -> None:
        values = {"phone": phone, "text": text, "id": message_id}
        s = self._settings
        try:
            if s.body_format == "json":
                body = orjson.dumps(self._body.json(values))
                headers = httpx.Headers({"content-type": "application/json; charset=utf-8"})
                headers.update(self._headers)  # the configured ones win, whatever their case
                response = await self._client.request(s.method, s.url, content=body, headers=headers)
            elif s.method == "GET":
                response = await self._client.get(
                    s.url, params=self._body.form(values), headers=self._headers
                )
            else:
                response = await self._client.post(s.url, data=self._body.form(values), headers=self._headers)
        except httpx.HTTPError as exc:
            raise transport_error(self.name, exc) from None
        self._judge(response)

    def _judge(self, response: httpx.Response) -> None:
        s = self._settings
        answer = _json(response)
        code = _field(answer, s.success_field) if s.success_field else _MISSING
        if code is not _MISSING and _as_text(code) in self._retryable:
            raise RetryableSinkError(
                self.name,
                f"provider busy: {s.success_field}={_as_text(code)} {self._reason(answer)}".rstrip(),
                retry_after=retry_after(response.headers.get("retry-after")),
            )
        classify(self.name, response)
        if s.success_field is None or _as_text(code) == _as_text(s.success_value):
            return
        if code is _MISSING:
            raise PermanentSinkError(
                self.name, f"answer has no {s.success_field}: {response.text[:300].strip()}"
            )
        raise PermanentSinkError(
            self.name, f"provider refused: {s.success_field}={_as_text(code)} {self._reason(answer)}".rstrip()
        )

    def _reason(self, answer: Any) -> str:
        field = self._settings.message_field
        reason = _field(answer, field) if field else _MISSING
        return "" if reason is _MISSING else _as_text(reason)

    async def aclose(self) -> None:
        await self._client.aclose()


def _headers(settings: SmsSettings, secrets: Mapping[str, SecretStr], name: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in settings.headers.items():
        if isinstance(value, str):
            headers[key] = value
        elif key in secrets:
            headers[key] = secrets[key].get_secret_value()
        else:
            raise ConfigError(f"header {key!r} is a secret; pass its value in header_secrets", key=name)
    return headers


def _json(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return _MISSING


def _field(answer: Any, path: str) -> Any:
    """The value at a dotted path (`Response.SendStatusSet.0.Code`), or _MISSING."""
    node = answer
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _as_text(value: Any) -> str:
    """Codes compared as text: the YAML `success_value: 0` matches a JSON 0 or "0"."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
