"""The event sinks' HTTP cost: CPU per signed webhook POST, aiohttp (the sink today) beside
httpx (the client the sink had, as the receivers' webhook channels still send).

A keep-alive receiver in a separate process answers 204 at once, so the CPU measured
(process time of this process) is the client's alone: the signing, the body, the request
and the answer, one event at a time, on one event loop.

    .venv/bin/python bench/sink_http.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import orjson
from pydantic import SecretStr

from sensord import SecretUrl
from sensord._settings import SecretRef, WebhookSettings
from sensord._types import AlertEvent, AlertStatus, Severity
from sensord.sinks import WebhookSink, webhook_body
from sensord.sinks._webhook import post_signed

SECRET = SecretStr("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
ANSWER = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for header in head.split(b"\r\n"):
                name, _, value = header.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            writer.write(ANSWER)


def _serve(sock: socket.socket) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_answer, sock=sock)
        await server.serve_forever()

    asyncio.run(main())


def _event(n: int) -> AlertEvent:
    return AlertEvent(
        event_id=f"ev-{n}", fingerprint=f"fp-{n % 50}", status=AlertStatus.FIRING, rule="wristband_sos",
        severity=Severity.CRITICAL, life_safety=True, family="wristband", device_id=f"wb-{n:05d}",
        community="maple-court", grid="g3", location={"building": "3", "unit": "3-402", "floor": 4},
        labels={"team": "elder-care"}, summary=f"SOS pressed on wb-{n:05d}", description="",
        readings={"sos": True, "ts": 1_790_000_000.0 + n}, dispatch=("elder_care_desk", "grid_worker"),
        starts_at=1_790_000_000.0 + n, ends_at=None, event_time=1_790_000_000.0 + n,
    )  # fmt: skip


async def _per_request(send: Callable[[AlertEvent], Awaitable[None]], requests: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per event, after a warm-up."""
    for n in range(200):
        await send(_event(n))
    events = [_event(n) for n in range(requests)]
    wall, cpu = time.perf_counter(), time.process_time()
    for e in events:
        await send(e)
    return (time.process_time() - cpu) / requests * 1e6, (time.perf_counter() - wall) / requests * 1e6


async def measure(url: str, requests: int) -> dict[str, tuple[float, float]]:
    sink = WebhookSink(WebhookSettings(url=SecretUrl(url), secret=SecretRef(file=Path("x"))), secret=SECRET)
    async with contextlib.aclosing(sink):
        aio = await _per_request(lambda e: sink.send([e]), requests)
    secret_url = SecretUrl(url)
    async with httpx.AsyncClient(timeout=10.0) as client:

        async def httpx_send(e: AlertEvent) -> None:  # the sink's code before aiohttp
            body = orjson.dumps(webhook_body(e))
            await post_signed(client, "webhook", secret_url, SECRET, msg_id=e.event_id, body=body)

        old = await _per_request(httpx_send, requests)
    return {"aiohttp (WebhookSink)": aio, "httpx (post_signed)": old}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    receiver = mp.get_context("fork").Process(target=_serve, args=(sock,), daemon=True)
    receiver.start()
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/alerts"
        figures = asyncio.run(measure(url, args.requests))
    finally:
        receiver.terminate()
        receiver.join()
    print(f"{'client':<24} {'CPU µs/event':>13} {'wall µs/event':>14}")
    for name, (cpu, wall) in figures.items():
        print(f"{name:<24} {cpu:>13.0f} {wall:>14.0f}")
    aio, old = figures["aiohttp (WebhookSink)"][0], figures["httpx (post_signed)"][0]
    print(f"httpx / aiohttp CPU: {old / aio:.1f}x")


if __name__ == "__main__":
    main()
