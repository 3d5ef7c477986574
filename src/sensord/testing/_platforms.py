"""Stand-ins for the chat platforms' robot webhooks (WeCom, DingTalk, Feishu), each a real
HTTP server on a free loopback port.

Each one checks a request the way its platform's public documentation describes it,
written from that documentation and not from sensord's senders: the token in the URL,
the signature (recomputed here from the configured secret), the fields and their types
per message type, and the content limits. It answers as the platform does: HTTP 200
with the platform's result code in the body, 0 when it took the message.

    WeCom    群机器人配置说明: POST /cgi-bin/webhook/send?key=K, text (content ≤ 2048
             bytes, mentioned_list, mentioned_mobile_list) or markdown (content ≤ 4096
             bytes); errcode 93000 bad key, 40058 bad parameter, 45009 rate limit.
    DingTalk 自定义机器人接入 / 安全设置: POST /robot/send?access_token=T[&timestamp=ms&sign=S],
             S = urlencode(base64(HmacSHA256(secret, "ts\\nsecret"))), ts within an hour;
             markdown {title, text} or text {content}, `at` {atMobiles, atUserIds,
             isAtAll}; only mentions written in the text notify; errcode 310000 security
             check, 300001 token, 130101 rate limit.
    Feishu   自定义机器人使用指南: POST /open-apis/bot/v2/hook/T, body ≤ 20 KB, with
             signature on: body `timestamp` (s) and `sign` = base64(HmacSHA256(key=
             "ts\\nsecret", msg="")), ts within an hour; text, post (rich text: text, a,
             at, img elements) or interactive; code 19021 sign, 19001 token, 9499 bad
             request, 11232 frequency limited.

`script("rate_limit", "503", "hang")` makes the next requests get those answers: the
platform's rate-limit refusal, HTTP 503, or no answer until the server stops (or
`hang_s`). Every request the server took is in `accepted`, every refusal in `refused`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import http.server
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Self
from urllib.parse import parse_qs, quote, urlsplit

import orjson

from sensord.testing._servers import free_port, serve_posts

Fault = Literal["rate_limit", "503", "hang"]
_HOUR_S = 3600


@dataclass(frozen=True)
class Accepted:
    """One message a platform server took, as a person in the group would see it."""

    query: dict[str, str]
    body: dict[str, Any]
    msgtype: str
    text: str  # what the group reads (post paragraphs one per line)
    mentioned: tuple[str, ...]  # whom the platform would notify
    title: str = ""
    size: int = 0  # bytes of the request body
    at: float = 0.0  # time.time() when it was accepted


@dataclass(frozen=True)
class Refused:
    """One request the server refused, with the platform's code and message."""

    code: int
    msg: str


class _Invalid(Exception):  # noqa: N818 - a refusal, raised only inside the checks
    def __init__(self, code: int, msg: str) -> None:
        self.code = code
        self.msg = msg
        super().__init__(f"{code} {msg}")


def _need(ok: bool, code: int, msg: str) -> None:  # noqa: FBT001 - reads as an assertion
    if not ok:
        raise _Invalid(code, msg)


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_json(headers: Mapping[str, str]) -> bool:
    # Every platform's example request sends Content-Type: application/json.
    return headers.get("content-type", "").split(";")[0].strip() == "application/json"


def _hmac_b64(key: bytes, msg: bytes) -> str:
    return base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()


