"""Unit tests for the simulated responders: the file, the seeded decisions and the runner
(against an in-memory stand-in for the work-order API, injected as an httpx transport)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from sensord._errors import ConfigError, SensordError
from sensord.simulate import (
    DONE_NOTE,
    Plan,
    Responders,
    ResponderSpec,
    load_responders,
    next_step,
    plan,
)

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_790_000_000.0


def spec(*people: dict[str, Any]) -> ResponderSpec:
    base = {"token": {"file": "t"}, "accept_after": ["20s", "90s"], "done_after": ["2m", "10m"]}
    return ResponderSpec.model_validate({"responders": [base | p for p in people]})


def order(wo_id: str = "WO-1", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": wo_id, "state": "dispatched", "family": "wristband", "community": "maple", "grid": "g1",
        "rule": "wristband_sos", "opened_at": T0, "accepted_at": None, "accepted_by": None,
        "done_at": None, "done_by": None, "rating": None,
    }  # fmt: skip
    return doc | extra


class TestFile:
    def test_sample_file_loads(self) -> None:
        """The shipped sample is a valid responders file."""
        loaded = load_responders(ROOT / "simulators" / "responders.yaml")
        assert any(r.no_show == pytest.approx(0.2) for r in loaded.responders)

    def test_range_backwards_is_refused(self, tmp_path: Path) -> None:
        """A delay range written longest first names the problem."""
        path = tmp_path / "r.yaml"
        path.write_text(
            "responders: [{name: a, token: {file: t}, accept_after: [5m, 1m], done_after: [1m, 2m]}]"
        )
        with pytest.raises(ConfigError, match="shortest, longest"):
            load_responders(path)

    def test_names_are_unique(self) -> None:
        """Two responders of the same name are refused (decisions are seeded by name)."""
        with pytest.raises(ValueError, match="given once each: a"):
            spec({"name": "a"}, {"name": "a"})

    def test_tokens_are_read_relative_to_the_file(self, tmp_path: Path) -> None:
        """`token: {file: t}` is read next to the responders file, without its newline."""
        (tmp_path / "t").write_text("secret-token\n")
        assert spec({"name": "a"}).tokens(tmp_path)["a"].get_secret_value() == "secret-token"

    def test_missing_token_names_the_responder(self, tmp_path: Path) -> None:
        """A token file that is not there is a ConfigError naming whose token it is."""
        with pytest.raises(ConfigError, match=r"responders\.a\.token"):
            spec({"name": "a"}).tokens(tmp_path)


class TestPlan:
    def test_same_seed_same_decisions(self) -> None:
        """A seed decides the same for the same work order, whatever else is planned around it."""
        people = spec({"name": "a", "no_show": 0.5, "rating": [1, 5]})
        first = [plan(order(f"WO-{i}"), people, seed=7) for i in range(200)]
        again = [plan(order(f"WO-{i}"), people, seed=7) for i in reversed(range(200))]
        assert first == list(reversed(again))

    def test_another_seed_other_decisions(self) -> None:
        """Another seed gives other delays."""
        people = spec({"name": "a"})
        one = [plan(order(f"WO-{i}"), people, seed=1) for i in range(50)]
        two = [plan(order(f"WO-{i}"), people, seed=2) for i in range(50)]
        assert one != two

    def test_no_show_share(self) -> None:
        """no_show 0.2 leaves about a fifth of 5,000 work orders unanswered (±2 points, 3.5 sd)."""
        people = spec({"name": "desk", "no_show": 0.2})
        missed = sum(plan(order(f"WO-{i}"), people, seed=3) is None for i in range(5000))
        assert 0.18 <= missed / 5000 <= 0.22

    def test_delays_and_ratings_in_range(self) -> None:
        """Every drawn delay and rating lies in its configured range."""
        people = spec({"name": "a", "rating": [3, 5], "feedback_after": ["1m", "2m"]})
        plans = [plan(order(f"WO-{i}"), people, seed=1) for i in range(1000)]
        assert all(p is not None for p in plans)
        ok = [p for p in plans if p is not None]
        assert all(20 <= p.accept_after <= 90 and 120 <= p.done_after <= 600 for p in ok)
        assert all(60 <= p.feedback_after <= 120 for p in ok)
        assert {p.rating for p in ok} == {3, 4, 5}

    def test_no_rating_without_one_configured(self) -> None:
        """A responder without `rating` gets no feedback planned."""
        chosen = plan(order(), spec({"name": "a"}), seed=1)
        assert chosen is not None
        assert chosen.rating is None

    def test_match_on_every_given_key(self) -> None:
        """A match with family, community and grid takes only work orders fitting all three."""
        people = spec({"name": "a", "match": {"family": "bin", "community": "maple", "grid": "g1"}})
        assert plan(order(family="bin"), people, seed=1) is not None
        assert plan(order(family="bin", grid="g2"), people, seed=1) is None
        assert plan(order(), people, seed=1) is None  # a wristband

    def test_match_on_any_of_a_list(self) -> None:
        """A list in a match takes any of its values."""
        people = spec({"name": "a", "match": {"family": ["lift", "water"], "rule": ["r1", "r2"]}})
        assert plan(order(family="water", rule="r2"), people, seed=1) is not None
        assert plan(order(family="water", rule="r3"), people, seed=1) is None

    def test_first_match_that_shows_takes_it(self) -> None:
        """Responders are tried in file order; one who never shows leaves it to the next."""
        people = spec({"name": "desk", "no_show": 1.0}, {"name": "doctor"}, {"name": "third"})
        chosen = plan(order(), people, seed=1)
        assert chosen is not None
        assert chosen.by == "doctor"


class TestNextStep:
    PLAN = Plan("WO-1", "a", accept_after=30, done_after=300, rating=4, feedback_by="家属", feedback_after=60)

    def test_accept_due_after_the_opening(self) -> None:
        """An untaken work order is accepted `accept_after` after it opened, by the responder."""
        for state in ("dispatched", "rejected", "reopened"):
            step = next_step(order(state=state), self.PLAN, frozenset())
            assert step is not None
            assert (step.action, step.body, step.due) == ("accept", {"by": "a"}, T0 + 30)

    def test_done_after_our_accept(self) -> None:
        """A work order the responder accepted is done `done_after` later, with the note."""
        wo = order(state="accepted", accepted_by="a", accepted_at=T0 + 40)
        step = next_step(wo, self.PLAN, frozenset({"accept"}))
        assert step is not None
        assert (step.action, step.body, step.due) == ("done", {"by": "a", "note": DONE_NOTE}, T0 + 340)

    def test_someone_elses_job_is_left_alone(self) -> None:
        """A work order accepted by another person gets no done from the plan."""
        wo = order(state="accepted", accepted_by="someone", accepted_at=T0 + 40)
        assert next_step(wo, self.PLAN, frozenset()) is None

    def test_family_rates_after_done(self) -> None:
        """After the responder's done, the family rates it `feedback_after` later."""
        wo = order(state="done", done_by="a", done_at=T0 + 400)
        step = next_step(wo, self.PLAN, frozenset({"accept", "done"}))
        assert step is not None
        assert (step.action, step.body, step.due) == ("feedback", {"by": "家属", "rating": 4}, T0 + 460)

    def test_each_action_once(self) -> None:
        """A job reopened after the plan accepted it is not accepted again; a rated one is not rated."""
        assert next_step(order(state="reopened"), self.PLAN, frozenset({"accept", "done"})) is None
        rated = order(state="done", done_by="a", done_at=T0, rating=2)
        assert next_step(rated, self.PLAN, frozenset({"accept", "done"})) is None


