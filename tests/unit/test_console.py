"""The operator console (/console): its pages over a real daemon's outbox and desk (built as
`sensord run` builds it, fed batches directly), driven with FastAPI's TestClient."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from fastapi.testclient import TestClient

from sensord._app import build_daemon
from sensord._daemon import Daemon
from sensord._office import Office
from sensord._settings import parse_settings
from sensord._types import RawMessage
from sensord.api import ApiContext, Clients, create_app
from sensord.api._auth import COOKIE
from sensord.api._console import add_routes
from sensord.api._console_views import age, sla
from sensord.outbox import Filter
from sensord.workorders import State, WorkOrder, row_of
from tests.unit.test_kpi import ORDERS as KPI_ORDERS
from tests.unit.test_kpi import order as kpi_order

ROOT = Path(__file__).resolve().parents[2]
EVIL = "wb-<script>alert(1)"
REGISTRY = {
    "devices": {
        "wb-1": {"family": "wristband", "community": "maple", "grid": "g1"},
        EVIL: {"family": "wristband", "community": "maple", "grid": "g1"},
        "bin-1": {"family": "bin", "community": "oak", "grid": "g2"},
    }
}
DISPATCH = {
    "receivers": [{"name": "elder_care_desk"}, {"name": "sanitation"}],
    "route": {
        "receiver": "elder_care_desk",
        "routes": [{"matchers": ['family="bin"'], "receiver": "sanitation"}],
    },
    "sla": {"wristband": {"accept": "15m", "done": "24h"}},
    "max_silence": "1d",
}
TOKENS = {"viewer": "tok-read-1", "duty_office": "tok-act-1", "admin": "tok-admin-1"}
ROLES = {"viewer": "read", "duty_office": "act", "admin": "admin"}


class Box:
    """A daemon (outbox, desk, dispatch) and the console app over it."""

    def __init__(self, tmp: Path, rules: Path = ROOT / "rules") -> None:
        (tmp / "devices.yaml").write_text(yaml.safe_dump(REGISTRY))
        (tmp / "dispatch.yaml").write_text(yaml.safe_dump(DISPATCH))
        for name, token in TOKENS.items():
            (tmp / f"{name}.token").write_text(token)
        clients = [{"name": n, "role": ROLES[n], "token": {"file": f"{n}.token"}} for n in TOKENS]
        self.settings = parse_settings(
            {
                "registry": "devices.yaml", "rules_dir": str(rules), "state_dir": str(tmp / "state"),
                "dispatch": "dispatch.yaml", "http": {"enabled": False}, "api": {"clients": clients},
            },
            source="test", config_dir=tmp,
        )  # fmt: skip
        self.daemon: Daemon = asyncio.run(build_daemon(self.settings))[0]
        self.office = Office(self.daemon)
        ctx = ApiContext(self.office, Clients(self.settings.api, self.settings.secrets), None)
        self.app = create_app(ctx, [add_routes])
        self._token = 0

    def feed(self, *readings: tuple[str, str, dict[str, Any]]) -> None:
        """One batch of (family, device, payload), evaluated and committed as the daemon does."""
        batch = []
        for family, device, body in readings:
            self._token += 1
            topic = f"sensord/{REGISTRY['devices'][device]['community']}/{family}/{device}/telemetry"
            batch.append(RawMessage(topic, orjson.dumps(body), time.time(), self._token))

        async def go() -> None:
            await self.daemon._commit(self.daemon._evaluate(batch))

        asyncio.run(go())

    def client(self, who: str | None = None) -> TestClient:
        c = TestClient(self.app, base_url="http://testserver")
        if who is not None:
            r = c.post("/console/login", data={"token": TOKENS[who]}, follow_redirects=False)
            assert r.status_code == 303
        return c

    def close(self) -> None:
        self.daemon.outbox.close()
        self.daemon.deadletter.close()


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    b = Box(tmp_path)
    yield b
    b.close()


def sos_and_bin(box: Box) -> tuple[str, str]:
    """A full bin, then (a minute later) an SOS; their work order ids (SOS, bin)."""
    t = time.time() - 600
    box.feed(("bin", "bin-1", {"ts": t, "fill_pct": 95}))
    box.feed(("wristband", "wb-1", {"ts": t + 60, "sos": True}))
    by_family = {wo.family: wo.id for wo in _all(box)}
    return by_family["wristband"], by_family["bin"]


def _all(box: Box) -> list[WorkOrder]:
    return box.office.find(Filter(limit=100))[0]


def csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert m is not None, "no form token on the page"
    return m.group(1)


class TestLogin:
    def test_login_sets_an_httponly_strict_cookie(self, box: Box) -> None:
        """A good token gives the sensord_token cookie (HttpOnly, SameSite=Strict) and /console."""
        r = box.client().post("/console/login", data={"token": TOKENS["duty_office"]}, follow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (303, "/console")
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}={TOKENS['duty_office']};")
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie

    def test_a_wrong_token_is_a_sentence_and_no_cookie(self, box: Box) -> None:
        """An unknown token: 401, the login page again with the reason, no cookie."""
        r = box.client().post("/console/login", data={"token": "nope"}, follow_redirects=False)
        assert r.status_code == 401
        assert "unknown token" in r.text
        assert "set-cookie" not in r.headers

    def test_without_the_cookie_the_console_sends_to_login(self, box: Box) -> None:
        """Each page, without a session, redirects to /console/login."""
        c = box.client()
        for page in ("/console", "/console/silences", "/console/kpi", "/console/wo/WO-1"):
            r = c.get(page, follow_redirects=False)
            assert (r.status_code, r.headers["location"]) == (303, "/console/login"), page

    def test_logout_clears_the_cookie(self, box: Box) -> None:
        """After logging out, /console asks to log in again."""
        c = box.client("duty_office")
        c.post("/console/logout", data={"csrf": csrf(c.get("/console").text)}, follow_redirects=False)
        assert c.get("/console", follow_redirects=False).status_code == 303


class TestOrders:
    def test_life_safety_first_then_oldest(self, box: Box) -> None:
        """The SOS is listed above the older bin; both with rule title, device, place, state."""
        sos_id, bin_id = sos_and_bin(box)
        html = box.client("duty_office").get("/console").text
        assert re.findall(r'data-id="(WO-[0-9A-F]+)"', html) == [sos_id, bin_id]
        assert "maple / g1" in html
        assert "已派单" in html

    def test_accept_from_the_console(self, box: Box) -> None:
        """Accept: the work order is accepted by the logged-in client, from the console, and
        the list it returns to says so."""
        sos_id, _ = sos_and_bin(box)
        c = box.client("duty_office")
        r = c.post(f"/console/wo/{sos_id}/accept", data={"csrf": csrf(c.get("/console").text)})
        assert r.status_code == 200
        assert f"已完成：接单 {sos_id}" in r.text
        wo = box.office.get(sos_id)
        assert wo.state is State.ACCEPTED
        assert (wo.history[-1].by, wo.history[-1].source) == ("duty_office", "console")

    def test_a_refused_action_is_a_sentence_on_the_page(self, box: Box) -> None:
        """Accepting twice: 409, the reason on the page (HTML, not a JSON error body)."""
        sos_id, _ = sos_and_bin(box)
        c = box.client("duty_office")
        token = csrf(c.get("/console").text)
        c.post(f"/console/wo/{sos_id}/accept", data={"csrf": token})
        r = c.post(f"/console/wo/{sos_id}/accept", data={"csrf": token})
        assert r.status_code == 409
        assert r.headers["content-type"].startswith("text/html")
        assert f"{sos_id} is accepted; only a dispatched" in r.text

    def test_done_needs_a_note_and_assign_a_person(self, box: Box) -> None:
        """Assign and done go to the desk with their form fields."""
        sos_id, _ = sos_and_bin(box)
        c = box.client("duty_office")
        token = csrf(c.get("/console").text)
        c.post(f"/console/wo/{sos_id}/assign", data={"csrf": token, "to": "张伟"})
        c.post(f"/console/wo/{sos_id}/done", data={"csrf": token, "note": "已上门，老人安好"})
        wo = box.office.get(sos_id)
        assert (wo.assignee, wo.state, wo.history[-1].note) == ("张伟", State.DONE, "已上门，老人安好")

    def test_a_read_client_sees_no_buttons_and_cannot_act(self, box: Box) -> None:
        """A read-role client: no action forms; its POST is refused (403) and nothing changes."""
        sos_id, _ = sos_and_bin(box)
        c = box.client("viewer")
        html = c.get("/console").text
        assert sos_id in html
        assert 'class="accept"' not in html
        assert "/accept" not in html
        r = c.post(f"/console/wo/{sos_id}/accept", data={"csrf": csrf(html)})
        assert r.status_code == 403
        assert "viewer has role read; this needs act" in r.text
        assert box.office.get(sos_id).state is State.DISPATCHED

    def test_a_post_without_the_form_token_does_nothing(self, box: Box) -> None:
        """A form posted from elsewhere (no or a wrong token) sends to login and does not act."""
        sos_id, _ = sos_and_bin(box)
        c = box.client("duty_office")
        for data in ({}, {"csrf": "0" * 64}):
            r = c.post(f"/console/wo/{sos_id}/accept", data=data, follow_redirects=False)
            assert r.status_code == 303
        assert box.office.get(sos_id).state is State.DISPATCHED

    def test_markup_in_a_device_id_is_shown_as_text(self, box: Box) -> None:
        """A device id with <script> is escaped on the list and on the timeline."""
        box.feed(("wristband", EVIL, {"ts": time.time() - 60, "sos": True}))
        [wo] = _all(box)
        c = box.client("duty_office")
        for page in ("/console", f"/console/wo/{wo.id}"):
            html = c.get(page).text
            assert "wb-&lt;script&gt;alert(1)" in html
            assert "<script>" not in html

    def test_the_timeline_is_in_shanghai_time(self, box: Box) -> None:
        """The work order page lists its history: local time (UTC+8), action, by."""
        sos_id, _ = sos_and_bin(box)
        wo = box.office.get(sos_id)
        local = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(wo.opened_at + 8 * 3600))
        html = box.client("duty_office").get(f"/console/wo/{sos_id}").text
        assert re.search(rf"<td>{local}</td><td>派单</td><td>sensord", html)

    def test_english_when_asked_and_remembered(self, box: Box) -> None:
        """?lang=en gives English (words and the rule's summary) and a cookie; the next page
        without it is English too."""
        sos_and_bin(box)
        c = box.client("duty_office")
        english = c.get("/console?lang=en").text
        assert "Open work orders" in english
        assert "SOS pressed on wb-1" in english
        assert "Open work orders" in c.get("/console").text
        assert "待处理工单" in c.get("/console?lang=zh-CN").text

    def test_the_last_rule_reload_is_shown(self, box: Box) -> None:
        """After a reload the page shows when and that it took over (with its diff lists)."""
        c = box.client("duty_office")
        assert "自启动以来未重载规则" in c.get("/console").text
        assert asyncio.run(box.daemon.reload_rules())
        html = c.get("/console?lang=en").text
        assert re.search(r'<p id="reload">[0-9-]+ [0-9:]+ —\s+ok</p>', html)
        assert "added: —" in html

    def test_a_failed_rule_reload_is_shown_with_its_reason(self, tmp_path: Path) -> None:
        """A reload refused (a broken rule file) is shown as failed, with the reason."""
        rules = tmp_path / "rules"
        shutil.copytree(ROOT / "rules", rules, ignore=shutil.ignore_patterns("tests"))
        box = Box(tmp_path, rules)
        try:
            (rules / "bin.yaml").write_text("family: bin\nrules: [{name: broken}]\n")
            assert not asyncio.run(box.daemon.reload_rules())
            html = box.client("viewer").get("/console?lang=en").text
        finally:
            box.close()
        assert "failed; the previous rules stay in force" in html
        assert "bin.yaml" in html


class TestSilences:
    def test_admin_creates_and_expires_a_silence(self, box: Box) -> None:
        """A silence from the form is stored with its matchers and author; expiring ends it."""
        c = box.client("admin")
        token = csrf(c.get("/console/silences").text)
        matchers = 'community="oak"\nfamily="bin"'
        form = {"csrf": token, "matchers": matchers, "duration": "2h", "comment": "清运"}
        assert c.post("/console/silences", data=form).status_code == 200
        [row] = box.office.silences()
        assert (row.matchers, row.created_by, row.ends_at - row.starts_at) == (
            ('community="oak"', 'family="bin"'), "admin", 7200.0,
        )  # fmt: skip
        c.post(f"/console/silences/{row.id}/expire", data={"csrf": token})
        assert "已结束" in c.get("/console/silences").text

    @pytest.mark.parametrize(
        ("fields", "reason"),
        [
            ({"matchers": "community maple", "duration": "2h", "comment": "x"}, "a matcher is"),
            ({"matchers": " \n", "duration": "2h", "comment": "x"}, "at least one matcher"),
            ({"matchers": 'family="bin"', "duration": "3d", "comment": "x"}, "at most max_silence (24 h)"),
            ({"matchers": 'family="bin"', "duration": "2h", "comment": " "}, "needs a comment"),
            (
                {"matchers": 'family="wristband"', "duration": "2h", "comment": "x", "life_safety": "1"},
                "needs a reason",
            ),
        ],
    )
    def test_the_cli_checks_apply(self, box: Box, fields: dict[str, str], reason: str) -> None:
        """A bad matcher, a duration over max_silence, no comment, or life-safety without a
        reason is refused with the reason on the page (400), and nothing is stored."""
        c = box.client("admin")
        r = c.post("/console/silences", data={"csrf": csrf(c.get("/console/silences").text), **fields})
        assert r.status_code == 400
        assert reason in r.text
        assert box.office.silences() == []

    def test_only_admin_sees_the_form_or_may_post(self, box: Box) -> None:
        """An act client sees no create form, and its POST is refused (403)."""
        c = box.client("duty_office")
        html = c.get("/console/silences").text
        assert 'name="matchers"' not in html
        form = {"csrf": csrf(html), "matchers": 'family="bin"', "duration": "2h", "comment": "x"}
        assert c.post("/console/silences", data=form).status_code == 403
        assert box.office.silences() == []


def order(opened: float, **changes: Any) -> WorkOrder:
    wo = WorkOrder(
        id="WO-1", fingerprint="f", starts_at=opened, rule="wristband_sos", family="wristband",
        device_id="wb-1", community="maple", grid="g1", severity="critical", life_safety=True,
        title="SOS", opened_at=opened,
        receivers=["elder_care_desk"], sla_accept_at=opened + 900, sla_done_at=opened + 86400,
    )  # fmt: skip
    for key, value in changes.items():
        setattr(wo, key, value)
    return wo


class TestSla:
    def test_ok_due_soon_breached_on_the_accept_deadline(self) -> None:
        """15 min to accept: ok at 5 min, due soon in the last quarter, breached after."""
        wo = order(0.0)
        assert [sla(wo, t).state for t in (300, 700, 901)] == ["ok", "due_soon", "breached"]
        assert sla(wo, 300).which == "accept"

    def test_once_accepted_the_done_deadline_counts(self) -> None:
        """An accepted job is judged on its done deadline, even past the accept one."""
        wo = order(0.0, state=State.ACCEPTED, accepted_at=100.0)
        assert (sla(wo, 2000).state, sla(wo, 2000).which) == ("ok", "done")

    def test_a_recorded_breach_stays(self) -> None:
        """A breach the desk recorded stays breached after the job is accepted."""
        wo = order(0.0, state=State.ACCEPTED, breaches=["accept"])
        assert (sla(wo, 1000).state, sla(wo, 1000).which) == ("breached", "accept")

    def test_no_deadline_is_none(self) -> None:
        """Without an SLA for its family there is nothing to judge."""
        assert sla(order(0.0, sla_accept_at=None, sla_done_at=None), 10).state == "none"

    def test_the_page_marks_a_breached_row(self, box: Box) -> None:
        """An SOS dispatched 20 min ago on the stream's clock (15 min to accept) is shown
        breached, with its age."""
        box.feed(("wristband", "wb-1", {"ts": time.time() - 1200, "sos": True}))
        box.feed(("bin", "bin-1", {"ts": time.time(), "fill_pct": 10}))  # the clock moves on
        html = box.client("viewer").get("/console").text
        assert 'class="badge sla-breached">已超时' in html
        assert "<td>20m</td>" in html


def recent(wo: WorkOrder, opened: float) -> WorkOrder:
    """`wo` moved in time to open at `opened`, its accept and done times kept as spans."""
    d = opened - wo.opened_at
    return dataclasses.replace(
        wo, opened_at=opened, starts_at=wo.starts_at + d,
        accepted_at=None if wo.accepted_at is None else wo.accepted_at + d,
        done_at=None if wo.done_at is None else wo.done_at + d,
    )  # fmt: skip


def store(box: Box, *orders: WorkOrder) -> None:
    """Commit hand-made work orders to the box's outbox as the desk's rows."""
    box.daemon.outbox.commit([], work_orders=[row_of(wo) for wo in orders])


def kpi_rows(html: str) -> dict[str, list[str]]:
    """The KPI table's body rows by their first cell."""
    table = html.split('<table id="kpi">')[1].split("</table>", maxsplit=1)[0]
    body = table.split("<tbody>")[1]
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)]
    return {c[0]: c[1:] for c in cells if c}


