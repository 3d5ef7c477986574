"""One-tap links: opening one shows a button and does nothing; the POST accepts once;
forged, used and expired links are refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._api_app import T0, Api, api_over, headers


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with api_over(tmp_path) as a:
        yield a


def path(api: Api, wo: str, at: float = T0) -> str:
    return api.links.url(wo, at).removeprefix("https://box.example")


def state(api: Api, wo: str) -> str:
    return str(api.client.get(f"/api/v1/work-orders/{wo}", headers=headers("viewer")).json()["state"])


def test_opening_shows_a_button_and_does_nothing(api: Api) -> None:
    """GET (as a chat app's preview does) shows the work order and a POST button in
    Chinese and English; the work order stays dispatched and nothing is audited."""
    wo = api.sos()
    got = api.client.get(path(api, wo))
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("text/html")
    assert '<form method="post">' in got.text
    assert "签收 / Accept" in got.text
    assert wo in got.text
    assert got.headers["referrer-policy"] == "no-referrer"
    assert state(api, wo) == "dispatched"
    assert api.client.get("/api/v1/audit", headers=headers("boss")).json()["items"] == []


def test_post_accepts_once(api: Api) -> None:
    """The POST accepts (source link, audited with the tapper's address); a second tap
    is 409 and changes nothing."""
    wo = api.sos()
    first = api.client.post(path(api, wo))
    assert first.status_code == 200
    assert "已签收" in first.text
    order = api.client.get(f"/api/v1/work-orders/{wo}", headers=headers("viewer")).json()
    assert (order["state"], order["history"][-1]["source"]) == ("accepted", "link")
    second = api.client.post(path(api, wo))
    assert second.status_code == 409
    assert "used already" in second.text
    rows = api.client.get("/api/v1/audit", headers=headers("boss")).json()["items"]
    assert [(r["who"], r["action"], r["remote"]) for r in rows] == [
        ("one-tap link", "accept", "198.51.100.7")
    ]


def test_a_used_link_cannot_accept_after_a_reject(api: Api) -> None:
    """After the job is sent back, the same link still cannot take it again: a link is
    one action, once."""
    wo = api.sos()
    assert api.client.post(path(api, wo)).status_code == 200
    assert api.act(wo, "reject", {"reason": "not mine"}).status_code == 200
    assert api.client.post(path(api, wo)).status_code == 409
    assert state(api, wo) == "rejected"


def test_page_of_a_taken_job_has_no_button(api: Api) -> None:
    """Once someone has accepted, the page says who and offers nothing to press."""
    wo = api.sos()
    api.act(wo, "accept", {"by": "张伟"})
    got = api.client.get(path(api, wo))
    assert got.status_code == 200
    assert "<form" not in got.text
    assert "张伟" in got.text


def test_forged_link_is_403(api: Api) -> None:
    """A token whose signature does not match is refused on GET and POST; nothing changes."""
    wo = api.sos()
    body, sig = path(api, wo).removeprefix("/l/").split(".")
    forged = f"/l/{body}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}"
    assert api.client.get(forged).status_code == 403
    got = api.client.post(forged)
    assert got.status_code == 403
    assert "signature does not match" in got.text
    assert state(api, wo) == "dispatched"


def test_expired_link_is_409(api: Api) -> None:
    """A link past its TTL (1 h here) is refused with the way forward; nothing changes."""
    wo = api.sos()
    got = api.client.post(path(api, wo, at=T0 - 7200))
    assert got.status_code == 409
    assert "expired" in got.text
    assert state(api, wo) == "dispatched"
