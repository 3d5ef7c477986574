"""The API's bodies and answers as pydantic models, so the OpenAPI document says exactly
what each call takes and gives (errors included)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sensord.workorders import State

# Free text a person types (a note, a reason); a name. Bounded: a body is a form, not a file.
TEXT_MAX = 2000
NAME_MAX = 100


class ErrorBody(BaseModel):
    """Every error: what kind, and what to do about it."""

    error: str = Field(description="short kind: unauthorized, forbidden, notfound, conflict, invalid, …")
    reason: str = Field(description="why, for the person who asked")


_ERRORS: dict[int, str] = {
    401: "no token, or one no client has",
    403: "the client's role does not allow this",
    404: "no such work order or silence",
    409: "not allowed in the work order's state (the reason says why)",
    422: "a body or parameter of the wrong shape",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: these error statuses, each with the error body."""
    return {code: {"model": ErrorBody, "description": _ERRORS[code]} for code in codes}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: str | None = Field(
        None, max_length=NAME_MAX, description="the person acting (default: the client's name)"
    )


class AcceptBody(_Body):
    note: str = Field("", max_length=TEXT_MAX)


class AssignBody(_Body):
    to: str = Field(min_length=1, max_length=NAME_MAX, description="the person the job is for")


class DoneBody(_Body):
    note: str = Field(min_length=1, max_length=TEXT_MAX, description="what was found and done")


class ReasonBody(_Body):
    reason: str = Field(min_length=1, max_length=TEXT_MAX, description="why")


class CommentBody(_Body):
    text: str = Field(min_length=1, max_length=TEXT_MAX)


class FeedbackBody(_Body):
    rating: int = Field(ge=1, le=5, description="the resident's rating, 1 to 5")
    comment: str = Field("", max_length=TEXT_MAX)


class EntryOut(BaseModel):
    """One step of a work order's history (times are event time, epoch seconds)."""

    at: float
    action: str
    state: State
    by: str
    note: str
    source: str = Field(description="dispatch, api, link, console, mqtt or clock")


class WorkOrderSummary(BaseModel):
    """A work order as a list shows it (times are event time, epoch seconds)."""

    id: str
    fingerprint: str
    starts_at: float
    rule: str
    family: str
    device_id: str
    community: str
    grid: str
    severity: str
    life_safety: bool
    title: str
    opened_at: float
    receivers: list[str]
    state: State
    assignee: str | None
    accepted_at: float | None
    accepted_by: str | None
    done_at: float | None
    done_by: str | None
    closed_at: float | None
    cleared_at: float | None
    rating: int | None
    rating_comment: str
    policy: str | None
    step: int
    round: int
    escalate_at: float | None
    sla_accept_at: float | None
    sla_done_at: float | None
    breaches: list[str]
    close_at: float | None


class WorkOrderOut(WorkOrderSummary):
    """A work order with its whole history."""

    history: list[EntryOut]


class WorkOrderList(BaseModel):
    items: list[WorkOrderSummary]
    total: int = Field(description="how many match (items is one page of them)")


class SilenceIn(BaseModel):
    """A silence, checked as `sensord silence add` checks one."""

    model_config = ConfigDict(extra="forbid")

    matchers: list[str] = Field(
        min_length=1, max_length=20, description='label="value" (or !=, =~, !~), all must match',
        examples=[['family="lift"', 'building="3"']],
    )  # fmt: skip
    duration: str = Field(max_length=20, description="30m, 2h, 1d: at most the dispatch file's max_silence")
    starts_at: float | None = Field(
        None, ge=0, lt=1e11, description="epoch seconds (default: now); a planned maintenance window"
    )
    comment: str = Field(min_length=1, max_length=TEXT_MAX, description="why (kept and listed)")
    life_safety: bool = Field(default=False, description="also hold life-safety alerts (needs reason)")
    reason: str = Field("", max_length=TEXT_MAX, description="why life-safety alerts may be held")


class SilenceOut(BaseModel):
    id: int
    matchers: list[str]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    created_at: float
    life_safety: bool
    reason: str
    state: Literal["active", "pending", "expired"]


class SilenceList(BaseModel):
    items: list[SilenceOut]


class AuditOut(BaseModel):
    """Who changed what, when (wall clock, epoch seconds) and from where."""

    seq: int
    at: float
    who: str
    role: str
    action: str
    target: str
    detail: dict[str, Any]
    remote: str


class AuditList(BaseModel):
    items: list[AuditOut]
