"""Sink URLs are secrets: how a SecretUrl is shown, and that no view of the settings, no
sink error, no log line and no `sensord check` output carries a URL's credentials."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import shutil
import string
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import httpx
import pytest
from aiohttp import web
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from sensord import SecretUrl, Settings
from sensord._cli import main
from sensord._errors import ConfigError, PermanentSinkError, RetryableSinkError
from sensord._logging import JsonFormatter, TextFormatter, configure_logging
from sensord._secret_url import redact_urls
from sensord._settings import InfluxSettings, LogSettings, SecretRef, WebhookSettings, parse_settings
from sensord._types import AlertEvent, AlertStatus, Severity
from sensord.sinks import InfluxSink, WebhookSink, transport_error
from sensord.testing import free_port
from tests.unit._sink_server import Answer, Post, serving

ROOT = Path(__file__).resolve().parents[2]
SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TOKEN = "Tk9fQ2xpZW50X3Rva2VuXzQy"
TOKENED = f"https://bot:{TOKEN}@hooks.example:8443/robot/send?access_token={TOKEN}"
TOKENED_SHOWN = "https://***@hooks.example:8443/robot/send?access_token=***"

# Tokens as a URL carries them unencoded. At least 12 characters, so that one showing up
# by chance in the rest of a repr is ruled out by `assume` rather than by luck.
tokens = st.text(string.ascii_letters + string.digits + "-_.~", min_size=12, max_size=48)
param_names = st.sampled_from(["access_token", "key", "sign", "token", "secret", "apikey", "q"])
# (URL carrying a token, how it is shown)
TEMPLATES = (
    ("https://{token}@hooks.example/robot/send", "https://***@hooks.example/robot/send"),
    ("https://bot:{token}@hooks.example/robot/send", "https://***@hooks.example/robot/send"),
    ("https://hooks.example/robot/send?{name}={token}", "https://hooks.example/robot/send?{name}=***"),
    (
        "https://hooks.example:8443/cgi-bin/webhook/send?timestamp=1700000000&{name}={token}&debug=1",
        "https://hooks.example:8443/cgi-bin/webhook/send?timestamp=***&{name}=***&debug=***",
    ),
    (
        "http://admin:{token}@influx.example:8086/?{name}={token}",
        "http://***@influx.example:8086/?{name}=***",
    ),
)


@st.composite
def tokened_urls(draw: st.DrawFn) -> tuple[str, str, str]:
    """(token, a URL carrying it in its userinfo or a query value, how that URL is shown)."""
    token = draw(tokens)
    name = draw(param_names)
    url, shown = draw(st.sampled_from(TEMPLATES))
    return token, url.format(token=token, name=name), shown.format(name=name)


def sinks_config(url: str) -> dict[str, object]:
    return {"sinks": {"webhook": {"url": url, "secret": {"file": "webhook-secret"}}, "influx": {"url": url}}}


def settings_views(s: Settings) -> str:
    """Every way the settings are shown: repr, str, JSON dumps, a Python dump's repr."""
    return "\n".join(
        [repr(s), str(s), s.model_dump_json(), str(s.model_dump(mode="json")), repr(s.model_dump())]
    )


def event() -> AlertEvent:
    return AlertEvent(
        event_id="id-1",
        fingerprint="fp-1",
        status=AlertStatus.FIRING,
        rule="wristband_sos",
        severity=Severity.CRITICAL,
        life_safety=True,
        family="wristband",
        device_id="wb-1",
        community="maple",
        grid="g1",
        location={},
        labels={},
        summary="SOS",
        description="",
        readings={"sos": True},
        dispatch=(),
        starts_at=1_790_000_000.0,
        ends_at=None,
        event_time=1_790_000_000.0,
    )


def webhook_sink(url: str) -> WebhookSink:
    return WebhookSink(
        WebhookSettings(url=SecretUrl(url), secret=SecretRef(file=Path("x")), timeout_s=2),
        secret=SecretStr(SIGNING_SECRET),
    )