@dataclass
class _RobotServer:
    """The HTTP plumbing and the scripted faults; subclasses check and answer."""

    port: int = field(default_factory=free_port)
    hang_s: float = 30.0
    # Seconds each request takes before its answer: a slow receiver (bench/dispatch.py).
    delay_s: float = 0.0
    accepted: list[Accepted] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    _script: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _server: http.server.ThreadingHTTPServer | None = None

    rate_limit: tuple[int, str] = (0, "")  # the platform's rate-limit answer

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *faults: Fault) -> None:
        """The next requests get these answers, one each, then normal service again."""
        with self._lock:
            self._script.extend(faults)

    def check(self, path: str, query: dict[str, str], headers: Mapping[str, str], raw: bytes) -> Accepted:
        """Accept the request or raise _Invalid with the platform's code."""
        raise NotImplementedError

    def answer(self, code: int, msg: str) -> dict[str, Any]:
        return {"errcode": code, "errmsg": msg}

    def _handle(self, path: str, headers: Mapping[str, str], raw: bytes) -> tuple[int, bytes]:
        if self.delay_s:
            self._stopping.wait(self.delay_s)
        with self._lock:
            fault = self._script.pop(0) if self._script else None
        if fault == "hang":
            self._stopping.wait(self.hang_s)
            return 503, b""
        if fault == "503":
            return 503, b"Service Unavailable"
        if fault == "rate_limit":
            return 200, orjson.dumps(self.answer(*self.rate_limit))
        split = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        try:
            accepted = self.check(split.path, query, headers, raw)
        except _Invalid as refusal:
            with self._lock:
                self.refused.append(Refused(refusal.code, refusal.msg))
            return 200, orjson.dumps(self.answer(refusal.code, refusal.msg))
        with self._lock:
            self.accepted.append(dataclasses.replace(accepted, size=len(raw), at=time.time()))
        return 200, orjson.dumps(self.answer(0, "ok"))

    def start(self) -> Self:
        def answer(path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes]:
            status, body = self._handle(path, headers, raw)
            return status, {"Content-Type": "application/json; charset=utf-8"}, body

        self._server = serve_posts(self.port, answer, f"{type(self).__name__}-{self.port}")
        return self

    def stop(self) -> None:
        self._stopping.set()  # release hung requests first, so shutdown does not wait on them
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _json_object(raw: bytes, code: int) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)  # orjson refuses invalid UTF-8, as the platforms require UTF-8
    except orjson.JSONDecodeError:
        raise _Invalid(code, "invalid json") from None
    _need(isinstance(doc, dict), code, "invalid json: not an object")
    return dict(doc)


@dataclass(kw_only=True)
class WeComRobotServer(_RobotServer):
    """A WeCom group robot with webhook key `key`."""

    key: str
    rate_limit: tuple[int, str] = (45009, "api freq out of limit")

    @property
    def url(self) -> str:
        return f"{self.base}/cgi-bin/webhook/send?key={quote(self.key)}"

    def check(self, path: str, query: dict[str, str], headers: Mapping[str, str], raw: bytes) -> Accepted:
        _need(path == "/cgi-bin/webhook/send" and query.get("key") == self.key, 93000, "invalid webhook url")
        _need(_is_json(headers), 40058, "content-type is not application/json")
        doc = _json_object(raw, 40058)
        kind = doc.get("msgtype")
        if kind == "text":
            return self._text(query, doc)
        if kind == "markdown":
            return self._markdown(query, doc)
        raise _Invalid(40008, f"invalid message type {kind!r}")

    def _text(self, query: dict[str, str], doc: dict[str, Any]) -> Accepted:
        text = doc.get("text")
        _need(isinstance(text, dict) and isinstance(text.get("content"), str), 40058, "text.content missing")
        assert isinstance(text, dict)
        content: str = text["content"]
        _need(bool(content), 44004, "empty content")
        _need(len(content.encode()) <= 2048, 40058, "text.content exceed max length 2048")
        for name in ("mentioned_list", "mentioned_mobile_list"):
            _need(_is_str_list(text.get(name, [])), 40058, f"text.{name} must be a list of strings")
        mentioned = (*text.get("mentioned_mobile_list", []), *text.get("mentioned_list", []))
        return Accepted(query, doc, "text", content, tuple(mentioned))

    def _markdown(self, query: dict[str, str], doc: dict[str, Any]) -> Accepted:
        md = doc.get("markdown")
        _need(isinstance(md, dict) and isinstance(md.get("content"), str), 40058, "markdown.content missing")
        assert isinstance(md, dict)
        content: str = md["content"]
        _need(bool(content), 44004, "empty content")
        _need(len(content.encode()) <= 4096, 40058, "markdown.content exceed max length 4096")
        return Accepted(query, doc, "markdown", content, ())


