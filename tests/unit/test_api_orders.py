"""The work-order API over a real outbox and desk: who may do what, each action and its
refusals, the list's filters, and the audit entry every change leaves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ._api_app import T0, Api, api_over, headers

ORDERS = "/api/v1/work-orders"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with api_over(tmp_path) as a:
        yield a


class TestRoles:
    def test_read_role_cannot_accept(self, api: Api) -> None:
        """A read-only client gets 403 with the role it has and the one it needs."""
        wo = api.sos()
        got = api.act(wo, "accept", {}, client="viewer")
        assert got.status_code == 403
        assert got.json() == {"error": "forbidden", "reason": "viewer has role read; this needs act"}

    def test_read_role_can_list(self, api: Api) -> None:
        """A read-only client lists work orders."""
        wo = api.sos()
        got = api.client.get(ORDERS, headers=headers("viewer"))
        assert got.status_code == 200
        assert [w["id"] for w in got.json()["items"]] == [wo]

    @pytest.mark.parametrize(
        ("auth", "reason"),
        [
            (None, "a token is needed"),
            ("Bearer nope", "unknown token"),
            ("Basic dGVzdA==", "a token is needed"),
        ],
    )
    def test_no_or_unknown_token_is_401(self, api: Api, auth: str | None, reason: str) -> None:
        """Without a token, or with one no client has, every call is 401."""
        wo = api.sos()
        hdrs = {"Authorization": auth} if auth else {}
        for got in (
            api.client.get(ORDERS, headers=hdrs),
            api.client.post(f"{ORDERS}/{wo}/accept", headers=hdrs),
        ):
            assert got.status_code == 401
            assert got.json()["error"] == "unauthorized"
            assert reason in got.json()["reason"]

    def test_token_is_checked_before_the_body(self, api: Api) -> None:
        """A call without a token is 401 even with a malformed body: nothing is said about
        the API's shapes to a stranger."""
        got = api.client.post(f"{ORDERS}/WO-X/feedback", json={"rating": 9})
        assert got.status_code == 401

    def test_the_console_cookie_is_a_token_too(self, api: Api) -> None:
        """The `sensord_token` cookie authenticates like the header."""
        api.sos()
        api.client.cookies.set("sensord_token", "tok-viewer")
        assert api.client.get(ORDERS).status_code == 200


# (steps before, action, body, expected state, what the history's last entry says)
HAPPY: list[tuple[list[tuple[str, dict[str, Any]]], str, dict[str, Any], str, tuple[str, str]]] = [
    ([], "accept", {"note": "on my way"}, "accepted", ("accepted", "on my way")),
    ([("accept", {})], "assign", {"to": "李娜"}, "accepted", ("assigned", "李娜")),
    ([], "done", {"note": "reset the band"}, "done", ("done", "reset the band")),
    ([("accept", {})], "reject", {"reason": "not my grid"}, "rejected", ("rejected", "not my grid")),
    (
        [("done", {"note": "x"})],
        "reopen",
        {"reason": "pressed again"},
        "reopened",
        ("reopened", "pressed again"),
    ),
    ([], "comment", {"text": "家属已联系"}, "dispatched", ("comment", "家属已联系")),
    ([("done", {"note": "x"})], "feedback", {"rating": 5, "comment": "快"}, "closed", ("closed", "")),
]


@pytest.mark.parametrize(("before", "action", "body", "state", "last"), HAPPY, ids=[h[1] for h in HAPPY])
def test_action_happy_path(
    api: Api, before: list[tuple[str, dict[str, Any]]], action: str, body: dict[str, Any], state: str,
    last: tuple[str, str],
) -> None:  # fmt: skip
    """Each action answers 200 with the work order in its new state, the person acting
    (the client's name by default) and the note in its history, dated by the stream."""
    wo = api.sos()
    for a, b in before:
        assert api.act(wo, a, b).status_code == 200
    got = api.act(wo, action, body)
    assert got.status_code == 200, got.text
    order = got.json()
    entry = order["history"][-1]
    assert (order["state"], (entry["action"], entry["note"])) == (state, last)
    assert (entry["by"], entry["source"]) == ("desk", "api")
    assert T0 <= entry["at"] <= T0 + 30  # event time, not the wall clock of the call
    assert "event" not in order


CONFLICTS: list[tuple[list[tuple[str, dict[str, Any]]], str, dict[str, Any], str]] = [
    ([("accept", {})], "accept", {}, "is accepted; only a dispatched, rejected or reopened job"),
    ([("done", {"note": "x"})], "assign", {"to": "李娜"}, "is done; only an open one is assigned"),
    ([("done", {"note": "x"})], "done", {"note": "again"}, "is done; only an open one is done"),
    ([("done", {"note": "x"})], "reject", {"reason": "no"}, "is done; only an open one is sent back"),
    ([], "reopen", {"reason": "why"}, "is dispatched; only a done, closed or auto-resolved job"),
    ([], "comment", {"text": "   "}, "a comment needs text"),
    ([], "feedback", {"rating": 3}, "feedback is given once, on a done job"),
]


@pytest.mark.parametrize(("before", "action", "body", "reason"), CONFLICTS, ids=[c[1] for c in CONFLICTS])
def test_action_refused_in_its_state_is_409(
    api: Api, before: list[tuple[str, dict[str, Any]]], action: str, body: dict[str, Any], reason: str
) -> None:
    """An action its state does not allow is 409 with the reason, and changes nothing."""
    wo = api.sos()
    for a, b in before:
        assert api.act(wo, a, b).status_code == 200
    was = api.client.get(f"{ORDERS}/{wo}", headers=headers("viewer")).json()
    got = api.act(wo, action, body)
    assert got.status_code == 409
    assert got.json()["error"] == "conflict"
    assert reason in got.json()["reason"]
    assert api.client.get(f"{ORDERS}/{wo}", headers=headers("viewer")).json() == was