def tokened(port: int) -> tuple[str, str]:
    """(a loopback URL carrying TOKEN as user password and query value, how it is shown)."""
    return (
        f"http://bot:{TOKEN}@127.0.0.1:{port}/robot/send?access_token={TOKEN}",
        f"http://***@127.0.0.1:{port}/robot/send?access_token=***",
    )


async def send_once(sink: WebhookSink | InfluxSink) -> None:
    async with contextlib.aclosing(sink):
        await sink.send([event()])


def answering(code: int, text: Callable[[web.Request], str]) -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, text=text(request))

    return answer


class TestDisplay:
    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            (
                "https://oapi.dingtalk.com/robot/send?access_token=6f1c0b7e5a2d&timestamp=1700000000&sign=a%2Bb%3D",
                "https://oapi.dingtalk.com/robot/send?access_token=***&timestamp=***&sign=***",
            ),
            (
                "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7b2c-4bc4-97a0-0ec2f1fa5aaa",
                "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=***",
            ),
            ("https://user:pa55@influx.example:8086", "https://***@influx.example:8086"),
            ("https://tokenonly@hooks.example/x", "https://***@hooks.example/x"),
            (
                "https://hooks.slack.com/services/T0A1B2C3D/B0A1B2C3D/aBcDeFgHiJkLmNoPqRsTuVwX",
                "https://hooks.slack.com/services/T0A1B2C3D/B0A1B2C3D/***",
            ),
            (
                "https://discord.com/api/webhooks/123456789012345678/abcDEF_ghi-JKL123mno456PQR",
                "https://discord.com/api/webhooks/123456789012345678/***",
            ),
            (
                "https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage",
                "https://api.telegram.org/***/sendMessage",
            ),
            ("https://hooks.example/x?bare3ecret&empty=", "https://hooks.example/x?***&empty="),
            ("https://hooks.example/x#frag-secret", "https://hooks.example/x#***"),
            ("http://127.0.0.1:8080/alerts", "http://127.0.0.1:8080/alerts"),
            (
                "http://[::1]:8086/incoming-webhooks/IncomingWebhook",
                "http://[::1]:8086/incoming-webhooks/IncomingWebhook",
            ),
        ],
    )
    def test_shows_scheme_host_port_path_and_hides_credentials(self, url: str, shown: str) -> None:
        """str and repr keep what tells the sink apart (scheme, host, port, path, parameter
        names) and show userinfo, query values, fragment and token-like path segments as ***."""
        secret_url = SecretUrl(url)
        assert str(secret_url) == shown
        assert repr(secret_url) == f"SecretUrl({shown!r})"

    def test_reveal_is_the_url_as_written(self) -> None:
        """`reveal()`, for the sink that sends, returns the configured text unchanged."""
        assert SecretUrl(TOKENED).reveal() == TOKENED

    @given(tokened_urls())
    def test_no_settings_view_shows_a_token(self, case: tuple[str, str, str]) -> None:
        """For any token in a sink URL's userinfo or query, neither repr, str nor
        model_dump (Python or JSON mode) of the settings contains it: the URL is shown
        with the token masked, and only reveal() gives it back."""
        token, url, shown = case
        baseline = settings_views(Settings.model_validate(sinks_config("https://hooks.example/")))
        assume(token not in baseline)
        loaded = Settings.model_validate(sinks_config(url))
        assert token not in settings_views(loaded)
        assert loaded.sinks.webhook is not None
        assert str(loaded.sinks.webhook.url) == shown
        assert loaded.sinks.webhook.url.reveal() == url

    def test_a_python_dump_validates_back_to_the_same_settings(self) -> None:
        """model_dump() keeps the SecretUrl object, so dumping and validating again loses
        nothing; only the JSON dump is redacted."""
        loaded = Settings.model_validate(sinks_config(TOKENED))
        assert Settings.model_validate(loaded.model_dump()) == loaded
        assert loaded.model_dump(mode="json")["sinks"]["webhook"]["url"] == TOKENED_SHOWN


