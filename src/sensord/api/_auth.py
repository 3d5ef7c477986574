"""Who is calling: a client's token (from secrets) gives its name and role.

A token comes as `Authorization: Bearer <token>`, or, for the console in a browser, in
the `sensord_token` cookie set at log-in. Tokens are compared in constant time, each
against every client's, so the time taken says nothing about which one nearly matched.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from pydantic import SecretStr

from sensord._errors import WorkOrderError
from sensord._office import Caller
from sensord._settings import ApiSettings

ROLES = ("read", "act", "admin")
COOKIE = "sensord_token"


class Unauthorized(WorkOrderError):  # noqa: N818 - reads as the answer it is
    """No token, or one no client has (401)."""

    status = 401


class Forbidden(WorkOrderError):  # noqa: N818 - reads as the answer it is
    """The client's role does not allow this (403)."""

    status = 403


@dataclass(frozen=True, slots=True)
class _Client:
    name: str
    role: str
    token: bytes


class Clients:
    """The API's clients, from settings and their resolved secrets."""

    def __init__(self, settings: ApiSettings, secrets: dict[str, SecretStr]) -> None:
        self._clients = [
            _Client(c.name, c.role, secrets[f"api.clients.{c.name}.token"].get_secret_value().encode())
            for c in settings.clients
        ]

    def identify(self, token: str | None, remote: str) -> Caller:
        """The caller with this token; Unauthorized without one that matches."""
        if not token:
            raise Unauthorized("a token is needed: Authorization: Bearer <token>")
        given = token.encode()
        found: _Client | None = None
        for c in self._clients:
            if hmac.compare_digest(given, c.token):
                found = c
        if found is None:
            raise Unauthorized("unknown token")
        return Caller(found.name, found.role, remote)


def require(caller: Caller, role: str) -> Caller:
    """The caller if its role is `role` or above; Forbidden otherwise."""
    if ROLES.index(caller.role) < ROLES.index(role):
        raise Forbidden(f"{caller.name} has role {caller.role}; this needs {role}")
    return caller


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` header."""
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None
