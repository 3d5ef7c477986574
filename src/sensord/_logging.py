"""Structured logs: one JSON object per line on stderr, which journald keeps.

Callers pass facts as `extra={"fields": {...}}`; secrets are never among them (settings
hold secrets as SecretStr, which renders as '**********', and sink URLs as SecretUrl,
which renders redacted). As the last step before the journal, both formatters show
every http(s) URL in a line redacted, whoever wrote it: an exception's text or a
library's log record may quote a URL with its token.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from sensord._secret_url import redact_urls
from sensord._settings import LogSettings


class JsonFormatter(logging.Formatter):
    """`{"ts":…, "level":…, "logger":…, "msg":…, **fields}`."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return redact_urls(orjson.dumps(doc, default=str).decode())


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal: time, level, message, then key=value facts."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        tail = ""
        if isinstance(fields, dict):
            tail = " " + " ".join(f"{k}={v}" for k, v in fields.items())
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<7} {record.getMessage()}{tail}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact_urls(line)


def configure_logging(settings: LogSettings) -> None:
    """Install the chosen formatter on the root logger (called once, by the CLI)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    # httpx and httpcore log every request at INFO, URL and all: a line per webhook POST
    # would bury what matters (delivery failures are logged by sensord itself, per sink),
    # and the URL may carry the webhook's token. aiohttp (the event sinks' client) logs no
    # request, but its debug lines name cookies and hosts. All kept at WARNING even when
    # sensord logs DEBUG.
    for name in ("httpx", "httpcore", "aiohttp"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


class RateLimited:
    """Log a repeated condition (e.g. one unknown device) at most once per `every_s` per key."""

    def __init__(self, logger: logging.Logger, every_s: float = 60.0) -> None:
        self._logger = logger
        self._every = every_s
        self._last: dict[str, float] = {}

    def warning(self, key: str, msg: str, fields: dict[str, Any], now: float) -> None:
        if now - self._last.get(key, -self._every) >= self._every:
            self._last[key] = now
            if len(self._last) > 10_000:  # bound memory against a flood of random ids
                self._last.clear()
            self._logger.warning(msg, extra={"fields": fields})
