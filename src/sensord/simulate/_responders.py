"""Simulated responders: who answers which work orders, how fast, and how often not at all.

A responders file names people (a grid worker, the elder-care desk, a family) with the
API token they act with, the work orders they answer (`match`), and uniform delay ranges.
The decisions are a pure function of (seed, work order id, responder): the same seed
gives the same accepts, dones and ratings for the same work orders in every run, so a
field tester can replay a day and compare escalation and response-time figures.

    responders:
      - name: 张伟                     # the `by` of the actions
        token: {file: token-duty}      # an API token with the act role (relative to this file)
        match: {family: bin, grid: g1} # any of community, grid, family, rule (a value or a list)
        accept_after: [20s, 90s]       # after the work order opened (event time)
        done_after: [2m, 10m]          # after it was accepted
        no_show: 0.2                   # share of work orders this person never answers
        rating: [4, 5]                 # the family's rating after done; omitted: no feedback

Responders are tried in file order: the first one whose `match` fits and who shows up
for this work order takes it. One who does not show leaves it to the next match (a
slower fallback), or to nobody, and then the escalation policy and the SLA clocks run.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from sensord._errors import ConfigError
from sensord._settings import SecretRef
from sensord.rules._spec import Duration
from sensord.workorders import UNTAKEN, State

DONE_NOTE = "模拟处理完成"
_UNTAKEN = frozenset(s.value for s in UNTAKEN)
_MATCH_KEYS = ("community", "grid", "family", "rule")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Delay = Annotated[Duration, Field(ge=0)]
Rating = Annotated[int, Field(ge=1, le=5)]


def _ordered(pair: tuple[float, float], what: str) -> tuple[float, float]:
    if pair[0] > pair[1]:
        raise ValueError(f"{what} is [shortest, longest]; {pair[0]:g} > {pair[1]:g}")
    return pair


class Match(_Model):
    """Which work orders a responder answers: every key given must fit (a value or any of a
    list); no key at all matches every work order."""

    community: str | tuple[str, ...] | None = None
    grid: str | tuple[str, ...] | None = None
    family: str | tuple[str, ...] | None = None
    rule: str | tuple[str, ...] | None = None

    def fits(self, order: Mapping[str, Any]) -> bool:
        for key in _MATCH_KEYS:
            want = getattr(self, key)
            if want is None:
                continue
            values = (want,) if isinstance(want, str) else want
            if order.get(key) not in values:
                return False
        return True


class Responder(_Model):
    """One simulated person (or desk) and how they answer."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    token: SecretRef
    match: Match = Match()
    accept_after: tuple[Delay, Delay]
    done_after: tuple[Delay, Delay]
    no_show: Annotated[float, Field(ge=0, le=1)] = 0.0
    rating: tuple[Rating, Rating] | None = None
    # Who gives the rating (the resident's family), and how long after done.
    feedback_by: Annotated[str, Field(min_length=1, max_length=64)] = "家属"
    feedback_after: tuple[Delay, Delay] = (60.0, 600.0)

    @field_validator("accept_after", "done_after", "feedback_after", "rating")
    @classmethod
    def _ranges(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        return None if v is None else _ordered(v, "a range")


class ResponderSpec(_Model):
    """The responders file."""

    responders: Annotated[tuple[Responder, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique(self) -> ResponderSpec:
        names = [r.name for r in self.responders]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"responder names are given once each: {', '.join(twice)}")
        return self

    def tokens(self, base: Path) -> dict[str, SecretStr]:
        """Each responder's API token, read from its file (relative to `base`)."""
        out: dict[str, SecretStr] = {}
        for r in self.responders:
            try:
                out[r.name] = r.token.read(base)
            except ValueError as exc:
                raise ConfigError(str(exc), key=f"responders.{r.name}.token") from None
        return out


def load_responders(path: Path) -> ResponderSpec:
    """Read and validate a responders file."""
    try:
        return ResponderSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise ConfigError(f"cannot read responders: {exc.strerror}", source=str(path)) from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"invalid responders: {exc}", source=str(path)) from None


@dataclass(frozen=True, slots=True)
class Plan:
    """What the simulated people do about one work order. Delays are seconds: accepting
    from its opening, done from its acceptance, feedback from done."""

    work_order: str
    by: str
    accept_after: float
    done_after: float
    rating: int | None
    feedback_by: str
    feedback_after: float


@dataclass(frozen=True, slots=True)
class Step:
    """One action to POST (`/api/v1/work-orders/{id}/{action}` with `body`), due at `due`."""

    action: str
    body: dict[str, object]
    due: float


def plan(order: Mapping[str, Any], spec: ResponderSpec, seed: int) -> Plan | None:
    """Who takes this work order and when, decided once; None when nobody will."""
    wo_id = str(order["id"])
    for r in spec.responders:
        if not r.match.fits(order):
            continue
        # Seeded per (seed, work order, person): adding a responder or a work order does
        # not change anyone else's decisions.
        rng = random.Random(f"{seed}\x1f{wo_id}\x1f{r.name}")  # noqa: S311 - a simulation, not a secret
        if rng.random() < r.no_show:
            continue
        accept, done, feedback = (rng.uniform(*r.accept_after), rng.uniform(*r.done_after),
                                  rng.uniform(*r.feedback_after))  # fmt: skip
        rating = rng.randint(*r.rating) if r.rating is not None else None
        return Plan(wo_id, r.name, accept, done, rating, r.feedback_by, feedback)
    return None


def next_step(order: Mapping[str, Any], chosen: Plan, taken: frozenset[str]) -> Step | None:
    """The plan's next action on the work order as it is now, and when it is due; None
    when the plan has nothing more to do (someone else took it, or each action was done
    once: a job reopened after our done is left to the people)."""
    state = order["state"]
    if state in _UNTAKEN and "accept" not in taken:
        return Step("accept", {"by": chosen.by}, float(order["opened_at"]) + chosen.accept_after)
    if state == State.ACCEPTED and order.get("accepted_by") == chosen.by and "done" not in taken:
        due = float(order["accepted_at"]) + chosen.done_after
        return Step("done", {"by": chosen.by, "note": DONE_NOTE}, due)
    if (
        state == State.DONE
        and chosen.rating is not None
        and order.get("rating") is None
        and order.get("done_by") == chosen.by
        and "feedback" not in taken
    ):
        due = float(order["done_at"]) + chosen.feedback_after
        return Step("feedback", {"by": chosen.feedback_by, "rating": chosen.rating}, due)
    return None
