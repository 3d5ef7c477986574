"""Email over SMTP: one message to the configured `to` list and the recipients' addresses.

Why aiosmtplib, and not smtplib in a thread or apprise: the channel has to tell a
temporary refusal (4xx: greylisting, a full queue; retry) from a permanent one (535 bad
password, 550 unknown mailbox; never retry) and pass on the server's own words. aiosmtplib
raises the server's code and text for each step and runs on the daemon's event loop;
apprise reports only True/False, so a 451 could not be told from a wrong password, and has
no place for our stable message id. smtplib would need a thread per send and its
timeouts cannot be cancelled with the task.

One connection per message: alerts are rare, and a connection held open between them
would be closed by the server's idle timeout and found dead at the next send.

The `Message-ID` is made from the message id, so a resend after a lost answer is the
same message to mail clients.
The message's recipients go in the envelope only (like Bcc): family contacts and grid
workers do not see one another's addresses; the `to` list is the visible To:.
"""

from __future__ import annotations

import email.policy
import logging
import ssl
from collections.abc import Mapping
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, localtime
from urllib.parse import quote

import aiosmtplib
from pydantic import SecretStr

from sensord._errors import ConfigError, PermanentSinkError, RetryableSinkError
from sensord._types import Severity
from sensord.channels._base import Message
from sensord.channels._mail_settings import EmailSettings, check_address

log = logging.getLogger("sensord.channels.email")

# RFC 5322 atext, less the dot (kept out so the id part is always a valid dot-atom).
_ATEXT = "!#$%&'*+-/=?^_`{|}~"


def message_id_header(message_id: str, domain: str) -> str:
    """A Message-ID that is the same for every send of `message_id`."""
    return f"<{quote(message_id, safe=_ATEXT)}.sensord@{domain}>"


def compose(message: Message, settings: EmailSettings) -> EmailMessage:
    """The email for one message: subject from the title, plain UTF-8 text body."""
    # The SMTP policy writes CRLF line breaks, also inside the encoded body: the
    # canonical form of text/plain (RFC 2046 4.1.1).
    mail = EmailMessage(policy=email.policy.SMTP)
    prefix = settings.urgent_prefix if message.life_safety else ""
    mail["Subject"] = _one_line(prefix + message.title)
    mail["From"] = Address(settings.from_name, addr_spec=settings.from_address)
    mail["To"] = ", ".join(settings.to) if settings.to else "undisclosed-recipients:;"
    mail["Date"] = format_datetime(localtime())
    mail["Message-ID"] = message_id_header(message.id, settings.from_address.rpartition("@")[2])
    mail["X-Sensord-Notification"] = _one_line(message.id)
    # RFC 3834: out-of-office and other robots must not answer an alert.
    mail["Auto-Submitted"] = "auto-generated"
    if message.life_safety or message.severity is Severity.CRITICAL:
        mail["Importance"] = "high"
        mail["X-Priority"] = "1"
    footer = [message.ack] if message.ack else []
    footer.append(f"ID: {message.id}")
    mail.set_content(message.text + "\n\n" + "\n".join(footer) + "\n", charset="utf-8")
    return mail


def _one_line(text: str) -> str:
    """A header value: a line break in a title would be refused by the email package
    (it could start a header of its own)."""
    return " ".join(text.split())


class EmailChannel:
    """Sends each message as one email through an SMTP submission server."""

    per_recipient = False

    def __init__(
        self, settings: EmailSettings, *, password: SecretStr | None = None, name: str = "email"
    ) -> None:
        if (settings.password is None) != (password is None):
            raise ConfigError("pass the password read from settings.password (and only then)", key=name)
        self.name = name
        self._settings = settings
        self._password = password
        self._tls = _tls_context(settings, name) if settings.security != "none" else None

    async def send(self, message: Message) -> None:
        recipients = self._recipients(message)
        mail = compose(message, self._settings)
        s = self._settings
        try:
            refused, _ = await aiosmtplib.send(
                mail,
                sender=s.from_address,
                recipients=recipients,
                hostname=s.host,
                port=s.effective_port,
                username=s.username,
                password=self._password.get_secret_value() if self._password else None,
                timeout=s.timeout_s,
                use_tls=s.security == "tls",
                start_tls=s.security == "starttls",
                tls_context=self._tls,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise _refused(self.name, exc.recipients) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _answer(self.name, exc.code, exc.message) from None
        except OSError as exc:
            # Refused or dropped connections, timeouts and TLS failures (aiosmtplib's
            # connection errors and ssl.SSLError are OSErrors): the server may be back,
            # or the certificate fixed, later.
            raise RetryableSinkError(self.name, f"{type(exc).__name__}: {exc}") from None
        except aiosmtplib.SMTPException as exc:
            # No STARTTLS or no AUTH offered: the server will not change its mind.
            raise PermanentSinkError(self.name, exc.message) from None
        if refused:
            # Some mailboxes took it: a resend would reach them twice, so this counts as
            # delivered and the refused addresses are logged for someone to fix.
            log.warning(
                "email refused for some recipients",
                extra={"fields": {"channel": self.name, "id": message.id, "refused": _reasons(refused)}},
            )

    def _recipients(self, message: Message) -> list[str]:
        wanted = list(self._settings.to)
        for r in message.recipients:
            if r.email is None:
                continue
            try:
                wanted.append(check_address(r.email))
            except ValueError as exc:
                log.warning(
                    "recipient email skipped",
                    extra={
                        "fields": {
                            "channel": self.name,
                            "id": message.id,
                            "recipient": r.name,
                            "why": str(exc),
                        }
                    },
                )
        # The same mailbox twice (the desk is also a recipient) gets one copy.
        seen: dict[str, str] = {}
        for address in wanted:
            seen.setdefault(address.lower(), address)
        unique = list(seen.values())
        if not unique:
            raise PermanentSinkError(
                self.name, f"no email address: `to` is empty and no recipient of {message.receiver!r} has one"
            )
        return unique

    async def aclose(self) -> None:
        """Nothing is held open between messages."""


def _tls_context(settings: EmailSettings, name: str) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
    except OSError as exc:
        raise ConfigError(f"cannot read ca_file {settings.ca_file}: {exc.strerror}", key=name) from None
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _answer(name: str, code: int, text: str) -> RetryableSinkError | PermanentSinkError:
    """4xx: the server asks to try later; 5xx (and anything else): it never will take it."""
    reason = f"SMTP {code} {text}"
    if 400 <= code < 500:
        return RetryableSinkError(name, reason)
    return PermanentSinkError(name, reason)


def _refused(
    name: str, refusals: list[aiosmtplib.SMTPRecipientRefused]
) -> RetryableSinkError | PermanentSinkError:
    """Every recipient refused: worth a retry if any refusal was temporary."""
    reason = "every recipient refused: " + _reasons({r.recipient: (r.code, r.message) for r in refusals})
    if any(400 <= r.code < 500 for r in refusals):
        return RetryableSinkError(name, reason)
    return PermanentSinkError(name, reason)


def _reasons(refused: Mapping[str, tuple[int, str]]) -> str:
    return "; ".join(f"{address}: {code} {text}" for address, (code, text) in refused.items())
