"""An SMS provider's HTTP API on loopback, checking requests the way the provider's
documentation describes them, in one of two styles:

`aliyun`, after Aliyun's SendSms: a POST with a JSON body of PhoneNumbers (here one
number), SignName, TemplateCode, TemplateParam (a JSON *string* holding the template's
variables; this gateway's template has one, `text`) and OutId (our id); the credential
in `Authorization: APPCODE <code>` as Aliyun's API marketplace passes it. The answer is
`{"Code": "OK", "Message": "OK", "BizId": …, "RequestId": …}`; an unknown credential is
HTTP 404 with Code `InvalidAccessKeyId.NotFound`; throttling is HTTP 200 with Code
`isv.BUSINESS_LIMIT_CONTROL`.

`yunpian`, after Yunpian's single_send: a POST, application/x-www-form-urlencoded, with
`apikey`, `mobile`, `text` (starting with the 【signature】 the provider requires) and
`uid` (our id). The answer is `{"code": 0, "msg": "发送成功", …}`; errors are HTTP 400
with a code: -1 for a bad apikey, 8/9/22 for per-number frequency limits.
"""

from __future__ import annotations

import http.server
import re
import threading
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import orjson

from sensord.testing._servers import free_port, serve_posts

Style = Literal["aliyun", "yunpian"]

# What each style answers, by provider code: (HTTP status, message field's text).
_ANSWERS: dict[Style, dict[str | int, tuple[int, str]]] = {
    "aliyun": {
        "OK": (200, "OK"),
        "InvalidAccessKeyId.NotFound": (404, "Specified access key is not found."),
        "isv.BUSINESS_LIMIT_CONTROL": (200, "触发分钟级流控Permits:1"),
        "isv.MOBILE_NUMBER_ILLEGAL": (200, "非法手机号"),
        "isv.INVALID_PARAMETERS": (200, "参数异常"),
        "isv.INVALID_JSON_PARAM": (200, "JSON参数不合法，只接受字符串值"),
    },
    "yunpian": {
        0: (200, "发送成功"),
        -1: (400, "非法的apikey"),
        2: (400, "请求参数格式错误"),
        8: (400, "同一手机号30秒内重复提交相同的内容"),
        9: (400, "同一手机号5分钟内重复提交相同的内容超过3次"),
        22: (400, "验证码类短信1小时内同一手机号发送次数不能超过3次"),
    },
}
_SIGNED = re.compile(r"^【[^】]{2,12}】")
_PHONE = re.compile(r"^(\+?86)?1\d{10}$")


# What a style's check makes of a request: phone, text, id, the fields, the provider code.
_Checked = tuple[Any, Any, Any, dict[str, Any], str | int]


def _is(headers: dict[str, str], content_type: str) -> bool:
    return headers.get("content-type", "").startswith(content_type)


@dataclass(frozen=True)
class SmsRequest:
    """One request the gateway took in: the number, the text and id as the provider
    understood them (None where the request was malformed), and its answer."""

    phone: str | None
    text: str | None
    id: str | None
    fields: dict[str, Any]
    headers: dict[str, str]
    status: int
    code: str | int


