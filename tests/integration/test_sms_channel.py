"""The SMS channel against a stand-in provider API over HTTP (sensord.testing.SmsGateway),
in two documented styles: Aliyun-like JSON with a JSON TemplateParam, and Yunpian-like
form fields with the apikey in the body."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from sensord._errors import ConfigError, PermanentSinkError, RetryableSinkError
from sensord._secret_url import SecretUrl
from sensord._settings import SecretRef
from sensord._types import Severity
from sensord.channels import Message, Recipient, SmsChannel, SmsSettings
from sensord.testing import SmsGateway, free_port

pytestmark = pytest.mark.integration

WANG = Recipient("王芳", phone="13800138000")
LI = Recipient("李军", phone="13900139000")
ZHAO = Recipient("赵敏", phone="+8613700137000")


def message(**changes: Any) -> Message:
    fields: dict[str, Any] = {
        "id": "7f3a9c",
        "receiver": "family_contact",
        "severity": Severity.CRITICAL,
        "life_safety": True,
        "title": "SOS",
        "text": "SOS：王秀英在3号楼402室按下求救按钮，请立即前往。",
        "markdown": "",
        "recipients": (WANG,),
    }
    return Message(**(fields | changes))


def aliyun(gateway: SmsGateway, *, credential: str | None = None, **changes: Any) -> SmsChannel:
    settings: dict[str, Any] = {
        "url": gateway.url,
        "headers": {"Authorization": SecretRef(credential="sms-authorization")},
        "body": {
            "PhoneNumbers": "{phone}",
            "SignName": "平安社区",
            "TemplateCode": "SMS_465391234",
            "TemplateParam": '{"text": "{text}"}',
            "OutId": "{id}",
        },
        "success_field": "Code",
        "success_value": "OK",
        "retryable_codes": ("isv.BUSINESS_LIMIT_CONTROL", "isp.SYSTEM_ERROR"),
        "message_field": "Message",
        "timeout_s": 5,
    }
    appcode = gateway.credential if credential is None else credential
    return SmsChannel(
        SmsSettings(**(settings | changes)),
        secrets={"headers.Authorization": SecretStr(f"APPCODE {appcode}")},
    )


def yunpian(gateway: SmsGateway, *, apikey: str | None = None) -> SmsChannel:
    settings = SmsSettings(
        url=SecretUrl(gateway.url),
        body_format="form",
        body={"mobile": "{phone}", "text": "【平安社区】{text}", "uid": "{id}"},
        secret_fields={"apikey": SecretRef(credential="yunpian-apikey")},
        # The signature 【平安社区】 (6) is part of the 70.
        max_chars=64,
        success_field="code",
        success_value=0,
        retryable_codes=(8, 9, 22),
        message_field="msg",
        timeout_s=5,
    )
    key = gateway.credential if apikey is None else apikey
    return SmsChannel(settings, secrets={"secret_fields.apikey": SecretStr(key)})


def send(channel: SmsChannel, msg: Message) -> None:
    async def go() -> None:
        try:
            await channel.send(msg)
        finally:
            await channel.aclose()

    asyncio.run(go())


@pytest.fixture
def aliyun_gateway() -> Iterator[SmsGateway]:
    with SmsGateway("aliyun", credential="9f2c64e1b0d84c39a1b2") as gateway:
        yield gateway


@pytest.fixture
def yunpian_gateway() -> Iterator[SmsGateway]:
    with SmsGateway("yunpian", credential="9b11127a9701975c734b8aee81ee3526") as gateway:
        yield gateway


class TestRequests:
    def test_aliyun_style_request(self, aliyun_gateway: SmsGateway) -> None:
        """The JSON body has the number, signature, template, the text inside the
        TemplateParam JSON string (id suffix kept) and the id as OutId."""
        send(aliyun(aliyun_gateway), message())
        [sms] = aliyun_gateway.texts()
        assert (sms.phone, sms.id) == ("13800138000", "7f3a9c")
        assert sms.text == "SOS：王秀英在3号楼402室按下求救按钮，请立即前往。 #7f3a9c"
        assert sms.fields["SignName"] == "平安社区"
        assert sms.fields["TemplateCode"] == "SMS_465391234"
        assert isinstance(sms.fields["TemplateParam"], str)

    def test_yunpian_style_form_request(self, yunpian_gateway: SmsGateway) -> None:
        """The form body has the apikey (a secret field), number, signed text and uid."""
        send(yunpian(yunpian_gateway), message())
        [sms] = yunpian_gateway.texts()
        assert sms.fields == {
            "apikey": "9b11127a9701975c734b8aee81ee3526",
            "mobile": "13800138000",
            "text": "【平安社区】SOS：王秀英在3号楼402室按下求救按钮，请立即前往。 #7f3a9c",
            "uid": "7f3a9c",
        }

    def test_one_request_per_recipient(self, aliyun_gateway: SmsGateway) -> None:
        """Three recipients are three requests of one number each, never a batch; a
        mainland number given with +86 and spaces is sent bare."""
        send(aliyun(aliyun_gateway), message(recipients=(WANG, LI, ZHAO)))
        texts = aliyun_gateway.texts()
        assert [t.phone for t in texts] == ["13800138000", "13900139000", "13700137000"]
        assert len({t.text for t in texts}) == 1

    def test_long_text_is_cut_to_max_chars_keeping_the_id(self, aliyun_gateway: SmsGateway) -> None:
        """A text over max_chars is cut to exactly max_chars, ending in … and the id."""
        long = "紧急：" + "烟雾浓度持续升高，" * 12
        send(aliyun(aliyun_gateway), message(text=long))
        [sms] = aliyun_gateway.texts()
        assert sms.text is not None
        assert len(sms.text) == 70
        assert sms.text.endswith("… #7f3a9c")
        assert long.startswith(sms.text.removesuffix("… #7f3a9c"))

    def test_cut_never_splits_a_character(self, aliyun_gateway: SmsGateway) -> None:
        """Where the cut would fall inside an emoji sequence (a family: three people
        joined by zero-width joiners), the whole sequence goes."""
        family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
        text = "甲" * 59 + family + "乙" * 20  # a cut at 61 falls between joiner and woman
        send(aliyun(aliyun_gateway), message(text=text))
        [sms] = aliyun_gateway.texts()
        assert sms.text == "甲" * 59 + "… #7f3a9c"

    def test_quotes_newlines_and_backslashes_are_escaped(self, aliyun_gateway: SmsGateway) -> None:
        """A text with quotes, a newline, a backslash and braces arrives unchanged through
        two levels of JSON (the body, and the TemplateParam string inside it)."""
        tricky = '他说"救命"\n门牌 3\\402 {text} {"a": 1}'
        send(aliyun(aliyun_gateway), message(text=tricky))
        [sms] = aliyun_gateway.texts()
        assert sms.text == tricky + " #7f3a9c"
        assert orjson.loads(sms.fields["TemplateParam"]) == {"text": tricky + " #7f3a9c"}


class TestAnswers:
    def test_aliyun_throttling_code_is_retryable(self, aliyun_gateway: SmsGateway) -> None:
        """isv.BUSINESS_LIMIT_CONTROL (HTTP 200) is retryable, quoting the provider."""
        aliyun_gateway.answer_next("isv.BUSINESS_LIMIT_CONTROL")
        with pytest.raises(RetryableSinkError, match=r"isv\.BUSINESS_LIMIT_CONTROL 触发分钟级流控"):
            send(aliyun(aliyun_gateway), message())

    def test_yunpian_frequency_limit_with_http_400_is_retryable(self, yunpian_gateway: SmsGateway) -> None:
        """A listed code wins over the HTTP status: code 8 comes with a 400, still retryable."""
        yunpian_gateway.answer_next(8)
        with pytest.raises(RetryableSinkError, match="code=8 同一手机号30秒内"):
            send(yunpian(yunpian_gateway), message())

    def test_aliyun_unknown_credential_is_permanent(self, aliyun_gateway: SmsGateway) -> None:
        """A wrong APPCODE (HTTP 404, InvalidAccessKeyId.NotFound) is permanent, with the code."""
        with pytest.raises(PermanentSinkError, match=r"HTTP 404: .*InvalidAccessKeyId\.NotFound"):
            send(aliyun(aliyun_gateway, credential="wrong"), message())

    def test_yunpian_bad_apikey_is_permanent(self, yunpian_gateway: SmsGateway) -> None:
        """A wrong apikey (code -1) is permanent, with the provider's reason."""
        with pytest.raises(PermanentSinkError, match="非法的apikey"):
            send(yunpian(yunpian_gateway, apikey="wrong"), message())

    def test_refusal_in_a_2xx_answer_is_permanent(self, aliyun_gateway: SmsGateway) -> None:
        """HTTP 200 whose Code is not OK and not retryable is permanent, quoting Code and Message."""
        send_to = message(recipients=(Recipient("王芳", phone="12345"),))
        with pytest.raises(PermanentSinkError, match=r"Code=isv\.MOBILE_NUMBER_ILLEGAL 非法手机号"):
            send(aliyun(aliyun_gateway), send_to)

    def test_http_503_is_retryable(self, aliyun_gateway: SmsGateway) -> None:
        """A 503 without a body (a proxy in front of the provider) is retryable."""
        aliyun_gateway.refuse_next(503)
        with pytest.raises(RetryableSinkError, match="HTTP 503"):
            send(aliyun(aliyun_gateway), message())

    def test_gateway_down_is_retryable(self) -> None:
        """Nothing listening: retryable."""
        with pytest.raises(RetryableSinkError, match="connection failed"):
            send(aliyun(SmsGateway("aliyun", credential="x", port=free_port())), message())


class TestRecipients:
    def test_recipient_without_phone_is_permanent_and_nobody_is_texted(
        self, aliyun_gateway: SmsGateway
    ) -> None:
        """A recipient with no phone is permanent, naming them; the others are not texted."""
        no_phone = Recipient("张伟", email="zhangwei@example.cn")
        with pytest.raises(PermanentSinkError, match="'张伟' has no phone number"):
            send(aliyun(aliyun_gateway), message(recipients=(WANG, no_phone)))
        assert aliyun_gateway.received == []

    def test_no_recipient_is_permanent(self, aliyun_gateway: SmsGateway) -> None:
        """A message with no recipient at all is permanent."""
        with pytest.raises(PermanentSinkError, match="no recipient"):
            send(aliyun(aliyun_gateway), message(recipients=()))

    def test_a_secret_header_needs_its_value(self, aliyun_gateway: SmsGateway) -> None:
        """Building the channel without the value of a SecretRef header is a ConfigError."""
        settings = aliyun(aliyun_gateway)._settings
        with pytest.raises(ConfigError, match=r"headers\.Authorization is a secret"):
            SmsChannel(settings)
