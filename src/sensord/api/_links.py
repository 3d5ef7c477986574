"""One-tap links: a signed, expiring token in a chat or SMS message that allows exactly
one action on one work order, once.

    <public_url>/l/<token>      token = base64url(payload) "." base64url(HMAC-SHA256)
    payload = {"w": work order, "a": action, "e": expiry (epoch seconds)}

Opening the link shows the work order and one button; the action happens on the POST
(chat apps fetch links to preview them: a GET must never act). The signature's digest
is the link's id: the outbox records it when used, so a second tap is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

import orjson

from sensord._errors import Conflict, WorkOrderError

LINK_ACTIONS = ("accept",)


class BadLink(WorkOrderError):  # noqa: N818 - reads as the answer it is
    """A link that is forged, damaged or expired (403)."""

    status = 403


@dataclass(frozen=True, slots=True)
class Link:
    work_order: str
    action: str
    expires: float
    id: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Links:
    """Makes and checks one-tap links with one secret."""

    def __init__(self, secret: bytes, public_url: str, ttl_s: float) -> None:
        self._key = hashlib.sha256(b"sensord-link\x1f" + secret).digest()
        self._base = public_url.rstrip("/")
        self._ttl = ttl_s

    def token(self, work_order: str, action: str, at: float) -> str:
        payload = orjson.dumps({"w": work_order, "a": action, "e": round(at + self._ttl)})
        sig = hmac.new(self._key, payload, hashlib.sha256).digest()
        return f"{_b64(payload)}.{_b64(sig)}"

    def url(self, work_order: str, at: float) -> str:
        """The accept link of a work order, valid for the TTL from `at`."""
        return f"{self._base}/l/{self.token(work_order, 'accept', at)}"

    def check(self, token: str, now: float) -> Link:
        """The link's work order and action; BadLink if forged, damaged or expired."""
        try:
            body, sig = token.split(".")
            payload, given = _unb64(body), _unb64(sig)
        except ValueError:
            raise BadLink("not a sensord link (damaged in copying?)") from None
        want = hmac.new(self._key, payload, hashlib.sha256).digest()
        if not hmac.compare_digest(given, want):
            raise BadLink("the link's signature does not match: not made by this sensord")
        d = orjson.loads(payload)
        if not isinstance(d, dict) or d.get("a") not in LINK_ACTIONS:
            raise BadLink("the link names no action sensord knows")
        if float(d["e"]) < now:
            raise Conflict("the link has expired; open the console to act on the work order")
        return Link(str(d["w"]), str(d["a"]), float(d["e"]), hashlib.sha256(given).hexdigest()[:32])
