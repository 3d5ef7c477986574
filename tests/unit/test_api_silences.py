"""Silences and the audit log over the API: checked as `sensord silence add` checks them,
made only by admins, each change audited; the audit table refuses to be rewritten."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ._api_app import Api, api_over, headers

SILENCES = "/api/v1/silences"
LIFT = {"matchers": ['family="lift"', 'building="3"'], "duration": "2h", "comment": "annual inspection"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with api_over(tmp_path) as a:
        yield a


def test_admin_adds_a_silence_listed_with_who_and_why(api: Api) -> None:
    """201 with the silence; a read client lists it active, made by the admin client."""
    made = api.post(SILENCES, LIFT, client="boss")
    assert made.status_code == 201, made.text
    [row] = api.client.get(SILENCES, headers=headers("viewer")).json()["items"]
    assert row == made.json()
    assert (row["state"], row["created_by"], row["comment"]) == ("active", "boss", "annual inspection")
    assert row["ends_at"] - row["starts_at"] == 7200


def test_act_role_cannot_add_a_silence(api: Api) -> None:
    """Silences need the admin role: 403 for an act client, and nothing stored."""
    assert api.post(SILENCES, LIFT, client="desk").status_code == 403
    assert api.client.get(SILENCES, headers=headers("viewer")).json()["items"] == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"matchers": ["family lift"]}, 'a matcher is label="value"'),
        ({"duration": "5h"}, "at most max_silence (4 h)"),
        ({"duration": "soon"}, "cannot read duration 'soon'"),
        ({"comment": "  "}, "needs a comment"),
        ({"life_safety": True}, "life-safety alerts needs a reason"),
    ],
    ids=["matcher", "max_silence", "duration", "comment", "life_safety"],
)
def test_silence_checked_as_the_cli_checks_it(api: Api, change: dict[str, Any], reason: str) -> None:
    """A bad matcher or duration, one longer than the dispatch file's max_silence (4 h),
    no comment, or life-safety without a reason: 422 with the reason, nothing stored."""
    got = api.post(SILENCES, LIFT | change, client="boss")
    assert got.status_code == 422
    assert got.json()["error"] == "invalid"
    assert reason in got.json()["reason"]
    assert api.client.get(SILENCES, headers=headers("viewer")).json()["items"] == []


def test_life_safety_silence_with_a_reason(api: Api) -> None:
    """With a reason, a life-safety silence is made and keeps the reason."""
    got = api.post(SILENCES, LIFT | {"life_safety": True, "reason": "fire drill"}, client="boss")
    assert got.status_code == 201
    assert (got.json()["life_safety"], got.json()["reason"]) == (True, "fire drill")


def test_expire_ends_it_and_unknown_is_404(api: Api) -> None:
    """Expiring a silence makes it expired (still listed); an unknown id is 404."""
    sid = api.post(SILENCES, LIFT, client="boss").json()["id"]
    got = api.post(f"{SILENCES}/{sid}/expire", {}, client="boss")
    assert (got.status_code, got.json()["state"]) == (200, "expired")
    missing = api.post(f"{SILENCES}/{sid + 1}/expire", {}, client="boss")
    assert (missing.status_code, missing.json()["error"]) == (404, "notfound")


def test_silence_changes_are_audited(api: Api) -> None:
    """Adding and expiring a silence each leave an audit row with the client and matchers."""
    sid = api.post(SILENCES, LIFT, client="boss").json()["id"]
    api.post(f"{SILENCES}/{sid}/expire", {}, client="boss")
    rows = api.client.get("/api/v1/audit", headers=headers("boss")).json()["items"]
    assert [(r["who"], r["action"], r["target"]) for r in rows] == [
        ("boss", "silence_add", f"silence/{sid}"),
        ("boss", "silence_expire", f"silence/{sid}"),
    ]
    assert rows[0]["detail"]["matchers"] == LIFT["matchers"]


def test_audit_needs_admin_and_takes_since(api: Api) -> None:
    """The audit log is for admins (403 for act); `since` leaves out older entries."""
    api.post(SILENCES, LIFT, client="boss")
    assert api.client.get("/api/v1/audit", headers=headers("desk")).status_code == 403
    [row] = api.client.get("/api/v1/audit", headers=headers("boss")).json()["items"]
    later = api.client.get("/api/v1/audit", params={"since": row["at"] + 1}, headers=headers("boss"))
    assert later.json()["items"] == []


def test_audit_table_refuses_update_and_delete(api: Api) -> None:
    """Not even a direct SQL UPDATE or DELETE rewrites the audit log."""
    api.post(SILENCES, LIFT, client="boss")
    db = sqlite3.connect(api.daemon.settings.data_path(api.daemon.settings.outbox.path))
    try:
        for sql in ("UPDATE audit SET who = 'nobody'", "DELETE FROM audit"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(sql)
        assert db.execute("SELECT who FROM audit").fetchall() == [("boss",)]
    finally:
        db.close()
