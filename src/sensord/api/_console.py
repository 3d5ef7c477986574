"""The operator console: server-rendered pages under /console for the duty office, behind
the API's tokens (README: Operator console).

    /console/login         a token in, the `sensord_token` cookie out (HttpOnly, SameSite=Strict)
    /console               open work orders, life-safety first then oldest; the last rule reload
    /console/wo/{id}       one work order's timeline
    /console/silences      silences: list, create and expire (admin)
    /console/kpi           the last 7 days' KPIs per community, grid, team or rule (`?by=`):
                           the table, then the plots of `sensord kpi --html`

Every form carries a token derived from the session's cookie (an HMAC under a key made
at start), checked on POST: a page from elsewhere cannot act for the person logged in.
Actions go through `Office.act(..., source="console")`, so they are committed with their
audit entry, and told to the receivers that asked, before the page answers. A refusal
(409 not in that state, 403 a read-only client) is a sentence on the page, not JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, quote

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from sensord._errors import ConfigError, SensordError, WorkOrderError
from sensord._office import Caller, Office
from sensord.api._app import ApiContext
from sensord.api._auth import COOKIE, Unauthorized, require
from sensord.api._console_views import LISTED, WEEK_S, kpi_cells, rows, sla, title, when
from sensord.api._console_words import LANGS, PLOT_WORDS, WORDS, lang_of, state_word
from sensord.dispatch._spec import parse_matcher
from sensord.outbox import Filter
from sensord.report import kpi_plots
from sensord.rules._spec import parse_duration
from sensord.workorders import GROUPINGS, OPEN, UNTAKEN, WorkOrder, kpis

LANG_COOKIE = "sensord_lang"
ACTIONS = ("accept", "assign", "done", "comment")
MAX_FORM = 64 * 1024  # a form bigger than this is not a person typing
LIST_LIMIT = 200
KPI_BY = tuple(GROUPINGS)  # /console/kpi?by=: community (the default), grid, team, rule

Page = Callable[..., Awaitable[Response]]


class _Session:
    """The person logged in: the client (name and role) and the form token of its cookie."""

    def __init__(self, caller: Caller, csrf: str) -> None:
        self.caller = caller
        self.csrf = csrf
        self.can_act = caller.role in ("act", "admin")
        self.is_admin = caller.role == "admin"


class Console:
    """The pages; one per app, with its templates and its form-token key."""

    def __init__(self) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("sensord.api", "templates"),
            autoescape=True,  # every value is text: a device id cannot become markup
            undefined=jinja2.StrictUndefined,
        )
        self._key = secrets.token_bytes(32)

    # -- plumbing --------------------------------------------------------------------

    def _csrf(self, token: str) -> str:
        return hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()

    def _session(self, request: Request) -> _Session | None:
        ctx: ApiContext = request.app.state.ctx
        token = request.cookies.get(COOKIE)
        remote = request.client.host if request.client is not None else ""
        try:
            caller = ctx.clients.identify(token, remote)
        except Unauthorized:
            return None
        return _Session(caller, self._csrf(token or ""))

    @staticmethod
    def _lang(request: Request) -> str:
        return lang_of(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE))

    def _render(
        self,
        request: Request,
        template: str,
        session: _Session | None,
        status: int = 200,
        error: str = "",
        **values: Any,
    ) -> HTMLResponse:
        asked = request.query_params.get("lang")
        lang = self._lang(request)
        html = self._env.get_template(template).render(
            t=WORDS[lang], lang=lang, langs=LANGS, st=partial(state_word, lang), when=when, session=session,
            wo_title=lambda wo: title(wo, lang), path=request.url.path, error=error, **values,
        )  # fmt: skip
        response = HTMLResponse(html, status)
        if asked in LANGS:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, httponly=True, samesite="strict")
        return response

    @staticmethod
    async def _form(request: Request) -> dict[str, str]:
        """An urlencoded form (the console's only kind), first value of each field."""
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                raise WorkOrderError("the form is too large")
        return dict(reversed(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)))

    async def _posted(self, request: Request) -> tuple[_Session, dict[str, str]] | None:
        """The session and form of a POST whose form token matches; None to log in again."""
        session = self._session(request)
        form = await self._form(request)
        if session is None or not hmac.compare_digest(form.get("csrf", ""), session.csrf):
            return None
        return session, form

    @staticmethod
    def _to_login() -> RedirectResponse:
        return RedirectResponse("/console/login", status_code=303)

    # -- logging in and out ------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        return self._render(request, "login.html", None)

    async def login(self, request: Request) -> Response:
        ctx: ApiContext = request.app.state.ctx
        token = (await self._form(request)).get("token", "").strip()
        try:
            ctx.clients.identify(token, request.client.host if request.client is not None else "")
        except Unauthorized as exc:
            return self._render(request, "login.html", None, 401, error=exc.reason)
        response = RedirectResponse("/console", status_code=303)
        response.set_cookie(
            COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/"
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = self._to_login()
        if await self._posted(request) is not None:
            response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # -- work orders -------------------------------------------------------------------

    async def orders(self, request: Request) -> Response:
        return await self._orders(request)

    async def _orders(self, request: Request, error: str = "", status: int = 200) -> Response:
        session = self._session(request)
        if session is None:
            return self._to_login()
        office: Office = request.app.state.ctx.office
        community = request.query_params.get("community") or None
        grid = request.query_params.get("grid") or None
        now = office.event_time()
        try:
            wanted = Filter(state=LISTED, community=community, grid=grid, limit=LIST_LIMIT)
            listed, total = office.find(wanted)
            places = office.places(LISTED)
        except WorkOrderError as exc:
            listed, total, places, error = [], 0, [], error or exc.reason
        return self._render(
            request, "orders.html", session, status, error=error, rows=rows(listed, now), total=total,
            groups=places, community=community, grid=grid, reload=office.last_reload,
            done=_done(request),
        )  # fmt: skip

    async def order(self, request: Request) -> Response:
        return await self._order(request)

    async def _order(self, request: Request, error: str = "", status: int = 200) -> Response:
        session = self._session(request)
        if session is None:
            return self._to_login()
        office: Office = request.app.state.ctx.office
        wo_id = request.path_params["wo_id"]
        try:
            wo: WorkOrder | None = office.get(wo_id)
        except WorkOrderError as exc:
            wo, error, status = None, exc.reason, exc.status
        now = office.event_time()
        return self._render(
            request, "order.html", session, status, error=error, wo=wo, wo_id=wo_id,
            sla=sla(wo, now) if wo else None, can_accept=wo is not None and wo.state in UNTAKEN,
            can_finish=wo is not None and wo.state in OPEN, done=_done(request),
        )  # fmt: skip

    async def act(self, request: Request) -> Response:
        wo_id, action = request.path_params["wo_id"], request.path_params["action"]
        posted = await self._posted(request)
        if posted is None:
            return self._to_login()
        session, form = posted
        detail = form.get("back") == "order"
        back = self._order if detail else self._orders
        office: Office = request.app.state.ctx.office
        try:
            caller = require(session.caller, "act")
            _console_action(action)
            await office.act(
                wo_id, action, caller, note=form.get("note", ""), to=form.get("to", ""), source="console"
            )
        except WorkOrderError as exc:
            return await back(request, error=f"{wo_id}: {exc.reason}", status=exc.status)
        except SensordError as exc:
            return await back(request, error=f"{wo_id}: {exc}", status=503)
        where = f"/console/wo/{quote(wo_id)}" if detail else "/console"
        return RedirectResponse(f"{where}?ok={quote(action)}&wo={quote(wo_id)}", status_code=303)

    # -- silences and figures ----------------------------------------------------------

    async def silences(self, request: Request) -> Response:
        return await self._silences(request)

    async def _silences(self, request: Request, error: str = "", status: int = 200) -> Response:
        session = self._session(request)
        if session is None:
            return self._to_login()
        office: Office = request.app.state.ctx.office
        now = office.event_time()
        listed = [
            (s, "active" if s.active(now) else "pending" if now < s.starts_at else "expired")
            for s in reversed(office.silences())
        ]
        return self._render(request, "silences.html", session, status, error=error, silences=listed)

    async def add_silence(self, request: Request) -> Response:
        posted = await self._posted(request)
        if posted is None:
            return self._to_login()
        session, form = posted
        office: Office = request.app.state.ctx.office
        try:
            caller = require(session.caller, "admin")
            lines = form.get("matchers", "").splitlines()
            matchers = [parse_matcher(m.strip()).text for m in lines if m.strip()]
            duration = parse_duration(form.get("duration", ""))
            _check_silence(form, matchers, duration, office.max_silence())
            start = office.event_time()
            await office.add_silence(
                caller, matchers=matchers, starts_at=start, ends_at=start + duration,
                comment=form["comment"].strip(), life_safety=bool(form.get("life_safety")),
                reason=form.get("reason", "").strip(),
            )  # fmt: skip
        except WorkOrderError as exc:
            return await self._silences(request, error=exc.reason, status=exc.status)
        except (ValueError, ConfigError) as exc:
            return await self._silences(request, error=str(exc), status=400)
        return RedirectResponse("/console/silences", status_code=303)

    async def expire_silence(self, request: Request) -> Response:
        posted = await self._posted(request)
        if posted is None:
            return self._to_login()
        office: Office = request.app.state.ctx.office
        try:
            sid = int(request.path_params["sid"])
            await office.expire_silence(require(posted[0].caller, "admin"), sid)
        except WorkOrderError as exc:
            return await self._silences(request, error=exc.reason, status=exc.status)
        except ValueError:
            return await self._silences(request, error="a silence id is a number", status=400)
        return RedirectResponse("/console/silences", status_code=303)

    async def kpi(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return self._to_login()
        office: Office = request.app.state.ctx.office
        since = office.event_time() - WEEK_S
        found: list[WorkOrder] = []
        error, status = "", 200
        try:
            while True:
                page, total = office.find(Filter(since=since, limit=500, offset=len(found)))
                found += page
                if not page or len(found) >= total:
                    break
        except WorkOrderError as exc:
            error = exc.reason
        by = request.query_params.get("by") or KPI_BY[0]
        if by not in KPI_BY:
            error, status = f"cannot group by {by!r}; one of {', '.join(KPI_BY)}", 400
            by = KPI_BY[0]
        groups = kpis(found, by)
        plots = kpi_plots(groups, PLOT_WORDS[self._lang(request)]) if groups else ""
        return self._render(
            request, "kpi.html", session, status, error=error, since=since, by=by, kpi_by=KPI_BY,
            cells=[kpi_cells(k) for k in groups], plots=plots,
        )  # fmt: skip


def _done(request: Request) -> tuple[str, str] | None:
    """The action just done (after the redirect), to say so on the page."""
    action, wo_id = request.query_params.get("ok"), request.query_params.get("wo", "")
    return (action, wo_id) if action in ACTIONS else None


def _console_action(action: str) -> None:
    if action not in ACTIONS:
        raise WorkOrderError(f"the console does not {action}; one of {', '.join(ACTIONS)}")


def _check_silence(form: dict[str, str], matchers: list[str], duration: float, max_s: float) -> None:
    """The checks of `sensord silence add` (the same words as the shared check the API
    branch adds in dispatch/_silence.py: `silence_terms` replaces this once both are in)."""
    if not matchers:
        raise ValueError('a silence needs at least one matcher (label="value")')
    if not 0 < duration <= max_s:
        raise ValueError(f"the duration must be more than 0 and at most max_silence ({max_s / 3600:g} h)")
    if not form.get("comment", "").strip():
        raise ValueError("a silence needs a comment: why the alerts may be held")
    if form.get("life_safety") and not form.get("reason", "").strip():
        raise ValueError(
            "a silence that holds life-safety alerts needs a reason: holding back fire or SOS alerts "
            "must be explained"
        )


def add_routes(app: FastAPI) -> None:
    """The console's pages on the app (left out of the OpenAPI document: they are HTML)."""
    c = Console()
    routes: list[tuple[str, Page, str]] = [
        ("/console/login", c.login_page, "GET"), ("/console/login", c.login, "POST"),
        ("/console/logout", c.logout, "POST"), ("/console", c.orders, "GET"),
        ("/console/wo/{wo_id}", c.order, "GET"), ("/console/wo/{wo_id}/{action}", c.act, "POST"),
        ("/console/silences", c.silences, "GET"), ("/console/silences", c.add_silence, "POST"),
        ("/console/silences/{sid}/expire", c.expire_silence, "POST"), ("/console/kpi", c.kpi, "GET"),
    ]  # fmt: skip
    for path, endpoint, method in routes:
        app.add_api_route(path, endpoint, methods=[method], include_in_schema=False)


__all__ = ["Console", "add_routes"]