class TestValidation:
    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            (f"ftp://bot:{TOKEN}@hooks.example/", "the scheme must be http or https"),
            (f"hooks.example/send?access_token={TOKEN}", "the scheme must be http or https"),
            (f"https:///send?access_token={TOKEN}", "the URL has no host"),
            (f"https://hooks.example:99999/?access_token={TOKEN}", "the port must be a number"),
            (f"https://bot:12/{TOKEN}@hooks.example/", "an '@' after the host"),
            (f"https://hooks.example/send ?access_token={TOKEN}", "cannot contain spaces"),
        ],
    )
    def test_bad_url_is_refused_with_a_reason_that_does_not_quote_it(self, url: str, reason: str) -> None:
        """A URL that is not http(s) with a host and a numeric port is a config error naming
        the key and the reason; neither it nor pydantic's own error text quotes the token."""
        with pytest.raises(ConfigError, match=r"sinks\.webhook\.url") as info:
            parse_settings(sinks_config(url), source="sensord.yaml", config_dir=Path())
        assert reason in str(info.value)
        assert TOKEN not in str(info.value)
        with pytest.raises(ValidationError) as raw:
            WebhookSettings.model_validate({"url": url, "secret": {"file": "x"}})
        assert TOKEN not in str(raw.value)

    def test_json_schema_says_a_url_is_a_string(self) -> None:
        """The settings' JSON schema still describes a sink URL as a string (format uri)."""
        schema = Settings.model_json_schema()["$defs"]["WebhookSettings"]["properties"]["url"]
        assert (schema["type"], schema["format"]) == ("string", "uri")


class TestScrub:
    def test_foreign_text_loses_the_url_and_its_parts(self) -> None:
        """Text from elsewhere (an httpx error, a response body) keeps no trace of the
        URL's secrets, whether it quotes the whole URL, the path or a percent-encoded part."""
        url = SecretUrl("https://bot:p%40ss-w0rd@hooks.example/send?access_token=a+b/c" + TOKEN)
        text = (
            f"cannot reach {url.reveal()}; no route for POST /send?access_token=a+b/c{TOKEN}; "
            f"bad token {quote('a b/c' + TOKEN, safe='')} for user bot, password p@ss-w0rd"
        )
        scrubbed = url.scrub(text)
        assert TOKEN not in scrubbed
        assert "p@ss-w0rd" not in scrubbed
        assert "p%40ss-w0rd" not in scrubbed
        assert "cannot reach https://***@hooks.example/send?access_token=***" in scrubbed

    def test_any_url_in_free_text_is_shown_redacted(self) -> None:
        """`redact_urls` (the log formatters' last step) redacts every http(s) URL in a line,
        wherever it is quoted."""
        text = f"HTTP Request: POST {TOKENED} \"HTTP/1.1 500\" ('{TOKENED}')"
        assert redact_urls(text) == f"HTTP Request: POST {TOKENED_SHOWN} \"HTTP/1.1 500\" ('{TOKENED_SHOWN}')"


