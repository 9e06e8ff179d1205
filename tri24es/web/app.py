"""The dashboard as an ASGI app: pages, ``/api/...`` (JSON), the live stream, the actions.

Pages and the API read one snapshot per request through ``web.data``; each action is the
service call its CLI command makes, acting as ``web:<remote address>``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
from jinja2 import Environment, PackageLoader
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventlog import EventLogError, EventStore
from tri24es.budget import BudgetLimits
from tri24es.config import Settings
from tri24es.errors import Tri24esError, UsageError
from tri24es.machines import ACTIVE_WORKER_STATES, TaskState
from tri24es.names import Priority, task_stream
from tri24es.projections import connection_of, reads
from tri24es.projections.queue import QUEUE
from tri24es.projections.sql import Db
from tri24es.services import NotFound, ResetRefused, Services
from tri24es.timeutil import now_us
from tri24es.web import actions, data
from tri24es.web.guard import COOKIE, CSRF_FIELD, Guard, Refused, actor
from tri24es.web.live import HeadWatcher
from tri24es.web.token import same

STATIC = Path(__file__).parent / "static"
#: Pages run only the package's own script and style; nothing is fetched from elsewhere.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; "
     b"img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
     b"base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
Action = Callable[[Services, dict[str, str], str], Any]


class SecurityHeaders:
    """Every response carries ``SECURITY_HEADERS``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(value), status, headers, media_type="application/json")


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _back(request: Request, fields: dict[str, str]) -> str:
    """Where a form's action returns to: a path of this site, never another site."""
    wanted = fields.get("back") or urlsplit(request.headers.get("referer", "")).path or "/"
    return wanted if wanted.startswith("/") and not wanted.startswith("//") else "/"