class FakeApi:
    """The work-order API's list and actions over a dict, enough for the runner."""

    def __init__(self, clock: list[float], *orders: dict[str, Any]) -> None:
        self.clock = clock
        self.orders = {o["id"]: o for o in orders}
        self.posts: list[tuple[str, str, dict[str, Any], str]] = []
        self.list_queries: list[httpx.QueryParams] = []
        self.conflict: set[str] = set()
        self.down = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("refused", request=request)
        parts = request.url.path.split("/")
        if request.method == "GET":
            self.list_queries.append(request.url.params)
            states = request.url.params.get_list("state")
            items = [o for o in self.orders.values() if o["state"] in states]
            return httpx.Response(200, json={"items": items, "total": len(items)})
        wo_id, action = parts[-2], parts[-1]
        body = orjson.loads(request.content)
        self.posts.append((wo_id, action, body, request.headers["authorization"]))
        if wo_id in self.conflict:
            return httpx.Response(409, json={"error": "conflict", "reason": f"{wo_id} is accepted"})
        wo, at = self.orders[wo_id], self.clock[0]
        if action == "accept":
            wo.update(state="accepted", accepted_by=body["by"], accepted_at=at)
        elif action == "done":
            wo.update(state="done", done_by=body["by"], done_at=at)
        else:
            wo.update(state="closed", rating=body["rating"])
        return httpx.Response(200, json=wo)