class TestSinkErrors:
    """The HTTP sinks against a real server on a loopback port (tests/unit/_sink_server.py)."""

    def test_webhook_posts_to_the_whole_url(self) -> None:
        """The webhook sink is the one reader of the real URL: it posts to it, token and all,
        with the URL's user and password as Basic auth."""

        async def go() -> Post:
            async with serving() as server:
                await send_once(webhook_sink(tokened(server.port)[0]))
                return server.posts[0]

        post = asyncio.run(go())
        assert post.path_qs == f"/robot/send?access_token={TOKEN}"
        assert post.headers["authorization"] == "Basic " + base64.b64encode(f"bot:{TOKEN}".encode()).decode()

    @pytest.mark.parametrize(("code", "error"), [(500, RetryableSinkError), (400, PermanentSinkError)])
    def test_answer_quoting_the_url_leaves_no_token_in_the_reason(
        self, code: int, error: type[Exception]
    ) -> None:
        """A refusal whose body quotes the request URL (as error pages do) becomes a sink
        error whose reason, logged and dead-lettered, shows the URL redacted."""
        quote_it = answering(code, lambda r: f"no route for POST {r.url} ({r.raw_path!r})")

        async def go() -> int:
            async with serving(quote_it) as server:
                await send_once(webhook_sink(tokened(server.port)[0]))
            return server.port

        with pytest.raises(error) as info:
            asyncio.run(go())
        assert TOKEN not in str(info.value)
        assert f"HTTP {code}: no route for POST http://127.0.0.1:" in str(info.value)
        assert "/robot/send?access_token=*** ('/robot/send?access_token=***')" in str(info.value)

    def test_long_answer_cut_through_the_token_leaves_no_piece_of_it(self) -> None:
        """A reason keeps the first 300 characters of the answer; when that cut falls inside
        the token, no piece of the token is kept either."""
        body = "x" * 280 + f" access_token={TOKEN} " + "y" * 1000  # the token spans character 300

        async def go() -> None:
            async with serving(answering(500, lambda _r: body)) as server:
                await send_once(webhook_sink(tokened(server.port)[0]))

        with pytest.raises(RetryableSinkError) as info:
            asyncio.run(go())
        assert TOKEN[:6] not in str(info.value)

    def test_connection_refused_names_the_url_redacted(self) -> None:
        """Nothing listening at a tokened URL is retryable, and the reason names the URL
        as shown redacted, without the token."""
        url, shown = tokened(free_port())
        with pytest.raises(RetryableSinkError, match="connection failed") as info:
            asyncio.run(send_once(webhook_sink(url)))
        assert shown in str(info.value)
        assert TOKEN not in str(info.value)

    def test_transport_error_quoting_the_url_leaves_no_token_in_the_reason(self) -> None:
        """aiohttp's connect timeout names the whole URL; as a sink error it is a retryable
        timeout whose reason shows the URL redacted."""
        url, shown = tokened(8080)
        exc = aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url}")
        reason = str(transport_error("webhook", exc, SecretUrl(url)))
        assert reason == f"sink webhook: timeout ({shown}): Connection timeout to host {shown}"

    def test_influx_error_quoting_its_url_leaves_no_password_in_the_reason(self) -> None:
        """The InfluxDB sink's URL may carry user and password; a 400 quoting the request
        URL and the user is dead-lettered without them."""
        quote_it = answering(400, lambda r: f"database not found for {r.url} user admin:{TOKEN}")

        async def go() -> None:
            async with serving(quote_it) as server:
                url = f"http://admin:{TOKEN}@127.0.0.1:{server.port}"
                await send_once(InfluxSink(InfluxSettings(url=SecretUrl(url), database="nope")))

        with pytest.raises(PermanentSinkError) as info:
            asyncio.run(go())
        assert TOKEN not in str(info.value)
        assert "/write?db=***&precision=*** user ***" in str(info.value)


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure_logging() replaces the root handler; put pytest's logging back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    third_party = {name: logging.getLogger(name).level for name in ("httpx", "httpcore", "aiohttp")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in third_party.items():
        logging.getLogger(name).setLevel(lvl)


