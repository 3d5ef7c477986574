"""Sink URLs are secrets: a webhook URL often carries its token, so it is shown redacted
everywhere and only the sink that sends reads it whole (`SecretUrl.reveal()`).

    https://bot:pw@hooks.example:8443/robot/send?access_token=abc&sign=def#x
    → https://***@hooks.example:8443/robot/send?access_token=***&sign=***#***

Kept: scheme, host, port, path and query parameter names, so an operator can still
tell which sink a line is about. Hidden: the userinfo, every query value (a bare query
item whole), the fragment, and path segments that look like tokens: 16 or more URL-safe
characters mixing letters and digits or upper and lower case, as Slack, Discord and
Telegram put them in the path (`/services/T0/B0/***`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

MASK = "***"
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~:=+%-]{16,}")
# A URL inside free text (an exception message, a response body, a log line) ends at
# whitespace, a quote or a bracket that a repr or an HTML page puts around it.
_URL_IN_TEXT = re.compile(r"https?://[^\s\"'<>()\[\]{}\\`]+", re.IGNORECASE)
# Shorter secret parts are masked in the URL's own display but not searched for in
# other text: replacing every "1" of an error message would hide what it says.
_MIN_SEARCHED = 4


def _token_like(segment: str) -> bool:
    if _TOKEN_CHARS.fullmatch(segment) is None:
        return False
    # A random token of this length all but surely mixes both; a word rarely does.
    digits_and_letters = any(c.isdigit() for c in segment) and any(c.isalpha() for c in segment)
    both_cases = any(c.isupper() for c in segment) and any(c.islower() for c in segment)
    return digits_and_letters or both_cases


def _redact_query(query: str) -> str:
    items = []
    for item in query.split("&"):
        name, eq, value = item.partition("=")
        if eq:
            items.append(f"{name}={MASK}" if value else item)
        else:
            items.append(MASK if item else item)  # a bare item may be the token itself
    return "&".join(items)


def redact_url(url: str) -> str:
    """The display form of one URL: credentials, query values and token-like path
    segments replaced by `***`. Never raises; an unparseable text is shown as `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    _, at, hostport = parts.netloc.rpartition("@")
    shown = f"{parts.scheme}:" if parts.scheme else ""
    if parts.netloc or url.removeprefix(shown).startswith("//"):
        shown += "//" + (f"{MASK}@" if at else "") + hostport
    shown += "/".join(MASK if _token_like(s) else s for s in parts.path.split("/"))
    if parts.query:
        shown += "?" + _redact_query(parts.query)
    if parts.fragment:
        shown += "#" + MASK
    return shown


def redact_urls(text: str) -> str:
    """`text` with every http(s) URL in it shown as `redact_url` shows it."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group()), text)


def _secret_parts(url: str) -> tuple[str, ...]:
    """What `redact_url` hides, as it may be written elsewhere (percent-encoded or not),
    longest first so that no shorter part leaves a piece of a longer one behind."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    found = [userinfo, *userinfo.split(":", 1)] if at else []
    found += [s for s in parts.path.split("/") if _token_like(s)]
    for item in parts.query.split("&"):
        name, eq, value = item.partition("=")
        found.append(value if eq else name)
    found.append(parts.fragment)
    decoded = {d for f in found for d in (f, unquote(f), unquote_plus(f))}
    variants = {v for d in decoded for v in (d, quote(d), quote(d, safe=""), quote_plus(d, safe=""))}
    return tuple(sorted((v for v in variants if len(v) >= _MIN_SEARCHED), key=len, reverse=True))


def _check(url: str) -> None:
    """Raise ValueError with a reason a person can act on; the reason never quotes the URL."""
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("a URL cannot contain spaces or control characters (percent-encode them)")
    try:
        parts = urlsplit(url)
        _ = parts.port  # parsed on access: a port that is not a number up to 65535 raises
    except ValueError:
        raise ValueError(
            "not a valid URL: the port must be a number up to 65535 and an IPv6 host goes in [brackets]"
        ) from None
    if parts.scheme.lower() not in {"http", "https"}:
        raise ValueError("the scheme must be http or https, e.g. https://hooks.example/alerts")
    if not parts.hostname:
        raise ValueError("the URL has no host, e.g. https://hooks.example/alerts")
    if "@" in url.split("//", 1)[1].removeprefix(parts.netloc):
        # "https://bot:p/w@host/" parses as host "bot", port "p", path "/w@host/": the
        # request would go elsewhere and half the password would be shown as a path.
        raise ValueError(
            "an '@' after the host: percent-encode it (%40), and any '/', '?' or '#' in a "
            "user name or password (%2F, %3F, %23)"
        )


class SecretUrl:
    """A URL that may carry credentials: validated as an http(s) URL, shown redacted in
    its str, repr and JSON dump, and read whole only through `reveal()`.

    In a config file it stays a plain string. `model_dump()` keeps the object (so a dump
    validates back to the same settings); `model_dump(mode="json")` writes the redacted
    text, as pydantic's `SecretStr` writes its mask.
    """

    __slots__ = ("_parts", "_shown", "_url")

    def __init__(self, url: str) -> None:
        _check(url)
        self._url = url
        self._shown = redact_url(url)
        self._parts = _secret_parts(url)

    def reveal(self) -> str:
        """The URL as configured, for the one place that sends to it."""
        return self._url

    def scrub(self, text: str) -> str:
        """Foreign text (an HTTP client's error, a response body) with this URL shown redacted,
        its secret parts masked wherever they appear, and any other URL redacted too."""
        text = text.replace(self._url, self._shown)
        for part in self._parts:
            text = text.replace(part, MASK)
        return redact_urls(text)

    def __str__(self) -> str:
        return self._shown

    def __repr__(self) -> str:
        return f"SecretUrl({self._shown!r})"

    def __eq__(self, other: object) -> bool:
        return self._url == other._url if isinstance(other, SecretUrl) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._url)

    @classmethod
    def _validate(cls, value: object) -> SecretUrl:
        if isinstance(value, SecretUrl):
            return value
        if not isinstance(value, str):
            raise ValueError("a URL is a string, e.g. https://hooks.example/alerts")  # noqa: TRY004 - pydantic reports ValueError
        return cls(value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(str, when_used="json"),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "uri"}