@dataclass(kw_only=True)
class DingTalkRobotServer(_RobotServer):
    """A DingTalk custom robot with `access_token`, signed mode on when `secret` is set."""

    access_token: str
    secret: str | None = None
    rate_limit: tuple[int, str] = (130101, "send too fast, exceed 20 times per minute")

    @property
    def url(self) -> str:
        return f"{self.base}/robot/send?access_token={quote(self.access_token)}"

    def check(self, path: str, query: dict[str, str], headers: Mapping[str, str], raw: bytes) -> Accepted:
        _need(
            path == "/robot/send" and query.get("access_token") == self.access_token,
            300001,
            "token is not exist",
        )
        if self.secret is not None:
            self._check_sign(query, self.secret)
        _need(_is_json(headers), 40035, "content-type is not application/json")
        doc = _json_object(raw, 40035)
        kind, text, title = self._content(doc)
        at = doc.get("at", {})
        _need(isinstance(at, dict), 40035, "at must be an object")
        for name in ("atMobiles", "atUserIds"):
            _need(_is_str_list(at.get(name, [])), 40035, f"at.{name} must be a list of strings")
        _need(isinstance(at.get("isAtAll", False), bool), 40035, "at.isAtAll must be a boolean")
        # The platform notifies only the people whose @mention is also written in the text.
        named = (*at.get("atMobiles", []), *at.get("atUserIds", []))
        return Accepted(query, doc, kind, text, tuple(m for m in named if f"@{m}" in text), title)

    @staticmethod
    def _check_sign(query: dict[str, str], secret: str) -> None:
        ts, sign = query.get("timestamp", ""), query.get("sign", "")
        _need(ts.isdigit() and bool(sign), 310000, "sign not match: timestamp and sign are required")
        _need(abs(time.time() * 1000 - int(ts)) <= _HOUR_S * 1000, 310000, "invalid timestamp")
        # parse_qs has url-decoded the sign once, as the platform does.
        expected = _hmac_b64(secret.encode(), f"{ts}\n{secret}".encode())
        _need(hmac.compare_digest(expected, sign), 310000, "sign not match")

    @staticmethod
    def _content(doc: dict[str, Any]) -> tuple[str, str, str]:
        kind = doc.get("msgtype")
        if kind == "text":
            text = doc.get("text")
            _need(
                isinstance(text, dict) and isinstance(text.get("content"), str), 40035, "text.content missing"
            )
            assert isinstance(text, dict)
            return "text", text["content"], ""
        _need(kind == "markdown", 40035, f"unsupported msgtype {kind!r}")
        md = doc.get("markdown")
        _need(isinstance(md, dict), 40035, "markdown missing")
        assert isinstance(md, dict)
        title, text = md.get("title"), md.get("text")
        _need(isinstance(title, str) and bool(title), 40035, "markdown.title missing")
        _need(isinstance(text, str) and bool(text), 40035, "markdown.text missing")
        assert isinstance(title, str)
        assert isinstance(text, str)
        # Limits from DingTalk's error table (34016): markdown ≤ 5000, title ≤ 64.
        _need(len(text) <= 5000 and len(title) <= 64, 34016, "message content exceeds the limit")
        return "markdown", text, title