class TestLogs:
    @pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
    def test_formatter_redacts_urls_in_message_fields_and_traceback(
        self, formatter: logging.Formatter
    ) -> None:
        """Whatever a log call passes (message, fields, an exception's text), the line that
        reaches the journal shows every URL redacted."""

        def fail() -> None:
            raise RuntimeError(f"request to {TOKENED} failed")

        try:
            fail()
        except RuntimeError:
            exc_info = sys.exc_info()
        record = logging.LogRecord("sensord.x", logging.ERROR, __file__, 1, "POST %s", (TOKENED,), exc_info)
        record.fields = {"error": f"cannot reach {TOKENED}"}
        line = formatter.format(record)
        assert TOKEN not in line
        assert TOKENED_SHOWN in line

    def test_httpx_request_lines_stay_out_of_the_journal_even_at_debug(
        self, root_logging: None, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """httpx (the dispatch channels' client) logs every request URL at INFO; with
        sensord at DEBUG, httpx and httpcore are still held at WARNING, so a POST to a
        tokened URL writes nothing. (This guards what main already does.)"""
        configure_logging(LogSettings(level="DEBUG", format="json"))

        async def post() -> None:
            transport = httpx.MockTransport(lambda _r: httpx.Response(200))
            async with httpx.AsyncClient(transport=transport) as client:
                await client.post(TOKENED, content=b"{}")

        asyncio.run(post())
        assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
        assert logging.getLogger("httpcore").getEffectiveLevel() >= logging.WARNING
        assert TOKEN not in capsys.readouterr().err

    def test_sink_client_lines_stay_out_of_the_journal_even_at_debug(
        self, root_logging: None, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With sensord at DEBUG, aiohttp (the event sinks' client) is held at WARNING, and
        a webhook sink posting to a tokened URL writes nothing with the token."""
        configure_logging(LogSettings(level="DEBUG", format="json"))

        async def go() -> None:
            async with serving() as server:
                await send_once(webhook_sink(tokened(server.port)[0]))

        asyncio.run(go())
        assert logging.getLogger("aiohttp.client").getEffectiveLevel() >= logging.WARNING
        assert logging.getLogger("aiohttp.internal").getEffectiveLevel() >= logging.WARNING
        assert TOKEN not in capsys.readouterr().err


@pytest.fixture(scope="module")
def check_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped registry and rules, and a signing secret, for `sensord check`."""
    folder = tmp_path_factory.mktemp("check")
    shutil.copy(ROOT / "config" / "devices.yaml", folder / "devices.yaml")
    shutil.copytree(ROOT / "rules", folder / "rules")
    (folder / "webhook-secret").write_text(SIGNING_SECRET + "\n")
    return folder


def run_check(folder: Path, sinks_yaml: str) -> tuple[int, str]:
    """`sensord check` on a config with these sinks: (exit status, stdout + stderr)."""
    config = folder / "sensord.yaml"
    config.write_text(
        f"registry: devices.yaml\nrules_dir: rules\nstate_dir: {folder / 'state'}\nsinks:\n{sinks_yaml}"
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["check", "-c", str(config)])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def check_baseline(check_dir: Path) -> str:
    """What `sensord check` prints for a URL without credentials."""
    return run_check(check_dir, sinks_yaml("https://hooks.example/"))[1]


def sinks_yaml(url: str) -> str:
    return (
        f"  webhook:\n    url: '{url}'\n    secret: {{file: webhook-secret}}\n  influx:\n    url: '{url}'\n"
    )


class TestCheck:
    def test_lists_each_sink_with_its_url_redacted(self, check_dir: Path) -> None:
        """`sensord check` names every configured sink with its URL as shown redacted, so
        an operator sees where alerts go without the token."""
        code, out = run_check(check_dir, sinks_yaml(TOKENED))
        assert code == 0
        assert f"  sink webhook: {TOKENED_SHOWN}\n" in out
        assert f"  sink influx: {TOKENED_SHOWN}\n" in out
        assert TOKEN not in out

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(tokened_urls())
    def test_output_never_shows_a_token(
        self, check_dir: Path, check_baseline: str, case: tuple[str, str, str]
    ) -> None:
        """For any token in a sink URL's userinfo or query, `sensord check` passes and
        shows the sink's URL with the token masked, and no trace of the token."""
        token, url, shown = case
        assume(token not in check_baseline)
        code, out = run_check(check_dir, sinks_yaml(url))
        assert code == 0
        assert f"  sink webhook: {shown}\n" in out
        assert token not in out

    def test_bad_url_fails_naming_key_and_reason_without_the_token(self, check_dir: Path) -> None:
        """A tokened URL with a scheme other than http(s) fails `check` with the key and
        the reason, and the token is not printed."""
        code, out = run_check(check_dir, sinks_yaml(f"ftp://bot:{TOKEN}@hooks.example/x?key={TOKEN}"))
        assert code == 1
        assert "sinks.webhook.url" in out
        assert "the scheme must be http or https" in out
        assert TOKEN not in out

    def test_yaml_error_on_a_url_line_does_not_quote_the_line(self, check_dir: Path) -> None:
        """A YAML syntax error on the line of a tokened URL names line and column, not the
        line's text (PyYAML's message quotes it)."""
        code, out = run_check(check_dir, f"  webhook:\n    url: {TOKENED}: oops\n")
        assert code == 1
        assert "not valid YAML at line 6, column" in out
        assert TOKEN not in out
