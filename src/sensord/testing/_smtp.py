"""A real SMTP server for tests: aiosmtpd on a free loopback port, with AUTH checked
against one user and password, and STARTTLS, implicit TLS or plain text.

Its certificate is a throw-away self-signed one (made with the openssl CLI in the folder
it is given) for `localhost` and 127.0.0.1; clients trust it with `cert_file` as their
CA file. Mailboxes can be limited (others refused with 550) and the next answer to
MAIL, RCPT or DATA can be scripted (a 451 greylisting, a 452 full mailbox).
"""

from __future__ import annotations

import email
import email.policy
import ssl
import subprocess
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from sensord.testing._servers import _binary, free_port

Security = Literal["starttls", "tls", "none"]
Command = Literal["MAIL", "RCPT", "DATA"]


@dataclass(frozen=True)
class Mail:
    """One message the server accepted: the envelope, the parsed message and how it came."""

    sender: str
    recipients: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    login: str
    tls: bool


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for `localhost` and 127.0.0.1, valid two days."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    subprocess.run(  # noqa: S603 - fixed binary and arguments
        [
            _binary("openssl", "/usr/bin/openssl"),
            "req", "-x509", "-nodes", "-days", "2",
            # An EC key is made in milliseconds; RSA 2048 can take a second.
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class _Handler:
    """aiosmtpd's hooks: refuse mail before AUTH, refuse unknown mailboxes, play the
    scripted answers, keep what was accepted. Hooks run on the server's thread."""

    def __init__(self, mailboxes: frozenset[str] | None) -> None:
        self.mailboxes = mailboxes
        self.received: list[Mail] = []
        self._script: dict[str, deque[str]] = defaultdict(deque)
        self._lock = threading.Lock()

    def answer_next(self, command: Command, reply: str) -> None:
        with self._lock:
            self._script[command].append(reply)

    def _scripted(self, command: Command) -> str | None:
        with self._lock:
            queue = self._script[command]
            return queue.popleft() if queue else None

    def mails(self) -> list[Mail]:
        with self._lock:
            return list(self.received)

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self, _smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not session.authenticated:
            # aiosmtpd's own auth_required cannot be used with implicit TLS (it only
            # counts STARTTLS as encrypted), so the check lives here for every variant.
            return "530 5.7.0 Authentication required"
        if scripted := self._scripted("MAIL"):
            return scripted
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802
        self, _smtp: SMTP, _session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if scripted := self._scripted("RCPT"):
            return scripted
        if self.mailboxes is not None and address.lower() not in self.mailboxes:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        if scripted := self._scripted("DATA"):
            return scripted
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else ""
        tls = smtp.transport is not None and smtp.transport.get_extra_info("ssl_object") is not None
        mail = Mail(envelope.mail_from or "", tuple(envelope.rcpt_tos), message, raw, login, tls)
        with self._lock:
            self.received.append(mail)
        return "250 2.0.0 Message accepted for delivery"


@dataclass
class SmtpServer:
    """aiosmtpd on 127.0.0.1, started in its own thread (its Controller's event loop).

    `security`: `starttls` (plain connect, STARTTLS required before AUTH), `tls` (TLS
    from the first byte, as on port 465) or `none`. AUTH LOGIN and PLAIN are checked
    against `username`/`password`; MAIL before a successful AUTH is refused with 530.
    `mailboxes`: the addresses that exist (others get 550 5.1.1); None takes any.
    `answer_next("RCPT", "451 4.7.1 Greylisted")` makes the next RCPT get that answer.
    """

    workdir: Path
    security: Security = "starttls"
    username: str = "sensord"
    password: str = "s3cret-密码"  # noqa: S105 - a test account on a test server
    mailboxes: frozenset[str] | None = None
    port: int = field(default_factory=free_port)
    cert_file: Path = field(init=False)
    _key_file: Path = field(init=False)
    _handler: _Handler = field(init=False)
    _controller: Controller | None = None

    def __post_init__(self) -> None:
        self.cert_file, self._key_file = self_signed_certificate(self.workdir)
        self._handler = _Handler(self.mailboxes)

    def answer_next(self, command: Command, reply: str) -> None:
        """The next `command` gets `reply` (a full SMTP reply line, e.g. `451 4.3.0 busy`)."""
        self._handler.answer_next(command, reply)

    def mails(self) -> list[Mail]:
        """What was accepted so far, oldest first."""
        return self._handler.mails()

    def _authenticate(
        self, _server: SMTP, _session: Session, _envelope: Envelope, _mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.username.encode()
            and auth_data.password == self.password.encode()
        )
        # handled=False lets aiosmtpd answer a failure with its standard
        # "535 5.7.8 Authentication credentials invalid".
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self._key_file)
        return context

    def start(self) -> Self:
        """Listen (a no-op when already listening, so `with start_smtp(...)` works)."""
        if self._controller is not None:
            return self
        context = self._tls_context()
        kwargs: dict[str, Any] = {
            "authenticator": self._authenticate,
            # aiosmtpd knows only STARTTLS as encryption: with implicit TLS (or none) it
            # would refuse AUTH as "encryption required".
            "auth_require_tls": self.security == "starttls",
        }
        if self.security == "starttls":
            kwargs |= {"tls_context": context, "require_starttls": True}
        elif self.security == "tls":
            kwargs["ssl_context"] = context
        self._controller = Controller(
            self._handler, hostname="127.0.0.1", port=self.port, server_hostname="localhost", **kwargs
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_smtp(workdir: Path, *, security: Security = "starttls", **kwargs: Any) -> SmtpServer:
    """Start an SMTP server on a free loopback port (stop it with `stop()`)."""
    return SmtpServer(workdir, security, **kwargs).start()