@pytest.fixture
def six(box: Box) -> Box:
    """The six work orders of test_kpi.py, opened a day ago, and one opened 8 days ago."""
    day_ago = box.office.event_time() - 86400
    old = recent(kpi_order("OLD", State.DISPATCHED, community="elm"), day_ago - 7 * 86400)
    store(box, *(recent(wo, day_ago) for wo in KPI_ORDERS), old)
    return box


class TestKpi:
    def test_figures_per_community(self, six: Box) -> None:
        """Per community, as worked out in test_kpi.py: work orders, accepted, done or
        closed, auto-resolved, closure rate, accept p50 (maple 300 s, oak 120 s), done p50
        (5400 s, 1800 s), breaches accept/done, mean rating (how many rated); the work
        order opened 8 days ago is left out."""
        got = kpi_rows(six.client("viewer").get("/console/kpi").text)
        assert got == {
            "maple": ["4", "3", "2", "1", "66.7 %", "5m", "1h30m", "1/1", "5.0 (1)"],
            "oak": ["2", "1", "1", "0", "50.0 %", "2m", "30m", "1/1", "3.0 (1)"],
        }

    @pytest.mark.parametrize(
        ("by", "groups"),
        [
            ("grid", {"maple/g1", "maple/g2", "oak/g1"}),
            ("team", {"grid_worker", "sanitation"}),
            ("rule", {"bin_full", "lift_trapped"}),
        ],
    )
    def test_by_switch_groups_the_table(self, six: Box, by: str, groups: set[str]) -> None:
        """?by=grid|team|rule: one row per grid (named with its community), per team the
        job was first sent to, or per rule."""
        assert set(kpi_rows(six.client("viewer").get(f"/console/kpi?by={by}").text)) == groups

    def test_the_switch_links_each_grouping(self, six: Box) -> None:
        """The page links the groupings it is not showing; the one shown is not a link."""
        html = six.client("viewer").get("/console/kpi?by=team&lang=en").text
        for by in ("community", "grid", "rule"):
            assert f'href="/console/kpi?by={by}"' in html
        assert 'href="/console/kpi?by=team"' not in html
        assert "<th>Team (first sent to)</th>" in html

    def test_an_unknown_grouping_is_refused_on_the_page(self, six: Box) -> None:
        """?by=device: 400 with the groupings there are, and the table by community."""
        r = six.client("viewer").get("/console/kpi?by=device")
        assert r.status_code == 400
        assert "cannot group by &#39;device&#39;; one of community, grid, team, rule" in r.text
        assert set(kpi_rows(r.text)) == {"maple", "oak"}

    def test_the_page_has_the_plots(self, six: Box) -> None:
        """Below the table: the accept-time plot with a dot per accepted work order (4),
        the done-time plot, closure and breach bars, headed in the page's language."""
        html = six.client("viewer").get("/console/kpi").text
        plots = html.split("</table>")[1]
        assert plots.split('<svg class="dist accept"')[1].split("</svg>")[0].count("<circle") == 4
        for plot in ('<svg class="dist done"', '<svg class="bars closure"', '<svg class="bars breaches"'):
            assert plot in plots
        assert "<h2>接单用时（派单至首次接单）</h2>" in plots

    def test_a_group_name_is_escaped_in_the_plots(self, box: Box) -> None:
        """A community named `<script>…` is text in the table and in every plot's labels,
        never markup."""
        evil = "<script>alert(1)</script>"
        store(box, recent(kpi_order("X", State.DISPATCHED, community=evil), box.office.event_time() - 60))
        html = box.client("viewer").get("/console/kpi").text
        assert "<script>" not in html
        plots = html.split("</table>")[1]
        assert plots.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 4  # one label per plot

    def test_no_work_orders_says_so(self, box: Box) -> None:
        """An empty week: a sentence in the table and no plots."""
        html = box.client("viewer").get("/console/kpi").text
        assert "最近7天没有工单。" in html
        assert "<svg" not in html

    def test_the_page_counts_the_last_week(self, box: Box) -> None:
        """/console/kpi shows one row per community with work orders."""
        sos_and_bin(box)
        html = box.client("viewer").get("/console/kpi").text
        assert re.search(r"<tr><td>maple</td><td>1</td><td>0</td>", html)
        assert re.search(r"<tr><td>oak</td><td>1</td><td>0</td>", html)

    def test_age_reads_short(self) -> None:
        """Ages as a table cell shows them."""
        seconds = (5, 125, 3 * 3600 + 300, 2 * 86400 + 4 * 3600)
        assert [age(s) for s in seconds] == ["5s", "2m", "3h05m", "2d04h"]
