"""Silences and the audit log over the API (README: HTTP API).

A silence is checked exactly as `sensord silence add` checks one (matchers, a duration
within the dispatch file's max_silence, a comment, a reason for life-safety), and who
made it is the calling client, kept with the silence and in the audit log.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Path, Query, Request

from sensord._errors import WorkOrderError
from sensord._office import Caller
from sensord.api._app import caller_with, context
from sensord.api._shapes import AuditList, AuditOut, SilenceIn, SilenceList, SilenceOut, errors
from sensord.dispatch import silence_terms
from sensord.outbox import SilenceRow

Admin = Annotated[Caller, Depends(caller_with("admin"))]
# SQLite integers are 64-bit: a larger id is simply not one.
SilenceId = Annotated[int, Path(ge=1, lt=2**63)]


class Invalid(WorkOrderError):  # noqa: N818 - reads as the answer it is
    """A request well-formed but not acceptable as given (422): the reason says why."""

    status = 422


def _out(row: SilenceRow, now: float) -> SilenceOut:
    state: Literal["active", "pending", "expired"] = (
        "active" if row.active(now) else ("pending" if now < row.starts_at else "expired")
    )
    return SilenceOut(
        id=row.id, matchers=list(row.matchers), starts_at=row.starts_at, ends_at=row.ends_at,
        created_by=row.created_by, comment=row.comment, created_at=row.created_at,
        life_safety=row.life_safety, reason=row.reason, state=state,
    )  # fmt: skip


def _one(request: Request, silence_id: int) -> SilenceOut:
    office = context(request).office
    now = office.event_time()
    return next(_out(r, now) for r in office.silences() if r.id == silence_id)


async def list_silences(request: Request) -> SilenceList:
    """Every silence: active, pending and expired, with who and why."""
    office = context(request).office
    now = office.event_time()
    return SilenceList(items=[_out(r, now) for r in office.silences()])


async def add_silence(request: Request, caller: Admin, body: SilenceIn) -> SilenceOut:
    """Hold back the alerts matching every matcher, from starts_at (default now) for duration."""
    office = context(request).office
    start = office.event_time() if body.starts_at is None else body.starts_at
    try:
        terms = silence_terms(
            body.matchers, body.duration, start=start, max_s=office.max_silence(), comment=body.comment,
            life_safety=body.life_safety, reason=body.reason,
        )  # fmt: skip
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    sid = await office.add_silence(
        caller, matchers=terms.matchers, starts_at=terms.starts_at, ends_at=terms.ends_at,
        comment=terms.comment, life_safety=terms.life_safety, reason=terms.reason,
    )  # fmt: skip
    return _one(request, sid)


async def expire_silence(request: Request, caller: Admin, silence_id: SilenceId) -> SilenceOut:
    """End an active or pending silence now (it stays listed)."""
    await context(request).office.expire_silence(caller, silence_id)
    return _one(request, silence_id)


async def audit(
    request: Request,
    since: Annotated[float | None, Query(allow_inf_nan=False, description="epoch s (wall clock)")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> AuditList:
    """Who changed what, oldest first: every action and silence, with the client and its address."""
    entries = context(request).office.audit(since, limit)
    return AuditList(
        items=[
            AuditOut(seq=a.seq, at=a.at, who=a.who, role=a.role, action=a.action, target=a.target,
                     detail=a.detail, remote=a.remote)
            for a in entries
        ]
    )  # fmt: skip


def add_routes(app: FastAPI) -> None:
    """The silence and audit routes."""
    tags: list[str | Enum] = ["silences"]
    app.add_api_route(
        "/api/v1/silences", list_silences, methods=["GET"], tags=tags,
        dependencies=[Depends(caller_with("read"))], responses=errors(401, 403),
    )  # fmt: skip
    app.add_api_route(
        "/api/v1/silences", add_silence, methods=["POST"], status_code=201, tags=tags,
        responses=errors(401, 403, 422),
    )  # fmt: skip
    app.add_api_route(
        "/api/v1/silences/{silence_id}/expire", expire_silence, methods=["POST"], tags=tags,
        responses=errors(401, 403, 404, 422),
    )  # fmt: skip
    app.add_api_route(
        "/api/v1/audit", audit, methods=["GET"], tags=["audit"], dependencies=[Depends(caller_with("admin"))],
        responses=errors(401, 403, 422),
    )  # fmt: skip
