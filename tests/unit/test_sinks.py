"""Unit tests for the outbox, sinks and delivery workers (fakes: MemorySink; the HTTP sinks
against a real loopback server)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import random
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from pydantic import SecretStr

from sensord import SecretUrl
from sensord._errors import PermanentSinkError, RetryableSinkError
from sensord._metrics import Metrics
from sensord._settings import DeliverySettings, InfluxSettings, OutboxSettings, SecretRef, WebhookSettings
from sensord._types import AlertEvent, AlertStatus, Reject, Severity
from sensord.outbox import Outbox
from sensord.sinks import (
    DeadLetter,
    InfluxSink,
    MemorySink,
    WebhookSink,
    alert_line,
    backoff,
    deliver_forever,
    line,
    retry_after,
    sign,
    verify,
    webhook_body,
)
from sensord.testing import free_port
from tests.unit._sink_server import Answer, Post, serving

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def event(n: int, *, life_safety: bool = False, status: AlertStatus = AlertStatus.FIRING) -> AlertEvent:
    return AlertEvent(
        event_id=f"id-{n}",
        fingerprint=f"fp-{n}",
        status=status,
        rule="bin_full",
        severity=Severity.CRITICAL if life_safety else Severity.WARNING,
        life_safety=life_safety,
        family="bin",
        device_id=f"bin-{n}",
        community="maple",
        grid="g1",
        location={"building": "1"},
        labels={"team": "sanitation"},
        summary=f"Bin bin-{n} is 90% full",
        description="",
        readings={"fill_pct": 90.0, "ts": 1.0},
        dispatch=("sanitation",),
        starts_at=1_790_000_000.0 + n,
        ends_at=None,
        event_time=1_790_000_000.0 + n,
    )


def outbox(tmp_path: Path, sinks: tuple[str, ...] = ("a", "b"), max_events: int = 1000) -> Outbox:
    return Outbox(tmp_path / "outbox.sqlite3", sinks, OutboxSettings(max_events=max_events), Metrics())


class TestOutbox:
    def test_events_survive_reopen(self, tmp_path: Path) -> None:
        """Committed events are still there after the outbox is closed and opened again."""
        ob = outbox(tmp_path)
        ob.commit([event(1), event(2)])
        ob.close()
        again = outbox(tmp_path)
        assert [e.event_id for _, e in again.due("a", 10)] == ["id-1", "id-2"]

    def test_same_event_id_is_stored_once(self, tmp_path: Path) -> None:
        """Re-committing an event id (a batch re-processed after a crash) adds nothing."""
        ob = outbox(tmp_path)
        assert ob.commit([event(1)]) == 1
        assert ob.commit([event(1)]) == 0
        assert ob.depth("a") == 1

    def test_life_safety_first(self, tmp_path: Path) -> None:
        """due() hands out life-safety events before older ordinary ones."""
        ob = outbox(tmp_path)
        ob.commit([event(1), event(2), event(3, life_safety=True)])
        assert [e.event_id for _, e in ob.due("a", 10)] == ["id-3", "id-1", "id-2"]

    def test_sinks_are_independent(self, tmp_path: Path) -> None:
        """An event acknowledged by one sink stays queued for the other until it takes it too."""
        ob = outbox(tmp_path)
        ob.commit([event(1)])
        seq = ob.due("a", 10)[0][0]
        ob.ack("a", [seq])
        assert (ob.depth("a"), ob.depth("b")) == (0, 1)
        ob.ack("b", [seq])
        assert ob.due("b", 10) == []

    def test_bound_sheds_oldest_ordinary_per_sink(self, tmp_path: Path) -> None:
        """Past max_events a commit still succeeds: the sink's oldest ordinary deliveries
        are shed (handed over for dead-letter, counted), never a life-safety one."""
        shed: list[tuple[str, str, str]] = []
        metrics = Metrics()
        ob = Outbox(
            tmp_path / "o.sqlite3",
            ("a",),
            OutboxSettings(max_events=3),
            metrics,
            on_shed=lambda e, sink, why: shed.append((e.event_id, sink, why)),
        )
        ob.commit([event(1, life_safety=True), event(2), event(3)])
        assert ob.commit([event(4), event(5, life_safety=True)]) == 2
        assert [e.event_id for _, e in ob.due("a", 10)] == ["id-1", "id-5", "id-4"]
        assert [(i, s) for i, s, _ in shed] == [("id-2", "a"), ("id-3", "a")]
        assert "more than 3 events waiting" in shed[0][2]
        assert ob.depth("a") == 3
        assert metrics.outbox_shed.labels("a")._value.get() == 2

    def test_ack_of_a_shed_delivery_keeps_depth_true(self, tmp_path: Path) -> None:
        """A delivery shed while a worker was sending it, then acknowledged, is not
        subtracted twice: the depth stays equal to what is really waiting."""
        ob = outbox(tmp_path, sinks=("a",), max_events=2)
        ob.commit([event(1), event(2)])
        in_flight = [seq for seq, _ in ob.due("a", 1)]
        ob.commit([event(3)])  # sheds id-1, the one being sent
        ob.ack("a", in_flight)
        assert ob.depth("a") == ob._scalar("SELECT COUNT(*) FROM deliveries WHERE sink = 'a'") == 2

    def test_bound_is_per_sink(self, tmp_path: Path) -> None:
        """A sink that keeps up is not shed because another (dead) sink is full."""
        ob = outbox(tmp_path, sinks=("dead", "live"), max_events=2)
        for n in range(5):
            ob.commit([event(n)])
            ob.ack("live", [seq for seq, _ in ob.due("live", 10)])
        assert (ob.depth("dead"), ob.depth("live")) == (2, 0)
        assert [e.event_id for _, e in ob.due("dead", 10)] == ["id-3", "id-4"]

    def test_checkpoint_rows_commit_with_events(self, tmp_path: Path) -> None:
        """Active-alert rows are upserted and deleted in the commit transaction."""
        ob = outbox(tmp_path)
        ob.commit([event(1)], upsert_active=[("fp-1", b"x"), ("fp-2", b"y")])
        ob.commit([], upsert_active=[("fp-1", b"z")], delete_active=["fp-2"])
        assert ob.active_rows() == [b"z"]

    def test_removed_sink_keeps_its_queue_until_purged(self, tmp_path: Path) -> None:
        """Reopening without a sink keeps its deliveries (reported in `orphaned`); purging
        them drops them and the events nobody else waits for."""
        ob = outbox(tmp_path)
        ob.commit([event(1), event(2)])
        ob.close()
        only_a = outbox(tmp_path, sinks=("a",))
        assert only_a.orphaned == {"b": 2}
        only_a.ack("a", [seq for seq, _ in only_a.due("a", 10)])
        queues = [(q.sink, q.waiting, q.configured) for q in only_a.queues()]
        assert queues == [("a", 0, True), ("b", 2, False)]
        assert only_a.purge("b") == 2
        assert [(q.sink, q.waiting) for q in only_a.queues()] == [("a", 0)]
        assert only_a._scalar("SELECT COUNT(*) FROM events") == 0


class TestWebhookSigning:
    def test_standard_webhooks_test_vector(self) -> None:
        """Signing reproduces the Standard Webhooks specification's published example."""
        assert sign(SPEC_SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}') == (
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        )

    def test_verify_accepts_good_and_rejects_tampered(self) -> None:
        """verify() accepts the right signature and rejects a changed body or an old timestamp."""
        headers = {
            "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "webhook-timestamp": "1614265330",
            "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        }
        body = b'{"test": 2432232314}'
        assert verify(SPEC_SECRET, headers, body, now=1614265330)
        assert not verify(SPEC_SECRET, headers, body + b" ", now=1614265330)
        assert not verify(SPEC_SECRET, headers, body, now=1614265330 + 3600)


def webhook_sink(url: str, *, timeout_s: float = 10.0) -> WebhookSink:
    return WebhookSink(
        WebhookSettings(url=SecretUrl(url), secret=SecretRef(file=Path("x")), timeout_s=timeout_s),
        secret=SecretStr(SPEC_SECRET),
    )


async def send_and_close(sink: WebhookSink | InfluxSink, events: list[AlertEvent]) -> None:
    """Send through the sink, then close its HTTP session (left open, aiohttp warns)."""
    async with contextlib.aclosing(sink):
        await sink.send(events)


def answering(status: int, headers: dict[str, str] | None = None, text: str = "") -> Answer:
    async def answer(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers=headers, text=text)

    return answer


class TestWebhookSink:
    """Against a real HTTP server on a loopback port (tests/unit/_sink_server.py)."""

    def test_signed_post_with_event_id(self) -> None:
        """Each event is one POST whose webhook-id is the event id and whose signature verifies."""

        async def go() -> list[Post]:
            async with serving() as server:
                await send_and_close(webhook_sink(server.url()), [event(1)])
                return server.posts

        (post,) = asyncio.run(go())
        assert (post.path_qs, post.headers["webhook-id"]) == ("/alerts", "id-1")
        assert post.headers["content-type"] == "application/json"
        assert verify(SPEC_SECRET, post.headers, post.body)
        body = orjson.loads(post.body)
        assert (body["device"], body["status"], body["startsAt"]) == (
            "bin-1",
            "firing",
            "2026-09-21T14:13:21.000Z",
        )

    def test_body_is_the_documented_json(self) -> None:
        """The bytes posted are the orjson encoding of webhook_body(event), nothing else."""

        async def go() -> bytes:
            async with serving() as server:
                await send_and_close(webhook_sink(server.url()), [event(3)])
                return server.posts[0].body

        assert asyncio.run(go()) == orjson.dumps(webhook_body(event(3)))

    @pytest.mark.parametrize(
        ("code", "error", "after"),
        [
            (500, RetryableSinkError, None),
            (503, RetryableSinkError, None),
            (429, RetryableSinkError, 7.0),
            (400, PermanentSinkError, None),
            (404, PermanentSinkError, None),
            (302, PermanentSinkError, None),
        ],
    )
    def test_failure_classes(self, code: int, error: type[Exception], after: float | None) -> None:
        """5xx and 429 (with Retry-After) are retryable; other 4xx, and a redirect (not
        followed), are permanent; the reason names the status."""
        headers = {"retry-after": "7"} if code == 429 else {}
        if code == 302:
            headers["location"] = "/elsewhere"

        async def go() -> None:
            async with serving(answering(code, headers, text="refused")) as server:
                await send_and_close(webhook_sink(server.url()), [event(1)])

        with pytest.raises(error, match=f"HTTP {code}: refused") as info:
            asyncio.run(go())
        assert getattr(info.value, "retry_after", None) == after

    def test_timeout_is_retryable(self) -> None:
        """An answer slower than timeout_s is a retryable timeout."""
        release = asyncio.Event()

        async def hang(_request: web.Request) -> web.StreamResponse:
            await release.wait()
            return web.Response(status=200)

        async def go() -> None:
            async with serving(hang) as server:
                try:
                    await send_and_close(webhook_sink(server.url(), timeout_s=0.2), [event(1)])
                finally:
                    release.set()

        with pytest.raises(RetryableSinkError, match="timeout"):
            asyncio.run(go())

    def test_timeout_bounds_each_wait_not_the_whole_answer(self) -> None:
        """timeout_s bounds each wait for the answer's bytes: an answer that trickles in
        pieces, each sooner than timeout_s, is taken although the whole takes longer."""

        async def trickle(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(status=200)
            await response.prepare(request)
            for _ in range(4):
                await asyncio.sleep(0.1)
                await response.write(b"ok ")
            await response.write_eof()
            return response

        async def go() -> int:
            async with serving(trickle) as server:
                await send_and_close(webhook_sink(server.url(), timeout_s=0.3), [event(1)])
                return len(server.posts)

        assert asyncio.run(go()) == 1

    def test_proxy_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With HTTP_PROXY set when the sink is made, the POST goes to the proxy, naming
        the sink's URL."""

        async def go() -> Post:
            async with serving() as proxy:
                monkeypatch.setenv("HTTP_PROXY", proxy.url("/"))
                monkeypatch.delenv("NO_PROXY", raising=False)
                monkeypatch.delenv("no_proxy", raising=False)
                await send_and_close(webhook_sink("http://dispatch.invalid/alerts"), [event(1)])
                return proxy.posts[0]

        post = asyncio.run(go())
        assert (post.headers["host"], post.path_qs) == ("dispatch.invalid", "/alerts")
        assert verify(SPEC_SECRET, post.headers, post.body)

    def test_connection_refused_is_retryable_naming_the_redacted_url(self) -> None:
        """Nothing listening is a retryable failure whose reason names the URL redacted."""
        url = f"http://127.0.0.1:{free_port()}/alerts?token=s3cretT0ken"
        with pytest.raises(RetryableSinkError, match="connection failed") as info:
            asyncio.run(send_and_close(webhook_sink(url, timeout_s=2), [event(1)]))
        assert str(SecretUrl(url)) in str(info.value)
        assert "s3cretT0ken" not in str(info.value)

    def test_connection_is_kept_alive(self) -> None:
        """Events sent one after another reuse one connection."""

        async def go() -> list[Post]:
            async with serving() as server:
                sink = webhook_sink(server.url())
                async with contextlib.aclosing(sink):
                    for n in range(3):
                        await sink.send([event(n)])
                return server.posts

        posts = asyncio.run(go())
        assert len(posts) == 3
        assert len({p.peer for p in posts}) == 1

    def test_closed_sink_refuses_as_retryable(self) -> None:
        """After aclose() a send is refused as retryable (the event stays in the outbox),
        and no new connection is opened."""

        async def go() -> list[Post]:
            async with serving() as server:
                sink = webhook_sink(server.url())
                await send_and_close(sink, [event(1)])
                with pytest.raises(RetryableSinkError, match="closed"):
                    await sink.send([event(2)])
                return server.posts

        assert [p.headers["webhook-id"] for p in asyncio.run(go())] == ["id-1"]

    def test_retry_after_http_date(self) -> None:
        """Retry-After may be an HTTP date."""
        assert retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)


class TestLineProtocol:
    def test_escaping(self) -> None:
        """Tag values escape spaces, commas and equals; string fields escape quotes and backslashes."""
        out = line("m", {"b": "x y,z=1", "a": ""}, {"s": 'say "hi" \\', "n": 1.5, "i": 3, "t": True}, 10)
        assert out == 'm,b=x\\ y\\,z\\=1 s="say \\"hi\\" \\\\",n=1.5,i=3i,t=true 10'


class TestInfluxSink:
    """Against a real HTTP server on a loopback port (tests/unit/_sink_server.py)."""

    def test_v2_uses_token_and_bucket(self) -> None:
        """api v2 posts line protocol to /api/v2/write with org, bucket and a Token header."""

        async def go() -> Post:
            async with serving(answering(204)) as server:
                settings = InfluxSettings(url=SecretUrl(server.url("/")), api="v2", org="o", bucket="b")
                await send_and_close(InfluxSink(settings, token=SecretStr("tok")), [event(1)])
                return server.posts[0]

        post = asyncio.run(go())
        assert post.path_qs == "/api/v2/write?org=o&bucket=b&precision=ns"
        assert post.headers["authorization"] == "Token tok"
        assert post.headers["content-type"] == "text/plain; charset=utf-8"
        assert post.body == alert_line("sensord_alert", event(1)).encode()

    def test_v1_basic_auth_database_and_retention_policy(self) -> None:
        """api v1 posts a batch as one body to /write?db=…&rp=… with the user and password
        as Basic auth, which take the place of credentials written in the URL."""

        async def go() -> Post:
            async with serving(answering(204)) as server:
                url = f"http://old:creds@127.0.0.1:{server.port}"
                settings = InfluxSettings(
                    url=SecretUrl(url), database="d", retention_policy="week", username="sensord"
                )
                sink = InfluxSink(settings, password=SecretStr("pässword"))
                await send_and_close(sink, [event(1), event(2)])
                return server.posts[0]

        post = asyncio.run(go())
        assert post.path_qs == "/write?db=d&precision=ns&rp=week"
        userpass = base64.b64encode("sensord:pässword".encode()).decode()
        assert post.headers["authorization"] == f"Basic {userpass}"
        assert post.body.decode().splitlines() == [alert_line("sensord_alert", event(n)) for n in (1, 2)]

    def test_credentials_in_the_url_are_basic_auth(self) -> None:
        """Without a configured user, credentials written in the URL are sent as Basic auth."""

        async def go() -> Post:
            async with serving(answering(204)) as server:
                settings = InfluxSettings(url=SecretUrl(f"http://u:p%40ss@127.0.0.1:{server.port}"))
                await send_and_close(InfluxSink(settings), [event(1)])
                return server.posts[0]

        assert asyncio.run(go()).headers["authorization"] == "Basic " + base64.b64encode(b"u:p@ss").decode()

    def test_server_error_with_retry_after_is_retryable(self) -> None:
        """A 503 with Retry-After from InfluxDB is retryable after that many seconds."""

        async def go() -> None:
            async with serving(answering(503, {"retry-after": "3"})) as server:
                await send_and_close(InfluxSink(InfluxSettings(url=SecretUrl(server.url("/")))), [event(1)])

        with pytest.raises(RetryableSinkError) as info:
            asyncio.run(go())
        assert info.value.retry_after == 3.0


class TestDelivery:
    def test_backoff_is_capped_and_jittered(self) -> None:
        """After n failures the wait is in [cap/2, cap], cap = min(max, initial * 2^(n-1))."""
        s = DeliverySettings(initial_backoff_s=0.5, max_backoff_s=10)
        rng = random.Random(1)
        for n in range(1, 20):
            cap = min(10.0, 0.5 * 2 ** (n - 1))
            values = [backoff(n, s, rng) for _ in range(50)]
            assert cap / 2 <= min(values)
            assert max(values) <= cap
            assert len(set(values)) == 50

    def _run(self, tmp_path: Path, sink: MemorySink, until: Callable[[Outbox], bool]) -> Outbox:
        ob = outbox(tmp_path, sinks=(sink.name,))
        ob.commit([event(1), event(2, life_safety=True)])
        dl = DeadLetter(tmp_path / "dl.jsonl")

        async def go() -> None:
            wake = asyncio.Event()
            settings = DeliverySettings(initial_backoff_s=0.01, max_backoff_s=0.02)
            task = asyncio.create_task(deliver_forever(ob, sink, settings, Metrics(), dl, wake=wake))
            for _ in range(300):
                if until(ob):
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(go())
        dl.close()
        return ob

    def test_retries_until_delivered(self, tmp_path: Path) -> None:
        """Retryable failures are retried with backoff until the sink takes the events."""
        sink = MemorySink("m")
        sink.fail_next(3)
        ob = self._run(tmp_path, sink, lambda ob: ob.depth("m") == 0)
        assert [e.event_id for e in sink.events] == ["id-2", "id-1"]
        assert sink.calls == 4
        assert ob.depth("m") == 0

    def test_permanent_failure_goes_to_dead_letter(self, tmp_path: Path) -> None:
        """A permanent refusal writes the event to dead-letter with the reason and is not retried."""
        sink = MemorySink("m", batched=False)
        sink.fail_next(1, permanent=True)
        self._run(tmp_path, sink, lambda ob: ob.depth("m") == 0)
        records = [orjson.loads(x) for x in (tmp_path / "dl.jsonl").read_text().splitlines()]
        assert [(r["kind"], r["sink"], r["event"]["event_id"]) for r in records] == [
            ("undeliverable", "m", "id-2")
        ]
        assert [e.event_id for e in sink.events] == ["id-1"]


class TestDeadLetter:
    def test_reject_record(self, tmp_path: Path) -> None:
        """A reject is one JSON line with reason, detail, topic and the payload (base64 when binary)."""
        dl = DeadLetter(tmp_path / "dl.jsonl")
        dl.reject(Reject("t/1", b"\xff\xfe", 5.0, "invalid_json", "not JSON"))
        dl.close()
        rec = orjson.loads((tmp_path / "dl.jsonl").read_text())
        assert (rec["reason"], rec["topic"], rec["payload_b64"]) == ("invalid_json", "t/1", "//4=")


class TestDeadLetterForwarder:
    def test_bounded_queue_drops_oldest_and_counts(self) -> None:
        """With the broker away, the queue keeps the newest records; drops are counted."""
        from sensord._metrics import Metrics  # noqa: PLC0415
        from sensord.sinks import DeadLetterForwarder  # noqa: PLC0415

        metrics = Metrics()
        fwd = DeadLetterForwarder("ops/dl", metrics, max_queued=2)
        for n in range(3):
            fwd.offer({"reason": "invalid_json", "n": n})
        sent: list[bytes] = []

        class Client:
            async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
                assert topic == "ops/dl"
                assert qos == 1
                sent.append(payload)

        async def go() -> None:
            task = asyncio.create_task(fwd.run(Client()))
            await asyncio.sleep(0.05)
            task.cancel()

        asyncio.run(go())
        assert [orjson.loads(b)["n"] for b in sent] == [1, 2]
        assert metrics.delivery_failures.labels("deadletter-mqtt", "dropped")._value.get() == 1


class TestDeadLetterLimits:
    def test_rotates_at_max_bytes_keeping_old_files(self, tmp_path: Path) -> None:
        """Past max_bytes the file rotates to .1, .2, … and the oldest beyond `keep` goes."""
        dl = DeadLetter(tmp_path / "dl.jsonl", max_bytes=4096, keep=2)
        for n in range(200):
            dl.reject(Reject("t/1", b'{"n": %d}' % n, 5.0, "invalid_json", "x" * 100))
        dl.close()
        files = sorted(p.name for p in tmp_path.iterdir())
        assert files == ["dl.jsonl", "dl.jsonl.1", "dl.jsonl.2"]
        assert all((tmp_path / f).stat().st_size <= 4096 for f in files)
        last = orjson.loads((tmp_path / "dl.jsonl").read_text().splitlines()[-1])
        assert last["payload"] == '{"n": 199}'

    def test_oversized_payload_is_truncated_with_length_and_hash(self, tmp_path: Path) -> None:
        """A payload over max_payload_bytes keeps a prefix, its full length and SHA-256."""
        raw = b"A" * 100_000
        dl = DeadLetter(tmp_path / "dl.jsonl", max_payload_bytes=1000)
        dl.reject(Reject("t/1", raw, 5.0, "oversized", "too big"))
        dl.close()
        rec = orjson.loads((tmp_path / "dl.jsonl").read_text())
        assert (len(rec["payload"]), rec["payload_bytes"], rec["truncated"]) == (1000, 100_000, True)
        assert rec["payload_sha256"] == hashlib.sha256(raw).hexdigest()

    def test_undeliverable_is_synced_at_once(self, tmp_path: Path) -> None:
        """An undeliverable event is on disk (flushed and fsynced) when the call returns."""
        dl = DeadLetter(tmp_path / "dl.jsonl")
        dl.undeliverable(event(1), "webhook", "HTTP 400")
        assert orjson.loads((tmp_path / "dl.jsonl").read_text())["event"]["event_id"] == "id-1"
        dl.close()