class Dashboard:
    def __init__(self, store: EventStore, settings: Settings, guard: Guard) -> None:
        self.store = store
        self.settings = settings
        self.paths = settings.paths
        self.limits = BudgetLimits.from_settings(settings)
        self.guard = guard
        self.watcher = HeadWatcher(store)
        self.shared = data.Shared()
        self.templates = Environment(loader=PackageLoader("tri24es.web", "templates"),
                                     autoescape=True, trim_blocks=True, lstrip_blocks=True)
        self.templates.filters["age"] = _age

    # --- plumbing ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Db]:
        with self.store.snapshot() as tx:
            yield connection_of(tx)

    def _page(self, request: Request, template: str, status: int = 200,
              **values: Any) -> HTMLResponse:
        signed_in = self.guard.signed_in(request)
        html = self.templates.get_template(template).render(
            request=request, signed_in=signed_in,
            csrf=self.guard.csrf if signed_in else None, csrf_field=CSRF_FIELD,
            reading_needs_token=self.guard.reading_needs_token, **values)
        return HTMLResponse(html, status)

    def _live(self, request: Request, page: str, fragment: str, **values: Any) -> HTMLResponse:
        """A page, or only its live part (``?fragment=1``, fetched by the page's script)."""
        if request.query_params.get("fragment"):
            return self._page(request, fragment, **values)
        return self._page(request, page, fragment=fragment, **values)

    def _bad(self, request: Request, message: str, status: int = 400) -> Response:
        """The error as JSON for programs, as a page for a browser (a form's post too)."""
        if _is_api(request) and "text/html" not in request.headers.get("accept", ""):
            return _json({"error": message}, status)
        return self._page(request, "error.html", status, message=message)

    # --- pages ---------------------------------------------------------------------------

    def _overview(self) -> dict[str, Any]:
        """The overview as of now, read once per log position and second."""
        now = now_us()

        def read() -> dict[str, Any]:
            with self._reading() as conn:
                return data.overview(self.store, conn, self.limits, now, self.paths.queue)

        found: dict[str, Any] = self.shared.get((self.store.head(), now // 1_000_000), read)
        return found

    def overview(self, request: Request) -> Response:
        self.guard.check_read(request)
        found = self._overview()
        if _is_api(request):
            return _json(found)
        per_minute = [Decimal(v) for v in found["spend_per_minute_usd"]]
        return self._live(request, "overview.html", "_overview.html", o=found,
                          bars=data.bars(per_minute))

    def status(self, request: Request) -> Response:
        self.guard.check_read(request)
        return _json(self._overview()["status"])

    def spend(self, request: Request) -> Response:
        """``spend --json`` (``?window=1h&by=model``), or the spend page (by model, worker
        and task over the window, the last hour per minute)."""
        self.guard.check_read(request)
        q = request.query_params
        window = q.get("window", "").strip() or None
        by = q.get("by", "").strip() or None
        now = now_us()
        try:
            with self._reading() as conn:
                if _is_api(request):
                    return _json(data.spend(conn, self.limits, now, window, by))
                groups = {group: data.spend(conn, self.limits, now, window, group)
                          for group in reads.SPEND_GROUPS}
                per_minute = reads.per_minute(conn, now, 60)
        except data.BadFilter as e:
            return self._bad(request, str(e))
        return self._page(request, "spend.html", groups=groups, window=window or "",
                          s=groups["model"], bars=data.bars(per_minute))

    def tasks(self, request: Request) -> Response:
        self.guard.check_read(request)
        try:
            wanted = data.TaskFilter.parse(dict(request.query_params))
        except data.BadFilter as e:
            return self._bad(request, str(e))
        with self._reading() as conn:
            rows, after = data.task_list(conn, wanted)
        next_page = None if after is None else (
            f"{request.url.path}?{urlencode(wanted.query(before=after))}")
        if _is_api(request):
            return _json(rows, headers={"link": f'<{next_page}>; rel="next"'} if next_page
                         else None)
        return self._page(request, "tasks.html", rows=rows, f=wanted, next_page=next_page,
                          states=[s.value for s in TaskState],
                          priorities=[p.value for p in Priority])

    def task(self, request: Request) -> Response:
        self.guard.check_read(request)
        task_id = request.path_params["task_id"]
        with self._reading() as conn:
            found = data.task(self.store, conn, self.paths, task_id)
        if found is None:
            return self._bad(request, f"no task {task_id!r}", 404)
        events = found.pop("events")
        if _is_api(request):
            del found["estimate_line"]  # `tasks show --json`'s shape: its "estimate" says it
            return _json(found)
        if request.query_params.get("fragment"):
            return self._page(request, "_task.html", t=found, task_id=task_id)
        # The diff runs git: on the page's load, not on each live refresh.
        return self._page(request, "task.html", fragment="_task.html", t=found,
                          task_id=task_id, diff=data.diff(events))

    def task_diff(self, request: Request) -> Response:
        """``tasks diff``: the diff of an attempt's result (default: the last), as text."""
        self.guard.check_read(request)
        task_id = request.path_params["task_id"]
        try:
            attempt = data.number(request.query_params.get("attempt"), "attempt")
        except data.BadFilter as e:
            return self._bad(request, str(e))
        found = data.diff(self.store.read_stream(task_stream(task_id)), attempt)
        if found is None:
            return self._bad(request, f"task {task_id!r} has no result"
                             + (f" for attempt {attempt}" if attempt else ""), 404)
        if found["error"]:
            return self._bad(request, found["error"], 409)
        return PlainTextResponse(found["text"])

    def task_log(self, request: Request) -> Response:
        self.guard.check_read(request)
        task_id = request.path_params["task_id"]
        try:
            attempt = data.number(request.query_params.get("attempt"), "attempt")
        except data.BadFilter as e:
            return self._bad(request, str(e))
        if attempt is None:
            with self._reading() as conn:
                found = QUEUE.load_by_id(conn, task_id)
            if found is None:
                return self._bad(request, f"no task {task_id!r}", 404)
            attempt = found.attempt
        tail = data.log_tail(self.paths, task_id, attempt)
        return PlainTextResponse(tail["text"])

    def workers(self, request: Request) -> Response:
        self.guard.check_read(request)
        with self._reading() as conn:
            rows = data.workers(conn, now_us())
        if _is_api(request):
            return _json(rows)
        return self._live(request, "workers.html", "_workers.html", workers=rows)

    def events(self, request: Request) -> Response:
        self.guard.check_read(request)
        q = request.query_params
        types = [t for given in q.getlist("type") for t in given.replace(",", " ").split()]
        stream = q.get("stream", "").strip() or None
        try:
            after = data.number(q.get("after", "").strip() or None, "after")
            limit = data.number(q.get("limit", "").strip() or None, "limit", data.EVENTS_PAGE,
                                 data.MAX_PAGE) or data.EVENTS_PAGE
        except data.BadFilter as e:
            return self._bad(request, str(e))
        found, last = data.events(self.store, after, types, stream, limit)
        if _is_api(request):
            return _json(found)
        following = urlencode([("type", t) for t in types] + (
            [("stream", stream)] if stream else []) + [("after", last)])
        values: dict[str, Any] = {
            "events": found, "types": " ".join(types), "stream": stream or "",
            "next_page": f"/events?{following}", "following": after is None}
        if after is None:  # the last events: followed live
            return self._live(request, "events.html", "_event_table.html", **values)
        return self._page(request, "events.html", fragment="_event_table.html", **values)

    async def live(self, request: Request) -> Response:
        self.guard.check_read(request)
        return StreamingResponse(self.watcher.events(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})

    # --- signing in ----------------------------------------------------------------------

    def login_form(self, request: Request) -> Response:
        back = _back(request, {"back": request.query_params.get("next", "/")})
        return self._page(request, "login.html", next=back)

    async def login(self, request: Request) -> Response:
        self.guard.check_same_site(request)
        fields = await actions.fields_of(request)
        if not same(fields.get("token", "").strip(), self.guard.token):
            return self._page(request, "login.html", 403, next=_back(request, fields),
                              message="wrong token")
        response = RedirectResponse(_back(request, fields), 303)
        response.set_cookie(COOKIE, self.guard.session, httponly=True, samesite="strict",
                            path="/")
        return response

    async def logout(self, request: Request) -> Response:
        self.guard.check_same_site(request)
        response = RedirectResponse("/", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # --- actions -------------------------------------------------------------------------

    async def _act(self, request: Request, action: Action) -> Response:
        """Check the right to act, run ``action`` as ``web:<address>``, answer as asked."""
        fields = await actions.fields_of(request)
        self.guard.check_action(request, fields.get(CSRF_FIELD)
                                or request.headers.get("x-csrf-token"))
        who = actor(request)

        def run() -> Any:
            services = Services(self.store, actor=who, trace_id=self.settings.trace_id)
            return action(services, fields, who)

        try:
            result = await run_in_threadpool(run)
        except NotFound as e:
            return self._bad(request, str(e), 404)
        except ResetRefused as e:  # the breach holds: say why, as the CLI does
            return self._bad(request, " ".join(e.check.explain()), 409)
        except UsageError as e:
            return self._bad(request, str(e), 400)
        except (Tri24esError, EventLogError) as e:
            return self._bad(request, str(e), 409)
        if actions.from_form(request):
            return RedirectResponse(_back(request, fields), 303)
        return _json(result)

    async def worker_action(self, request: Request) -> Response:
        name, worker_id = request.path_params["action"], request.path_params["worker_id"]
        return await self._act(request, lambda s, f, who: actions.workers(
            s, name, [worker_id], who))

    async def fleet_action(self, request: Request) -> Response:
        name = request.path_params["action"]

        def everyone(s: Services, f: dict[str, str], who: str) -> dict[str, Any]:
            with self._reading() as conn:
                ids = [w.worker_id for w in reads.workers(conn)
                       if w.state in ACTIVE_WORKER_STATES]
            return actions.workers(s, name, ids, who)

        return await self._act(request, everyone)

    async def task_action(self, request: Request) -> Response:
        name, task_id = request.path_params["action"], request.path_params["task_id"]
        return await self._act(request, lambda s, f, who: actions.task(
            s, self.paths, name, task_id, f, who))

    async def reset_killswitch(self, request: Request) -> Response:
        return await self._act(request, lambda s, f, who: actions.reset_killswitch(
            s, self.paths, self.limits, f, who))

    # --- the app -------------------------------------------------------------------------

    def refused(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        if exc.status == 401 and request.method == "GET" and "text/html" in request.headers.get(
                "accept", ""):
            return RedirectResponse("/login?" + urlencode({"next": request.url.path}), 303)
        return self._bad(request, exc.reason, exc.status)

    def store_error(self, request: Request, exc: Exception) -> Response:
        """The store failed (locked past the busy timeout, gone, replaced): 503, one line."""
        return self._bad(request, f"the store failed: {exc}", 503)

    def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return self._bad(request, str(exc.detail), exc.status_code)

    def app(self) -> Starlette:
        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            self.watcher.start()
            try:
                yield
            finally:
                self.watcher.stop()

        task = "/tasks/{task_id:path}"
        post = ["POST"]
        routes = [
            Route("/", self.overview),
            Route("/tasks", self.tasks),
            Route(task, self.task),
            Route("/workers", self.workers),
            Route("/spend", self.spend),
            Route("/events", self.events),
            Route("/live", self.live),
            Route("/login", self.login_form),
            Route("/login", self.login, methods=post),
            Route("/logout", self.logout, methods=post),
            Route("/api/overview", self.overview),
            Route("/api/status", self.status),
            Route("/api/spend", self.spend),
            Route("/api/tasks", self.tasks),
            Route("/api/tasks/{task_id:path}/log", self.task_log),
            Route("/api/tasks/{task_id:path}/diff", self.task_diff),
            Route("/api/tasks/{task_id:path}/{action:str}", self.task_action, methods=post),
            Route("/api" + task, self.task),
            Route("/api/workers", self.workers),
            Route("/api/workers/{worker_id:path}/{action:str}", self.worker_action,
                  methods=post),
            Route("/api/fleet/{action:str}", self.fleet_action, methods=post),
            Route("/api/killswitch/reset", self.reset_killswitch, methods=post),
            Route("/api/events", self.events),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
        return Starlette(
            routes=routes, lifespan=lifespan,
            middleware=[Middleware(SecurityHeaders),
                        Middleware(TrustedHostMiddleware, allowed_hosts=self.guard.allowed_hosts)],
            exception_handlers={Refused: self.refused, HTTPException: self.http_error,
                                EventLogError: self.store_error},
        )


def _age(seconds: int | None) -> str:
    """``42s``, ``7m``, ``3h``, ``2d``."""
    if seconds is None:
        return "-"
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def build(store: EventStore, settings: Settings, guard: Guard) -> Starlette:
    return Dashboard(store, settings, guard).app()

