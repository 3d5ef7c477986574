"""One-tap link pages: `GET /l/{token}` shows the work order and one button, `POST
/l/{token}` does the link's one action, once.

A GET never acts: chat apps fetch links to preview them. The pages are tiny HTML in
Chinese and English, and so are their refusals (a forged link 403, an expired or used one
409), with the status of the JSON API's answer. The token is the capability: the pages
ask the browser not to keep them or pass them on as a referrer.
"""

from __future__ import annotations

import html

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from sensord._errors import NotFound, WorkOrderError
from sensord._office import Caller
from sensord.api._app import ApiContext, context
from sensord.api._links import Link
from sensord.workorders import UNTAKEN, WorkOrder

# Who acted, in the history and the audit log: a link is sent to a receiver, not a person.
LINK_CALLER = "one-tap link"
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}
_WORDS = {"accept": ("签收", "Accept")}


def _page(status: int, heading: str, body: str) -> HTMLResponse:
    doc = (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(heading)}</title></head>"
        f'<body style="font-family: sans-serif; max-width: 30em; margin: 2em auto">'
        f"<h1>{html.escape(heading)}</h1>{body}</body></html>"
    )
    return HTMLResponse(doc, status_code=status, headers=_HEADERS)


def _about(wo: WorkOrder) -> str:
    return f"<p>{html.escape(wo.title)}</p><p>{html.escape(wo.id)} · {html.escape(wo.state.value)}</p>"


def _refused(exc: WorkOrderError) -> HTMLResponse:
    return _page(exc.status, "无法操作 / Not done", f"<p>{html.escape(exc.reason)}</p>")


def _check(ctx: ApiContext, token: str) -> Link:
    if ctx.links is None:
        raise NotFound("one-tap links are off: set api.link_secret and api.public_url")
    return ctx.links.check(token, ctx.office.event_time())


async def show(request: Request, token: str) -> HTMLResponse:
    """The work order and the link's one button; nothing is done."""
    ctx = context(request)
    try:
        link = _check(ctx, token)
        wo = ctx.office.get(link.work_order)
    except WorkOrderError as exc:
        return _refused(exc)
    zh, en = _WORDS.get(link.action, (link.action, link.action))
    body = _about(wo)
    if wo.state in UNTAKEN:
        body += (
            '<form method="post"><button type="submit" style="font-size: 1.5em; padding: .5em 2em">'
            f"{zh} / {en}</button></form>"
        )
    else:  # taken already: nothing for this link to do
        who = html.escape(wo.accepted_by or wo.assignee or "")
        body += f"<p>已有人处理（{who}）。/ Someone has taken it ({who}).</p>"
    return _page(200, f"{zh}工单 / {en} work order", body)


async def act(request: Request, token: str) -> HTMLResponse:
    """Do the link's action; a second tap (or any after it expired) is refused (409)."""
    ctx = context(request)
    remote = request.client.host if request.client is not None else ""
    try:
        link = _check(ctx, token)
        wo = await ctx.office.act(
            link.work_order, link.action, Caller(LINK_CALLER, "act", remote), source="link", link_id=link.id
        )
    except WorkOrderError as exc:
        return _refused(exc)
    zh, en = _WORDS.get(link.action, (link.action, link.action))
    return _page(200, f"已{zh} / Done: {en.lower()}", _about(wo))


def add_routes(app: FastAPI) -> None:
    """The link pages: HTML for a phone's browser, not part of the JSON API's document."""
    for endpoint, method in ((show, "GET"), (act, "POST")):
        app.add_api_route(
            "/l/{token}", endpoint, methods=[method], include_in_schema=False, response_class=HTMLResponse
        )
