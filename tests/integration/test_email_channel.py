"""The email channel against a real SMTP server (aiosmtpd from sensord.testing) with
AUTH, over STARTTLS and implicit TLS with a throw-away certificate."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from sensord._errors import PermanentSinkError, RetryableSinkError
from sensord._settings import SecretRef
from sensord._types import Severity
from sensord.channels import EmailChannel, EmailSettings, Message, Recipient
from sensord.testing import SmtpServer, free_port, start_smtp

pytestmark = pytest.mark.integration

DESK = "desk@maple-court.example.cn"
DAUGHTER = "wangfang@example.cn"


def message(**changes: Any) -> Message:
    fields: dict[str, Any] = {
        "id": "n-7f3a9c/2",
        "receiver": "family_contact",
        "severity": Severity.CRITICAL,
        "life_safety": True,
        "title": "SOS：3号楼402室 王秀英",
        "text": "王秀英按下了SOS求救按钮。\n位置：3号楼3单元402室，4层",
        "markdown": "**SOS** 3号楼402室",
        "recipients": (Recipient("王芳", phone="13800138000", email=DAUGHTER),),
        "ack": "确认请回复：https://ack.example.cn/a/7f3a9c",
    }
    return Message(**(fields | changes))


def channel(server: SmtpServer, *, password: str | None = None, **changes: Any) -> EmailChannel:
    settings: dict[str, Any] = {
        "host": "localhost",
        "port": server.port,
        "security": server.security,
        "username": server.username,
        "password": SecretRef(file=Path("smtp-password")),
        "from_address": "alerts@maple-court.example.cn",
        "from_name": "枫林苑告警",
        "to": (DESK,),
        "timeout_s": 5,
        "ca_file": server.cert_file,
    }
    return EmailChannel(
        EmailSettings(**(settings | changes)),
        password=SecretStr(server.password if password is None else password),
    )


Send = Callable[[EmailChannel, Message], None]


@pytest.fixture(scope="module")
def send() -> Iterator[Send]:
    """Sends on one event loop for the whole module. aiosmtplib closes a TLS connection
    without waiting for the TLS shutdown to end; in a loop closed right after the send
    (asyncio.run) the socket would be left to the garbage collector, which warns. A loop
    that lives on (as the daemon's does) completes the shutdown."""

    async def go(ch: EmailChannel, msg: Message) -> None:
        try:
            await ch.send(msg)
        finally:
            await ch.aclose()

    with asyncio.Runner() as runner:
        yield lambda ch, msg: runner.run(go(ch, msg))
        runner.run(asyncio.sleep(0.5))


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = start_smtp(tmp_path / "smtp", security="starttls")
    yield server
    server.stop()


@pytest.fixture
def smtps(tmp_path: Path) -> Iterator[SmtpServer]:
    server = start_smtp(tmp_path / "smtps", security="tls")
    yield server
    server.stop()


class TestDelivery:
    def test_chinese_message_over_starttls(self, send: Send, smtp: SmtpServer) -> None:
        """Over STARTTLS with AUTH, a Chinese message arrives with its subject (life-safety
        marker first), UTF-8 body with the ack and id, envelope recipients and Message-ID."""
        send(channel(smtp), message())
        [mail] = smtp.mails()
        assert mail.tls
        assert mail.login == "sensord"
        assert mail.sender == "alerts@maple-court.example.cn"
        assert mail.recipients == (DESK, DAUGHTER)
        m = mail.message
        assert m["Subject"] == "[紧急] SOS：3号楼402室 王秀英"
        assert m["Message-ID"] == "<n-7f3a9c/2.sensord@maple-court.example.cn>"
        assert m["X-Sensord-Notification"] == "n-7f3a9c/2"
        assert m["From"] == "枫林苑告警 <alerts@maple-court.example.cn>"
        body = m.get_body(("plain",))
        assert body is not None
        assert body.get_content_charset() == "utf-8"
        # Text line breaks are CRLF in the canonical (encoded) form, RFC 2046 4.1.1.
        assert body.get_content().replace("\r\n", "\n") == (
            "王秀英按下了SOS求救按钮。\n位置：3号楼3单元402室，4层\n\n"
            "确认请回复：https://ack.example.cn/a/7f3a9c\nID: n-7f3a9c/2\n"
        )

    def test_chinese_message_over_implicit_tls(self, send: Send, smtps: SmtpServer) -> None:
        """security: tls speaks TLS from the first byte (port 465 style) and delivers the
        same subject, body, recipients and Message-ID."""
        send(channel(smtps), message())
        [mail] = smtps.mails()
        assert mail.tls
        assert mail.recipients == (DESK, DAUGHTER)
        assert mail.message["Subject"] == "[紧急] SOS：3号楼402室 王秀英"
        assert mail.message["Message-ID"] == "<n-7f3a9c/2.sensord@maple-court.example.cn>"
        assert "王秀英按下了SOS求救按钮" in mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]

    def test_same_message_twice_has_the_same_message_id(self, send: Send, smtp: SmtpServer) -> None:
        """A resend of one message (same id) carries the same Message-ID, so mail clients
        see one message; another message gets another."""
        send(channel(smtp), message())
        send(channel(smtp), message())
        send(channel(smtp), message(id="n-7f3a9c/3"))
        first, again, other = (m.message["Message-ID"] for m in smtp.mails())
        assert first == again
        assert other != first

    def test_ordinary_message_has_no_urgent_marker(self, send: Send, smtp: SmtpServer) -> None:
        """Only a life-safety message gets the [紧急] prefix and high importance."""
        send(channel(smtp), message(life_safety=False, severity=Severity.WARNING, title="垃圾桶已满：2号楼"))
        [mail] = smtp.mails()
        assert mail.message["Subject"] == "垃圾桶已满：2号楼"
        assert mail.message["Importance"] is None

    def test_line_breaks_in_the_title_become_spaces(self, send: Send, smtp: SmtpServer) -> None:
        """A title with a line break still makes a one-line Subject (no header injection)."""
        send(channel(smtp), message(title="SOS\r\nBcc: everyone@example.cn"))
        [mail] = smtp.mails()
        assert mail.message["Subject"] == "[紧急] SOS Bcc: everyone@example.cn"
        assert mail.recipients == (DESK, DAUGHTER)

    def test_recipients_are_not_shown_to_each_other(self, send: Send, smtp: SmtpServer) -> None:
        """Recipients' addresses go in the envelope only: To: shows the configured desk."""
        two = (Recipient("王芳", email=DAUGHTER), Recipient("李军", email="lijun@example.cn"))
        send(channel(smtp), message(recipients=two))
        [mail] = smtp.mails()
        assert mail.recipients == (DESK, DAUGHTER, "lijun@example.cn")
        assert mail.message["To"] == DESK
        assert DAUGHTER.encode() not in mail.raw

    def test_only_recipients_when_no_desk(self, send: Send, smtp: SmtpServer) -> None:
        """With no `to` list the mail goes to the recipients, To: undisclosed."""
        send(channel(smtp, to=()), message())
        [mail] = smtp.mails()
        assert mail.recipients == (DAUGHTER,)
        assert mail.message["To"] == "undisclosed-recipients:;"