def runner(api: FakeApi, *people: dict[str, Any]) -> Responders:
    spec_ = spec(*people)
    tokens = {r.name: SecretStr(f"tok-{i}") for i, r in enumerate(spec_.responders)}
    return Responders(
        spec_,
        tokens,
        api="http://api",
        seed=1,
        clock=lambda: api.clock[0],
        transport=httpx.MockTransport(api.handle),
    )


class TestRunner:
    def test_lists_every_state_a_responder_acts_on(self) -> None:
        """The list asks for the five states, each as its own `state` parameter."""
        api = FakeApi([T0])
        asyncio.run(runner(api, {"name": "a"}).poll())
        assert api.list_queries[0].get_list("state") == [
            "dispatched",
            "rejected",
            "reopened",
            "accepted",
            "done",
        ]

    def test_acts_only_when_due(self) -> None:
        """Nothing is posted before the accept is due; at 90 s it is, with the token and `by`."""
        api = FakeApi([T0 + 19], order(family="bin"))  # not the desk's: 张伟's, with his token
        people = runner(api, {"name": "desk", "match": {"family": "wristband"}}, {"name": "张伟"})
        asyncio.run(people.poll())
        assert api.posts == []
        api.clock[0] = T0 + 90
        asyncio.run(people.poll())
        assert api.posts == [("WO-1", "accept", {"by": "张伟"}, "Bearer tok-1")]

    def test_whole_job_accept_done_rating(self) -> None:
        """Over polls a job is accepted, done with the note, then rated by the family."""
        api = FakeApi([T0], order())
        people = runner(api, {"name": "a", "rating": [4, 4], "feedback_after": ["1m", "1m"]})
        for _ in range(3):
            api.clock[0] += 20 * 60  # past every delay of the next step
            asyncio.run(people.poll())
        assert [(p[1], p[2]) for p in api.posts] == [
            ("accept", {"by": "a"}),
            ("done", {"by": "a", "note": DONE_NOTE}),
            ("feedback", {"by": "家属", "rating": 4}),
        ]
        assert (people.tally.accept, people.tally.done, people.tally.feedback) == (1, 1, 1)

    def test_conflict_forgets_the_work_order(self) -> None:
        """A 409 (someone else accepted) is counted and that work order is not tried again."""
        api = FakeApi([T0 + 1000], order())
        api.conflict.add("WO-1")
        people = runner(api, {"name": "a"})

        async def twice() -> None:
            await people.poll()
            await people.poll()

        asyncio.run(twice())
        assert len(api.posts) == 1
        assert people.tally.conflicts == 1

    def test_connection_error_is_logged_not_raised(self, caplog: pytest.LogCaptureFixture) -> None:
        """With the API unreachable a poll logs a warning and returns; the next one acts."""
        api = FakeApi([T0 + 1000], order())
        api.down = True
        people = runner(api, {"name": "a"})
        with caplog.at_level(logging.WARNING):
            asyncio.run(people.poll())
        assert "cannot reach the API" in caplog.text
        assert people.tally.errors == 1
        api.down = False
        asyncio.run(people.poll())
        assert [p[1] for p in api.posts] == ["accept"]

    def test_refused_token_on_the_list_stops_the_run(self) -> None:
        """A list refused with 401 is a SensordError naming whose token it was."""

        def refuse(request: httpx.Request) -> httpx.Response:
            return httpx.Response(
                401, json={"error": "unauthorized", "reason": "unknown token"}, request=request
            )

        spec_ = spec({"name": "a"})
        people = Responders(
            spec_, {"a": SecretStr("x")}, api="http://api", seed=1, transport=httpx.MockTransport(refuse)
        )
        with pytest.raises(SensordError, match="token of a: unknown token"):
            asyncio.run(people.poll())