@dataclass(kw_only=True)
class FeishuBotServer(_RobotServer):
    """A Feishu custom bot with webhook `token`, signature verification on when `secret` is set.

    `legacy_answer` answers success only in the older shape (`StatusCode`, no `code`)."""

    token: str
    secret: str | None = None
    legacy_answer: bool = False
    rate_limit: tuple[int, str] = (11232, "frequency limited")

    @property
    def url(self) -> str:
        return f"{self.base}/open-apis/bot/v2/hook/{quote(self.token)}"

    def answer(self, code: int, msg: str) -> dict[str, Any]:
        if code == 0:
            if self.legacy_answer:
                return {"Extra": None, "StatusCode": 0, "StatusMessage": "success"}
            return {"code": 0, "data": {}, "msg": "success"}
        return {"code": code, "data": {}, "msg": msg}

    def check(self, path: str, query: dict[str, str], headers: Mapping[str, str], raw: bytes) -> Accepted:
        prefix = "/open-apis/bot/v2/hook/"
        token = path.removeprefix(prefix) if path.startswith(prefix) else None
        _need(token == self.token, 19001, "param invalid: incoming webhook access token invalid")
        # "请求体的数据大小不能超过 20 KB": the stricter reading, 20,000 bytes.
        _need(len(raw) <= 20_000, 9499, "Bad Request")
        _need(_is_json(headers), 9499, "Bad Request")
        doc = _json_object(raw, 9499)
        if self.secret is not None:
            self._check_sign(doc, self.secret)
        kind = doc.get("msg_type")
        content = doc.get("content") if kind != "interactive" else doc.get("card")
        _need(isinstance(content, dict), 9499, "Bad Request")
        assert isinstance(content, dict)
        if kind == "text":
            _need(isinstance(content.get("text"), str) and bool(content["text"]), 9499, "Bad Request")
            return Accepted(query, doc, "text", content["text"], ())
        if kind == "post":
            return self._post(query, doc, content)
        _need(kind == "interactive", 9499, "Bad Request")
        return Accepted(query, doc, "interactive", orjson.dumps(content).decode(), ())

    @staticmethod
    def _check_sign(doc: dict[str, Any], secret: str) -> None:
        fail = "sign match fail or timestamp is not within one hour from current time"
        ts, sign = doc.get("timestamp"), doc.get("sign")
        _need(isinstance(ts, str | int) and str(ts).isdigit() and isinstance(sign, str), 19021, fail)
        assert isinstance(sign, str)
        _need(abs(time.time() - int(str(ts))) <= _HOUR_S, 19021, fail)
        expected = _hmac_b64(f"{ts}\n{secret}".encode(), b"")
        _need(hmac.compare_digest(expected, sign), 19021, fail)

    @staticmethod
    def _post(query: dict[str, str], doc: dict[str, Any], content: dict[str, Any]) -> Accepted:
        post = content.get("post")
        _need(isinstance(post, dict) and bool(post), 9499, "Bad Request")
        assert isinstance(post, dict)
        lang = next(iter(post.values()))
        _need(isinstance(lang, dict) and isinstance(lang.get("content"), list), 9499, "Bad Request")
        assert isinstance(lang, dict)
        title = lang.get("title", "")
        _need(isinstance(title, str), 9499, "Bad Request")
        lines: list[str] = []
        mentioned: list[str] = []
        for paragraph in lang["content"]:
            _need(isinstance(paragraph, list), 9499, "Bad Request")
            lines.append("".join(_element(e, mentioned) for e in paragraph))
        return Accepted(query, doc, "post", "\n".join(lines), tuple(mentioned), title)


def _element(element: object, mentioned: list[str]) -> str:
    """The text one rich-text element shows; an `at` element adds to `mentioned`."""
    _need(isinstance(element, dict), 9499, "Bad Request")
    assert isinstance(element, dict)
    tag = element.get("tag")
    required = {"text": ("text",), "a": ("text", "href"), "at": ("user_id",), "img": ("image_key",)}
    _need(tag in required, 9499, "Bad Request")
    _need(all(isinstance(element.get(k), str) for k in required[str(tag)]), 9499, "Bad Request")
    if tag == "at":
        mentioned.append(element["user_id"])
        return f"@{element['user_id']}"
    return str(element.get("text", ""))
