"""The responders runner: polls the work-order API and acts when a plan says an action is due.

Each poll lists the work orders that may still need a simulated answer, decides once
per work order who takes it (`plan`), and POSTs the actions whose time has come. Due
times are event time; in a live run event time is about wall time, so "now" is the wall
clock. A 409 (someone else acted first, or the state moved on) or 404 makes the runner
forget the work order; a connection error is logged and the next poll tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

from sensord._errors import SensordError
from sensord.simulate._responders import Plan, ResponderSpec, Step, next_step, plan

log = logging.getLogger("sensord.simulate.responders")

LIST_PATH = "/api/v1/work-orders"
# Every state a simulated person may still act on: accept, done, then the family's rating.
STATES = ("dispatched", "rejected", "reopened", "accepted", "done")
_PAGE = 200


@dataclass
class Tally:
    """What the runner did, for the summary line."""

    polls: int = 0
    accept: int = 0
    done: int = 0
    feedback: int = 0
    conflicts: int = 0
    errors: int = 0

    def line(self) -> str:
        return (
            f"{self.polls} polls: {self.accept} accepted, {self.done} done, {self.feedback} rated; "
            f"{self.conflicts} taken by others, {self.errors} errors"
        )


@dataclass
class _Memory:
    plans: dict[str, Plan | None] = field(default_factory=dict)
    taken: dict[str, frozenset[str]] = field(default_factory=dict)
    forgotten: set[str] = field(default_factory=set)


class Responders:
    """The simulated people of one responders file, acting through the API at `api`."""

    def __init__(  # noqa: PLR0913 - the run's parts, all keywords
        self,
        spec: ResponderSpec,
        tokens: dict[str, SecretStr],
        *,
        api: str,
        seed: int,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._spec = spec
        self._tokens = tokens
        self._seed = seed
        self._poll_s = poll_s
        self._clock = clock
        self._client = httpx.AsyncClient(base_url=api.rstrip("/"), timeout=10.0, transport=transport)
        self._memory = _Memory()
        self.tally = Tally()
        self._unreachable = False
        # Any responder's token reads the list (act includes read).
        self._reader = tokens[spec.responders[0].name]

    async def run(self, duration_s: float | None = None) -> Tally:
        """Poll every `poll_s` until `duration_s` (wall seconds) has passed, or forever."""
        end = None if duration_s is None else time.monotonic() + duration_s
        try:
            while end is None or time.monotonic() < end:
                started = time.monotonic()
                await self.poll()
                await asyncio.sleep(max(0.0, self._poll_s - (time.monotonic() - started)))
        finally:
            await self._client.aclose()
        return self.tally

    async def poll(self) -> None:
        """One round: list the work orders, act on each whose next action is due."""
        self.tally.polls += 1
        try:
            orders = await self._list()
            now = self._clock()
            for order in orders:
                due = self._due(order, now)
                if due is not None:
                    await self._act(str(order["id"]), *due)
        except httpx.TransportError as exc:
            self.tally.errors += 1
            if not self._unreachable:  # one line per outage, not one per poll
                log.warning("cannot reach the API; trying every poll", extra={"fields": {"error": repr(exc)}})
            self._unreachable = True
            return
        if self._unreachable:
            log.info("the API answers again")
            self._unreachable = False

    def _due(self, order: dict[str, Any], now: float) -> tuple[Plan, Step] | None:
        wo_id = str(order["id"])
        mem = self._memory
        if wo_id in mem.forgotten:
            return None
        if wo_id not in mem.plans:
            mem.plans[wo_id] = plan(order, self._spec, self._seed)
        chosen = mem.plans[wo_id]
        if chosen is None:
            return None
        step = next_step(order, chosen, mem.taken.get(wo_id, frozenset()))
        return (chosen, step) if step is not None and step.due <= now else None

    async def _list(self) -> list[dict[str, Any]]:
        orders: list[dict[str, Any]] = []
        while True:
            params = httpx.QueryParams({"state": STATES, "limit": _PAGE, "offset": len(orders)})
            resp = await self._client.get(LIST_PATH, params=params, headers=_auth(self._reader))
            if resp.status_code in (401, 403):
                who = self._spec.responders[0].name
                raise SensordError(f"the API refused the token of {who}: {_reason(resp)}")
            if resp.status_code != 200:
                self.tally.errors += 1
                why = {"status": resp.status_code, "reason": _reason(resp)}
                log.warning("cannot list work orders", extra={"fields": why})
                return orders
            page = resp.json()
            items: list[dict[str, Any]] = page["items"]
            orders.extend(items)
            if not items or len(orders) >= int(page["total"]):
                return orders

    async def _act(self, wo_id: str, chosen: Plan, step: Step) -> None:
        token = self._tokens[chosen.by]  # the responder's token, also for the family's rating
        url = f"{LIST_PATH}/{wo_id}/{step.action}"
        resp = await self._client.post(url, json=step.body, headers=_auth(token))
        fields = {"work_order": wo_id, "action": step.action, "by": step.body["by"]}
        if resp.status_code == 200:
            self._memory.taken[wo_id] = self._memory.taken.get(wo_id, frozenset()) | {step.action}
            setattr(self.tally, step.action, getattr(self.tally, step.action) + 1)
            log.info("responder acted", extra={"fields": fields})
        elif resp.status_code in (404, 409):
            # Someone else acted first (or it is gone): this work order is not ours any more.
            self._memory.forgotten.add(wo_id)
            self.tally.conflicts += 1
            log.info("work order taken elsewhere", extra={"fields": fields | {"reason": _reason(resp)}})
        else:
            # 401/403: this responder's token cannot act; 5xx: try again on the next poll.
            self.tally.errors += 1
            if resp.status_code in (401, 403):
                self._memory.forgotten.add(wo_id)
            why = {"status": resp.status_code, "reason": _reason(resp)}
            log.warning("action refused", extra={"fields": fields | why})


def _auth(token: SecretStr) -> dict[str, str]:
    return {"Authorization": f"Bearer {token.get_secret_value()}"}


def _reason(resp: httpx.Response) -> str:
    """The API's reason ({"error", "reason"}), or the start of whatever it sent."""
    try:
        doc = resp.json()
    except ValueError:
        return resp.text[:200]
    return str(doc.get("reason", "")) if isinstance(doc, dict) else str(doc)[:200]
