"""Unit tests for the email, SMS and receiver-webhook channels' settings and the SMS
body template and text cut (fakes only: MockTransport where an answer is needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from sensord._errors import PermanentSinkError
from sensord._settings import SecretRef
from sensord._types import Severity
from sensord.channels import EmailSettings, Message, Recipient, SmsChannel, SmsSettings, fit_text

BODY = {"PhoneNumbers": "{phone}", "TemplateParam": '{"text": "{text}"}', "OutId": "{id}"}


def sms(**changes: Any) -> SmsSettings:
    return SmsSettings(**({"url": "http://127.0.0.1:9/send", "body": BODY} | changes))


def email(**changes: Any) -> EmailSettings:
    return EmailSettings(**({"host": "smtp.example.cn", "from_address": "alerts@example.cn"} | changes))


class TestEmailSettings:
    def test_password_needs_username(self) -> None:
        """A password without a username (or the reverse) is refused."""
        with pytest.raises(ValidationError, match="both username and password"):
            email(password=SecretRef(file=Path("p")))

    def test_no_password_in_clear(self) -> None:
        """security: none with a password is refused: it would cross the network in clear."""
        with pytest.raises(ValidationError, match="in clear"):
            email(security="none", username="u", password=SecretRef(file=Path("p")))

    def test_addresses_are_checked(self) -> None:
        """A `to` entry that is not user@domain is refused, naming it."""
        with pytest.raises(ValidationError, match="'desk' is not an email address"):
            email(to=("desk",))

    def test_default_port_follows_security(self) -> None:
        """587 for STARTTLS, 465 for TLS, 25 for none, unless a port is given."""
        assert [email(security=s).effective_port for s in ("starttls", "tls", "none")] == [587, 465, 25]
        assert email(port=2525).effective_port == 2525


class TestSmsSettings:
    def test_unknown_placeholder_is_refused(self) -> None:
        """A placeholder other than {phone}, {text}, {id} is refused, naming the field."""
        with pytest.raises(ValidationError, match=r"body\.OutId: unknown placeholder \{uid\}"):
            sms(body=BODY | {"OutId": "{uid}"})

    def test_phone_and_text_must_be_used(self) -> None:
        """A body without {text} would text nothing of the alert: refused."""
        with pytest.raises(ValidationError, match=r"body must use \{text\}"):
            sms(body={"PhoneNumbers": "{phone}"})

    def test_get_needs_a_form_body(self) -> None:
        """GET carries fields in the query string, so body_format must be form."""
        with pytest.raises(ValidationError, match="body_format: form"):
            sms(method="GET")

    def test_success_rule_needs_field_and_value(self) -> None:
        """success_field without success_value is refused."""
        with pytest.raises(ValidationError, match="success_field and success_value"):
            sms(success_field="Code")

    def test_secret_refs_are_named_by_key(self) -> None:
        """Secret headers and body fields are listed by dotted key for whoever reads them."""
        ref = SecretRef(credential="c")
        settings = sms(headers={"Authorization": ref, "X-Plain": "1"}, secret_fields={"apikey": ref})
        assert settings.secret_refs() == {"headers.Authorization": ref, "secret_fields.apikey": ref}


class TestFitText:
    def test_short_text_gets_the_suffix(self) -> None:
        """A text that fits is kept whole, the id after it."""
        assert fit_text("火警", "a1", max_chars=70, id_suffix=" #{id}") == "火警 #a1"

    def test_flag_is_not_split(self) -> None:
        """A flag (two regional indicators) is kept whole or dropped whole."""
        flag = "\U0001f1e8\U0001f1f3"
        text = "甲" * 60 + flag + "乙" * 10
        assert fit_text(text, "a1", max_chars=66, id_suffix=" #{id}") == "甲" * 60 + "… #a1"

    def test_combining_mark_stays_with_its_letter(self) -> None:
        """An accent (a combining mark) is not cut from its letter."""
        text = "a" * 58 + "e\u0301" + "b" * 20
        assert fit_text(text, "id", max_chars=64, id_suffix=" #{id}") == "a" * 58 + "… #id"


class TestSmsAnswers:
    def test_2xx_without_the_success_field_is_permanent(self) -> None:
        """A 200 that is not the provider's JSON (a proxy's page) is permanent, quoting it."""
        page = httpx.MockTransport(lambda _: httpx.Response(200, text="<html>portal</html>"))
        channel = SmsChannel(
            sms(success_field="Code", success_value="OK"), client=httpx.AsyncClient(transport=page)
        )
        msg = Message(
            "id", "r", Severity.INFO, False, "t", "text", "", (Recipient("w", phone="13800138000"),)
        )
        with pytest.raises(PermanentSinkError, match="answer has no Code: <html>portal"):
            asyncio.run(channel.send(msg))
        asyncio.run(channel.aclose())

    def test_secret_values_are_not_in_the_channels_state_as_text(self) -> None:
        """Secrets are kept as SecretStr, so a repr of the channel's state hides them."""
        settings = sms(headers={"Authorization": SecretRef(credential="c")})
        channel = SmsChannel(settings, secrets={"headers.Authorization": SecretStr("APPCODE topsecret")})
        assert "topsecret" not in repr(vars(channel))
        asyncio.run(channel.aclose())