class TestFailures:
    def test_wrong_password_is_permanent_with_the_servers_reason(self, send: Send, smtp: SmtpServer) -> None:
        """535 on AUTH is permanent and quotes the server."""
        with pytest.raises(PermanentSinkError, match=r"535 5\.7\.8 Authentication credentials invalid"):
            send(channel(smtp, password="wrong"), message())
        assert smtp.mails() == []

    def test_greylisting_451_is_retryable(self, send: Send, smtp: SmtpServer) -> None:
        """A 451 to RCPT (greylisting) is retryable, with the server's words."""
        smtp.answer_next("RCPT", "451 4.7.1 Greylisted, please try again later")
        with pytest.raises(RetryableSinkError, match=r"451 4\.7\.1 Greylisted"):
            send(channel(smtp, to=()), message())

    def test_451_to_data_is_retryable(self, send: Send, smtp: SmtpServer) -> None:
        """A 451 after DATA (local error in processing) is retryable; a resend then goes through."""
        smtp.answer_next("DATA", "451 4.3.0 Local error in processing")
        with pytest.raises(RetryableSinkError, match=r"451 4\.3\.0"):
            send(channel(smtp), message())
        send(channel(smtp), message())
        assert len(smtp.mails()) == 1

    def test_refused_recipient_is_permanent(self, send: Send, tmp_path: Path) -> None:
        """A mailbox the server does not have (550 5.1.1) is permanent, naming it."""
        refused = pytest.raises(PermanentSinkError, match=r"wangfang@example\.cn: 550 5\.1\.1")
        with start_smtp(tmp_path, mailboxes=frozenset({DESK})) as server, refused:
            send(channel(server, to=()), message())

    def test_some_recipients_refused_counts_as_delivered(
        self, send: Send, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """When the desk takes it and one recipient is refused, the send succeeds (a retry
        would mail the desk twice) and the refusal is logged."""
        with start_smtp(tmp_path, mailboxes=frozenset({DESK})) as server, caplog.at_level(logging.WARNING):
            send(channel(server), message())
            assert [m.recipients for m in server.mails()] == [(DESK,)]
        [record] = [r for r in caplog.records if r.name == "sensord.channels.email"]
        assert "550 5.1.1" in str(record.fields["refused"])  # type: ignore[attr-defined]

    def test_no_address_at_all_is_permanent(self, send: Send, smtp: SmtpServer) -> None:
        """No `to` and no recipient with an email: permanent, saying so."""
        nobody = (Recipient("王芳", phone="13800138000"),)
        with pytest.raises(PermanentSinkError, match="no email address"):
            send(channel(smtp, to=()), message(recipients=nobody))

    def test_server_down_is_retryable(self, send: Send, smtp: SmtpServer) -> None:
        """Nothing listening on the port: retryable."""
        with pytest.raises(RetryableSinkError):
            send(channel(smtp, port=free_port()), message())

    def test_untrusted_certificate_is_retryable_and_says_so(self, send: Send, smtp: SmtpServer) -> None:
        """A certificate the system CAs do not vouch for fails TLS: retryable (it may be
        fixed), with the verification failure in the reason."""
        with pytest.raises(RetryableSinkError, match="CERTIFICATE_VERIFY_FAILED"):
            send(channel(smtp, ca_file=None), message())
