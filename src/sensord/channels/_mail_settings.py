"""Settings of the email, SMS-gateway and per-receiver webhook channels.

Frozen like every settings model. Secrets are `SecretRef`s; whoever builds a channel reads
them (`SecretRef.read`) at load time and passes the values in as `SecretStr`, so a channel
never touches a file and a secret never shows in a repr.
"""

from __future__ import annotations

import email.errors
from email.headerregistry import Address
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from sensord._secret_url import SecretUrl
from sensord._settings import SecretRef
from sensord.channels._sms_body import compile_body


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def check_address(value: str) -> str:
    """A plain `user@domain` address, or ValueError saying what is wrong with it."""
    try:
        parsed = Address(addr_spec=value)
    except (ValueError, email.errors.HeaderParseError) as exc:
        raise ValueError(f"{value!r} is not an email address (user@domain): {exc}") from None
    if not parsed.username or not parsed.domain or not value.isascii():
        # A non-ASCII mailbox needs SMTPUTF8, which many Chinese providers' servers lack.
        raise ValueError(f"{value!r} is not a plain ASCII email address (user@domain)")
    return value


class EmailSettings(_Frozen):
    """An SMTP submission server (a provider's smtp host, or a relay on the box)."""

    type: Literal["email"] = "email"
    host: str
    # None: the usual port for `security` (587 STARTTLS, 465 TLS, 25 none).
    port: Annotated[int, Field(gt=0, lt=65536)] | None = None
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretRef | None = None
    from_address: str
    from_name: str = "sensord"
    # Always sent to (a duty desk); the message's recipients' addresses are added.
    to: tuple[str, ...] = ()
    timeout_s: Annotated[float, Field(gt=0)] = 15.0
    # Trust only this CA (a private relay's); None: the system's CAs.
    ca_file: Path | None = None
    verify: bool = True
    # Put before the title of a life-safety message, so it stands out in an inbox.
    urgent_prefix: str = "[紧急] "

    @field_validator("from_address")
    @classmethod
    def _from_address(cls, v: str) -> str:
        return check_address(v)

    @field_validator("from_name", "urgent_prefix")
    @classmethod
    def _one_line(cls, v: str) -> str:
        if "\n" in v or "\r" in v:
            raise ValueError("must be one line (it goes into a mail header)")
        return v

    @field_validator("to")
    @classmethod
    def _to(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_address(a) for a in v)

    @model_validator(mode="after")
    def _login(self) -> EmailSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        if self.password is not None and self.security == "none":
            raise ValueError("security: none would send the password in clear; use starttls or tls")
        return self

    @property
    def effective_port(self) -> int:
        """The configured port, or the standard one for the security mode."""
        return self.port or {"starttls": 587, "tls": 465, "none": 25}[self.security]


class SmsSettings(_Frozen):
    """An SMS provider's HTTP API, described rather than coded, since every Chinese
    provider's differs. `body` is the request's fields with placeholders `{phone}`,
    `{text}` and `{id}` in its strings; a string that is itself JSON (Aliyun's
    TemplateParam) is filled as JSON too. Example (an Aliyun-style JSON API):

        url: https://sms.example.cn/api/send
        headers: {Authorization: {credential: sms-authorization}}
        body:
          PhoneNumbers: "{phone}"
          SignName: 平安社区
          TemplateCode: SMS_000000
          TemplateParam: '{"text": "{text}"}'
          OutId: "{id}"
        success_field: Code
        success_value: OK
        retryable_codes: [isv.BUSINESS_LIMIT_CONTROL, isp.SYSTEM_ERROR]
        message_field: Message
    """

    type: Literal["sms"] = "sms"

    url: SecretUrl  # may carry a token: shown redacted, read only to send
    method: Literal["POST", "GET"] = "POST"
    # Values are text, or a SecretRef for a token.
    headers: dict[str, str | SecretRef] = Field(default_factory=dict)
    # Top-level body fields whose values are secrets: many form APIs take their apikey
    # or password in the body, not in a header.
    secret_fields: dict[str, SecretRef] = Field(default_factory=dict)
    # json: a JSON body; form: application/x-www-form-urlencoded (the query string on GET).
    body_format: Literal["json", "form"] = "json"
    body: dict[str, JsonValue]
    # Chinese SMS are 70 characters a segment, the provider's signature 【...】 included;
    # a longer text is cut to this, keeping `id_suffix` so the id can be quoted back.
    max_chars: Annotated[int, Field(ge=20, le=1000)] = 70
    id_suffix: str = " #{id}"
    # Success is a 2xx answer and, if set, this JSON field (dotted path, list indexes as
    # numbers: `Response.SendStatusSet.0.Code`) equal to `success_value`.
    success_field: str | None = None
    success_value: str | int | bool | None = None
    # Values of success_field that mean "try later" (throttling, a provider's busy code).
    retryable_codes: tuple[str | int, ...] = ()
    # Where the provider's reason is, quoted in errors.
    message_field: str | None = None
    timeout_s: Annotated[float, Field(gt=0)] = 10.0

    @model_validator(mode="after")
    def _consistent(self) -> SmsSettings:
        if (self.success_field is None) != (self.success_value is None):
            raise ValueError("give both success_field and success_value, or neither")
        if self.retryable_codes and self.success_field is None:
            raise ValueError("retryable_codes are read from success_field; set it")
        if self.method == "GET" and self.body_format != "form":
            raise ValueError("a GET request carries its fields in the query string: body_format: form")
        if "{id}" not in self.id_suffix:
            raise ValueError("id_suffix must contain {id}")
        if clash := sorted(self.secret_fields.keys() & self.body.keys()):
            raise ValueError(f"{clash[0]} is both in body and in secret_fields")
        compile_body(self.body, form=self.body_format == "form")
        return self

    def secret_refs(self) -> dict[str, SecretRef]:
        """The secrets to read and pass to the channel, by dotted key
        (`headers.Authorization`, `secret_fields.apikey`)."""
        refs = {f"headers.{k}": v for k, v in self.headers.items() if isinstance(v, SecretRef)}
        return refs | {f"secret_fields.{k}": v for k, v in self.secret_fields.items()}


class ReceiverWebhookSettings(_Frozen):
    """One receiver's own endpoint, signed per Standard Webhooks with its own secret."""

    type: Literal["webhook"] = "webhook"
    url: SecretUrl  # may carry a token: shown redacted, read only to send
    secret: SecretRef
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
