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
from sensord.channels._robot import mention_phone
from sensord.channels._sms_body import compile_body, fit_text
from sensord.sinks._http import classify, retry_after, transport_error

_MISSING = object()


class SmsChannel:
    """Texts each recipient's phone through one SMS provider."""

    per_recipient = True

    def __init__(
        self,
        settings: SmsSettings,
        *,
        secrets: Mapping[str, SecretStr] | None = None,
        client: httpx.AsyncClient | None = None,
        name: str = "sms",
    ) -> None:
        self.name = name
        self._settings = settings
        given = secrets or {}
        if missing := sorted(settings.secret_refs().keys() - given.keys()):
            raise ConfigError(f"{missing[0]} is a secret; pass its value in `secrets`", key=name)
        # Secrets stay SecretStr until a request is built, so no repr or log shows them.
        self._headers = {
            k: v if isinstance(v, str) else given[f"headers.{k}"] for k, v in settings.headers.items()
        }
        self._secret_fields = {k: given[f"secret_fields.{k}"] for k in settings.secret_fields}
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
        # Registered as "+86 139 0000 0009"; providers take the bare mainland number.
        return mention_phone(recipient.phone)

    async def _text(self, phone: str, text: str, message_id: str) -> None:
        try:
            response = await self._client.request(
                **self._request({"phone": phone, "text": text, "id": message_id})
            )
        except httpx.HTTPError as exc:
            raise transport_error(self.name, exc, self._settings.url) from None
        self._judge(response)

    def _request(self, values: Mapping[str, str]) -> dict[str, Any]:
        """httpx.request arguments for one text: the body as JSON, form or query string."""
        s = self._settings
        headers = httpx.Headers({k: _reveal(v) for k, v in self._headers.items()})
        secret_fields = {k: v.get_secret_value() for k, v in self._secret_fields.items()}
        request: dict[str, Any] = {"method": s.method, "url": s.url.reveal(), "headers": headers}
        if s.body_format == "json":
            headers.setdefault("content-type", "application/json; charset=utf-8")
            request["content"] = orjson.dumps(self._body.json(values) | secret_fields)
        elif s.method == "GET":
            request["params"] = self._body.form(values) | secret_fields
        else:
            request["data"] = self._body.form(values) | secret_fields
        return request

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
        classify(self.name, response, s.url)
        if s.success_field is None:
            return
        if code is _MISSING:
            # A 2xx that does not say it sent (a proxy's page, a wrong URL): counted as
            # sent, a lost text would go unseen; dead-lettered, someone sees it. A retry
            # would most likely get the same page.
            raise PermanentSinkError(
                self.name, f"answer has no {s.success_field}: {response.text[:300].strip()}"
            )
        if _as_text(code) != _as_text(s.success_value):
            raise PermanentSinkError(
                self.name,
                f"provider refused: {s.success_field}={_as_text(code)} {self._reason(answer)}".rstrip(),
            )

    def _reason(self, answer: Any) -> str:
        field = self._settings.message_field
        reason = _field(answer, field) if field else _MISSING
        return "" if reason is _MISSING else _as_text(reason)

    async def aclose(self) -> None:
        await self._client.aclose()


def _reveal(value: str | SecretStr) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


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
