"""The API app over a real daemon (not running): a real outbox in a temp dir, the real
pipeline, dispatcher and desk; readings are fed through the pipeline and committed as a
batch would be, and the app is called with FastAPI's TestClient."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from fastapi.testclient import TestClient

from sensord._app import build_daemon
from sensord._daemon import Daemon
from sensord._office import Office
from sensord._pipeline import commit
from sensord._settings import parse_settings
from sensord._types import RawMessage
from sensord.api import ROUTERS, ApiContext, Clients, Links, create_app

ROOT = Path(__file__).resolve().parents[2]
T0 = time.time() - 60  # event time of the first reading
LINK_SECRET = "link-secret-0123456789abcdef"
# name → (role, token)
CLIENTS = {"viewer": ("read", "tok-viewer"), "desk": ("act", "tok-desk"), "boss": ("admin", "tok-boss")}
REGISTRY: dict[str, Any] = {
    "devices": {
        "wb-1": {"family": "wristband", "community": "maple", "grid": "g1", "building": "3"},
        "wb-2": {"family": "wristband", "community": "river", "grid": "g2", "building": "1"},
        "bin-1": {"family": "bin", "community": "maple", "grid": "g1", "building": "1"},
    },
    "grids": {"g1": {"workers": [{"name": "张伟"}]}, "g2": {"workers": [{"name": "李娜"}]}},
}
DISPATCH: dict[str, Any] = {
    "receivers": [{"name": "desk"}, {"name": "sanitation"}, {"name": "grid_worker", "recipients": "grid"}],
    "route": {
        "receiver": "desk",
        # group_wait 0s: a bin's message (and so its work order) goes with its batch.
        "routes": [{"matchers": ['family="bin"'], "receiver": "sanitation", "group_wait": "0s"}],
    },
    "max_silence": "4h",
}


def headers(client: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {CLIENTS[client][1]}"}


@dataclass
class Api:
    client: TestClient
    daemon: Daemon
    links: Links
    _token: int = 0

    def feed(self, device: str, family: str, body: dict[str, Any], community: str = "maple") -> None:
        """One reading through the pipeline, committed as the daemon commits a batch."""
        self._token += 1
        topic = f"sensord/{community}/{family}/{device}/telemetry"
        ev = self.daemon.pipeline.evaluate([RawMessage(topic, orjson.dumps(body), time.time(), self._token)])
        commit(self.daemon.outbox, ev)

    def sos(self, device: str = "wb-1", community: str = "maple", at: float = T0) -> str:
        """An SOS from `device`; the id of the work order it opened."""
        self.feed(device, "wristband", {"sos": True, "ts": at}, community)
        got = self.client.get("/api/v1/work-orders", params={"family": "wristband"}, headers=headers("boss"))
        return str(next(w["id"] for w in got.json()["items"] if w["device_id"] == device))

    def post(self, path: str, body: dict[str, Any], client: str = "desk") -> Any:
        return self.client.post(path, json=body, headers=headers(client))

    def act(self, wo_id: str, action: str, body: dict[str, Any], client: str = "desk") -> Any:
        return self.post(f"/api/v1/work-orders/{wo_id}/{action}", body, client)


def _settings(tmp: Path) -> Any:
    (tmp / "devices.yaml").write_text(yaml.safe_dump(REGISTRY, allow_unicode=True))
    (tmp / "dispatch.yaml").write_text(yaml.safe_dump(DISPATCH, allow_unicode=True))
    (tmp / "link-secret").write_text(LINK_SECRET)
    for name, (_, token) in CLIENTS.items():
        (tmp / f"{name}.token").write_text(token)
    clients = [
        {"name": n, "role": r, "token": {"file": str(tmp / f"{n}.token")}} for n, (r, _) in CLIENTS.items()
    ]
    return parse_settings(
        {
            "registry": "devices.yaml",
            "rules_dir": str(ROOT / "rules"),
            "dispatch": "dispatch.yaml",
            "state_dir": str(tmp / "state"),
            "http": {"enabled": False},
            "api": {
                "enabled": True, "clients": clients, "link_secret": {"file": str(tmp / "link-secret")},
                "public_url": "https://box.example/", "link_ttl_s": 3600,
            },
        },
        source="test",
        config_dir=tmp,
    )  # fmt: skip


@contextmanager
def api_over(tmp: Path) -> Iterator[Api]:
    """The app over a fresh daemon in `tmp`; closes its outbox after."""
    settings = _settings(tmp)
    daemon, _ = asyncio.run(build_daemon(settings, sinks=[]))
    links = Links(LINK_SECRET.encode(), "https://box.example/", 3600)
    ctx = ApiContext(Office(daemon), Clients(settings.api, settings.secrets), links)
    try:
        with TestClient(create_app(ctx, list(ROUTERS)), client=("198.51.100.7", 50000)) as client:
            yield Api(client, daemon, links)
    finally:
        daemon.outbox.close()
        daemon.deadletter.close()