@dataclass
class SmsGateway:
    """The stand-in provider. `credential` is the APPCODE (aliyun) or apikey (yunpian) it
    accepts. `answer_next(code)` gives the next valid request that provider code's
    answer (`isv.BUSINESS_LIMIT_CONTROL`, `8`); `refuse_next(503)` answers the next
    request with that HTTP status and no body, as a proxy in front of it would."""

    style: Style
    credential: str
    port: int = field(default_factory=free_port)
    received: list[SmsRequest] = field(default_factory=list)
    _script: deque[str | int] = field(default_factory=deque)
    _refusals: deque[int] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        path = "/sms/send" if self.style == "aliyun" else "/v2/sms/single_send.json"
        return f"http://127.0.0.1:{self.port}{path}"

    def answer_next(self, code: str | int) -> None:
        with self._lock:
            self._script.append(code)

    def refuse_next(self, status: int) -> None:
        with self._lock:
            self._refusals.append(status)

    def texts(self) -> list[SmsRequest]:
        """The requests answered with success (a text sent), oldest first."""
        with self._lock:
            return [t for t in self.received if t.code in {"OK", 0}]

    def _handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, bytes]:
        with self._lock:
            refusal = self._refusals.popleft() if self._refusals else None
            scripted = None if refusal or not self._script else self._script.popleft()
        if refusal is not None:
            self._keep(SmsRequest(None, None, None, {}, headers, refusal, refusal))
            return refusal, b""
        check = self._aliyun if self.style == "aliyun" else self._yunpian
        phone, text, msg_id, fields, code = check(path, headers, raw)
        if code in {"OK", 0} and scripted is not None:
            code = scripted
        status, message = _ANSWERS[self.style][code]
        self._keep(SmsRequest(phone, text, msg_id, fields, headers, status, code))
        if self.style == "aliyun":
            answer: dict[str, Any] = {"Code": code, "Message": message, "RequestId": "F655A8D5-B967-440B"}
            if code == "OK":
                answer["BizId"] = "900619746936498440^0"
        else:
            answer = {"code": code, "msg": message}
            if code == 0:
                answer |= {"count": 1, "fee": 0.05, "unit": "RMB", "mobile": phone, "sid": 3310228982}
        return status, orjson.dumps(answer)

    def _keep(self, request: SmsRequest) -> None:
        with self._lock:
            self.received.append(request)

    def _aliyun(self, path: str, headers: dict[str, str], raw: bytes) -> _Checked:
        try:
            fields = orjson.loads(raw)
            params = orjson.loads(fields["TemplateParam"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            fields, params = {}, None
        fields = fields if isinstance(fields, dict) else {}
        phone, msg_id = fields.get("PhoneNumbers"), fields.get("OutId")
        text = params.get("text") if isinstance(params, dict) else None
        template = bool(fields.get("SignName") and fields.get("TemplateCode"))
        problems = [
            (headers.get("authorization") != f"APPCODE {self.credential}", "InvalidAccessKeyId.NotFound"),
            (path != "/sms/send" or not _is(headers, "application/json"), "isv.INVALID_PARAMETERS"),
            # TemplateParam is a JSON string of string values (Aliyun refuses numbers).
            (not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()),
                "isv.INVALID_JSON_PARAM"),
            (not template or text is None, "isv.INVALID_PARAMETERS"),
            # One number a request: a comma-separated list would be a batch send.
            (not isinstance(phone, str) or not _PHONE.match(phone), "isv.MOBILE_NUMBER_ILLEGAL"),
        ]  # fmt: skip
        code = next((c for wrong, c in problems if wrong), "OK")
        return phone, text, msg_id, fields, code

    def _yunpian(self, path: str, headers: dict[str, str], raw: bytes) -> _Checked:
        try:
            fields = dict(urllib.parse.parse_qsl(raw.decode(), strict_parsing=True, keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            fields = {}
        phone, text, msg_id = fields.get("mobile"), fields.get("text"), fields.get("uid")
        problems = [
            (path != "/v2/sms/single_send.json", 2),
            (not _is(headers, "application/x-www-form-urlencoded"), 2),
            (fields.get("apikey") != self.credential, -1),
            (not phone or not _PHONE.match(phone), 2),
            # The text must start with the approved signature, 【…】.
            (not text or not _SIGNED.match(text), 2),
        ]
        code = next((c for wrong, c in problems if wrong), 0)
        return phone, text, msg_id, fields, code

    def start(self) -> Self:
        def answer(path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes]:
            status, body = self._handle(path, headers, raw)
            return status, {"Content-Type": "application/json;charset=utf-8"} if body else {}, body

        self._server = serve_posts(self.port, answer, "sms-gateway")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