def test_by_names_the_person_acting(api: Api) -> None:
    """`by` is the grid worker using the desk's token: the history names the worker."""
    wo = api.sos()
    got = api.act(wo, "accept", {"by": "张伟"}).json()
    assert (got["accepted_by"], got["history"][-1]["by"]) == ("张伟", "张伟")


def test_unknown_work_order_is_404(api: Api) -> None:
    """Reading or acting on an id no work order has is 404."""
    api.sos()
    for got in (
        api.client.get(f"{ORDERS}/WO-0000000000", headers=headers("viewer")),
        api.act("WO-0000000000", "accept", {}),
    ):
        assert got.status_code == 404
        assert got.json() == {"error": "notfound", "reason": "no work order WO-0000000000"}


def test_wrong_body_is_422_with_where(api: Api) -> None:
    """A rating outside 1..5 is 422 naming the field."""
    wo = api.sos()
    got = api.act(wo, "feedback", {"rating": 9})
    assert got.status_code == 422
    assert got.json()["error"] == "invalid"
    assert got.json()["reason"].startswith("body.rating:")


def test_get_one_has_its_history(api: Api) -> None:
    """GET one work order gives its history from `opened` on."""
    wo = api.sos()
    api.act(wo, "accept", {})
    got = api.client.get(f"{ORDERS}/{wo}", headers=headers("viewer")).json()
    assert [h["action"] for h in got["history"]] == ["opened", "accepted"]


class TestList:
    @pytest.fixture
    def three(self, api: Api) -> dict[str, str]:
        """wb-1's SOS (maple, g1, accepted), wb-2's (river, g2, 30 s later), a full bin
        (maple, g1, 60 s later): device → work order."""
        ids = {"wb-1": api.sos("wb-1")}
        api.act(ids["wb-1"], "accept", {})
        ids["wb-2"] = api.sos("wb-2", "river", at=T0 + 30)
        api.feed("bin-1", "bin", {"fill_pct": 93.0, "ts": T0 + 60})
        got = api.client.get(ORDERS, params={"family": "bin"}, headers=headers("viewer")).json()
        ids["bin-1"] = got["items"][0]["id"]
        return ids

    def devices(self, api: Api, **params: Any) -> list[str]:
        got = api.client.get(ORDERS, params=params, headers=headers("viewer"))
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["total"] >= len(body["items"])
        return [w["device_id"] for w in body["items"]]

    def test_life_safety_first_then_oldest(self, api: Api, three: dict[str, str]) -> None:
        """Unfiltered: both SOS (oldest first), then the bin."""
        assert self.devices(api) == ["wb-1", "wb-2", "bin-1"]

    @pytest.mark.parametrize(
        ("params", "want"),
        [
            ({"state": "dispatched"}, ["wb-2", "bin-1"]),
            ({"state": ["accepted", "dispatched"]}, ["wb-1", "wb-2", "bin-1"]),
            ({"community": "river"}, ["wb-2"]),
            ({"grid": "g1"}, ["wb-1", "bin-1"]),
            ({"family": "bin"}, ["bin-1"]),
            ({"since": T0 + 10}, ["wb-2", "bin-1"]),
            ({"community": "maple", "state": "accepted"}, ["wb-1"]),
        ],
        ids=["state", "states", "community", "grid", "family", "since", "two"],
    )
    def test_filters(self, api: Api, three: dict[str, str], params: dict[str, Any], want: list[str]) -> None:
        """Each filter keeps only the work orders that match it (all given must match)."""
        assert self.devices(api, **params) == want

    def test_limit_and_offset_page_with_the_total(self, api: Api, three: dict[str, str]) -> None:
        """A page of one, second place, with the total of all that match."""
        got = api.client.get(ORDERS, params={"limit": 1, "offset": 1}, headers=headers("viewer")).json()
        assert ([w["device_id"] for w in got["items"]], got["total"]) == (["wb-2"], 3)

    def test_unknown_state_is_422(self, api: Api) -> None:
        """A state that does not exist is refused, not an empty list."""
        got = api.client.get(ORDERS, params={"state": "lost"}, headers=headers("viewer"))
        assert got.status_code == 422
        assert got.json()["reason"].startswith("query.state")


def test_every_change_leaves_an_audit_entry(api: Api) -> None:
    """Each action is one audit row: the client, its role, the action, the work order,
    the client's address and the person named in `by`; refusals leave none."""
    wo = api.sos()
    api.act(wo, "accept", {"by": "张伟"})
    api.act(wo, "accept", {})  # refused: not audited
    api.act(wo, "done", {"note": "ok"})
    api.act(wo, "feedback", {"rating": 4}, client="boss")
    rows = api.client.get("/api/v1/audit", headers=headers("boss")).json()["items"]
    assert [(r["who"], r["role"], r["action"], r["target"], r["remote"]) for r in rows] == [
        ("desk", "act", "accept", wo, "198.51.100.7"),
        ("desk", "act", "done", wo, "198.51.100.7"),
        ("boss", "admin", "feedback", wo, "198.51.100.7"),
    ]
    assert (rows[0]["detail"]["by"], rows[1]["detail"]["note"], rows[2]["detail"]["rating"]) == (
        "张伟",
        "ok",
        4,
    )


def test_openapi_documents_bodies_and_error_answers(api: Api) -> None:
    """The OpenAPI document names each action's body and the error body for 401, 403,
    404, 409 and 422."""
    doc = api.client.get("/api/v1/openapi.json").json()
    post = doc["paths"]["/api/v1/work-orders/{wo_id}/done"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DoneBody"
    }
    for code in ("401", "403", "404", "409", "422"):
        assert post["responses"][code]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }
