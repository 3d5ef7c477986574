"""Work-order routes: list, read, and the seven actions (README: HTTP API).

Each action is applied under the daemon's batch lock and committed with its audit entry
before the answer is sent: a 200 means it is on disk.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Annotated

from fastapi import Depends, FastAPI, Path, Query, Request

from sensord._office import Caller
from sensord.api._app import caller_with, context
from sensord.api._shapes import (
    NAME_MAX,
    AcceptBody,
    AssignBody,
    CommentBody,
    DoneBody,
    FeedbackBody,
    ReasonBody,
    WorkOrderList,
    WorkOrderOut,
    WorkOrderSummary,
    errors,
)
from sensord.outbox import Filter
from sensord.workorders import State, WorkOrder

Actor = Annotated[Caller, Depends(caller_with("act"))]
WorkOrderId = Annotated[str, Path(max_length=64, description="WO-XXXXXXXXXX")]
PREFIX = "/api/v1/work-orders"
States = Annotated[list[State] | None, Query(description="repeatable: ?state=dispatched&state=rejected")]
Label = Annotated[str | None, Query(max_length=NAME_MAX)]
Since = Annotated[float | None, Query(allow_inf_nan=False, description="opened at or after (epoch s)")]


def full(wo: WorkOrder) -> WorkOrderOut:
    """The work order with its history, without the stored alert body."""
    history = [dataclasses.asdict(h) for h in wo.history]
    return WorkOrderOut.model_validate({**wo.summary(), "history": history})


async def list_work_orders(  # noqa: PLR0913 - the list's filters, each a query parameter
    request: Request,
    *,
    state: States = None,
    community: Label = None,
    grid: Label = None,
    family: Label = None,
    since: Since = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> WorkOrderList:
    """Work orders, life-safety first, then oldest first."""
    states = tuple(s.value for s in state or ())
    wanted = Filter(states, community, grid, family, since, limit, offset)
    orders, total = context(request).office.find(wanted)
    return WorkOrderList(items=[WorkOrderSummary.model_validate(o.summary()) for o in orders], total=total)


async def get_work_order(request: Request, wo_id: WorkOrderId) -> WorkOrderOut:
    """One work order with its history."""
    return full(context(request).office.get(wo_id))


async def accept(request: Request, wo_id: WorkOrderId, caller: Actor, body: AcceptBody) -> WorkOrderOut:
    """签收: take the job (a dispatched, rejected or reopened one)."""
    office = context(request).office
    return full(await office.act(wo_id, "accept", caller, by=body.by, note=body.note))


async def assign(request: Request, wo_id: WorkOrderId, caller: Actor, body: AssignBody) -> WorkOrderOut:
    """Give an open job to a person."""
    return full(await context(request).office.act(wo_id, "assign", caller, by=body.by, to=body.to))


async def done(request: Request, wo_id: WorkOrderId, caller: Actor, body: DoneBody) -> WorkOrderOut:
    """反馈: the job is done; the note says what was found and done."""
    return full(await context(request).office.act(wo_id, "done", caller, by=body.by, note=body.note))


async def reject(request: Request, wo_id: WorkOrderId, caller: Actor, body: ReasonBody) -> WorkOrderOut:
    """退单: send an open job back; it goes to the next escalation step's receivers."""
    return full(await context(request).office.act(wo_id, "reject", caller, by=body.by, note=body.reason))


async def reopen(request: Request, wo_id: WorkOrderId, caller: Actor, body: ReasonBody) -> WorkOrderOut:
    """Reopen a done, closed or auto-resolved job; its receivers are told again."""
    return full(await context(request).office.act(wo_id, "reopen", caller, by=body.by, note=body.reason))


async def comment(request: Request, wo_id: WorkOrderId, caller: Actor, body: CommentBody) -> WorkOrderOut:
    """A note in the history, in any state."""
    return full(await context(request).office.act(wo_id, "comment", caller, by=body.by, note=body.text))


async def feedback(request: Request, wo_id: WorkOrderId, caller: Actor, body: FeedbackBody) -> WorkOrderOut:
    """评价: the resident's rating of a done job (once); it closes the job."""
    office = context(request).office
    wo = await office.act(wo_id, "feedback", caller, by=body.by, note=body.comment, rating=body.rating)
    return full(wo)


def add_routes(app: FastAPI) -> None:
    """The work-order routes."""
    tags: list[str | Enum] = ["work orders"]
    read = [Depends(caller_with("read"))]
    app.add_api_route(
        PREFIX, list_work_orders, methods=["GET"], tags=tags, dependencies=read,
        responses=errors(401, 403, 422),
    )  # fmt: skip
    app.add_api_route(
        f"{PREFIX}/{{wo_id}}", get_work_order, methods=["GET"], tags=tags, dependencies=read,
        responses=errors(401, 403, 404, 422),
    )  # fmt: skip
    for action in (accept, assign, done, reject, reopen, comment, feedback):
        app.add_api_route(
            f"{PREFIX}/{{wo_id}}/{action.__name__}", action, methods=["POST"], tags=tags,
            responses=errors(401, 403, 404, 409, 422),
        )  # fmt: skip
