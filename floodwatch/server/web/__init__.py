"""The web dashboard, served by the API server's own aiohttp application (same process, same port).

Pages: /login, / (fleet), /nodes/{node}, /incidents, /incidents/{id}, /commands, /notifications, /users; live updates at
/events (server-sent events); chart data under /dash/api/. Templates and static files live in this
package; nothing is loaded from the internet. `setup(app, server)` adds it all (see docs/dashboard.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from aiohttp import web
from loguru import logger

from floodwatch.server import rollup
from floodwatch.server.web import charts, live, sessions, users
from floodwatch.server.web.dissection import Dissections
from floodwatch.server.web.live import Hub
from floodwatch.server.web.sessions import COOKIE, Session, csrf_ok

if TYPE_CHECKING:
    from floodwatch.server.app import ApiServer

HERE = Path(__file__).parent
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")


@dataclass
class Dash:
    server: ApiServer
    env: jinja2.Environment
    hub: Hub | None = None
    dissections: Dissections | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def admin_file(self) -> Path:
        """Beside the SQLite database; on PostgreSQL in the state directory (the capture directory's parent)."""
        path = getattr(self.server.store, "path", None)
        return (path.parent if isinstance(path, Path) else self.server.pcap_dir.parent) / users.ADMIN_FILE


DASH_KEY: web.AppKey[Dash] = web.AppKey("dash")
SESSION_KEY: web.RequestKey[Session | None] = web.RequestKey("session")
NO_SESSION_PATHS = ("/api/", "/static/")  # agents, operators' API, files: never a cookie lookup


def make_env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["human"] = charts.human
    env.filters["when"] = when
    env.globals.update(sparkline=charts.sparkline, bars=charts.bars)
    return env


def when(value: Any) -> str:
    """Epoch seconds or ISO text -> 'YYYY-MM-DD HH:MM:SS' UTC ('-' for nothing)."""
    if value is None:
        return "-"
    if isinstance(value, int | float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value))
    return str(value).replace("T", " ").replace("Z", "")[:19]


def dash_of(request: web.Request) -> Dash:
    return request.app[DASH_KEY]


def session_of(request: web.Request) -> Session | None:
    """The request's session, looked up in the database once per request by `with_session`."""
    return request.get(SESSION_KEY)


@web.middleware
async def with_session(request: web.Request, handler: Any) -> web.StreamResponse:
    """Resolve the session cookie (one database read; it may refresh the session's last use) before a
    dashboard route runs, so any replica serves any signed-in browser."""
    token = request.cookies.get(COOKIE) if "Cookie" in request.headers else None  # agents send none: not parsed
    if token and not request.path.startswith(NO_SESSION_PATHS) and DASH_KEY in request.app:
        srv = request.app[DASH_KEY].server
        request[SESSION_KEY] = await srv.db.call(sessions.get, srv.store, token, time.time())
    return await handler(request)  # type: ignore[no-any-return]


def require(request: web.Request, role: str = "viewer", page: bool = True) -> Session:
    """The signed-in session with at least `role`; else a redirect to /login (pages), 401 or 403."""
    session = session_of(request)
    if session is None:
        if page and request.method == "GET":
            raise web.HTTPFound("/login?next=" + _quote(request.path_qs))
        raise web.HTTPUnauthorized(reason="sign in first")
    if users.RANK.get(session.role, -1) < users.RANK[role]:
        raise web.HTTPForbidden(reason=f"needs the {role} role")
    return session


def check_csrf(request: web.Request, session: Session, form: Any = None) -> None:
    presented = request.headers.get("X-CSRF-Token") or (form.get("csrf") if form is not None else None)
    if not csrf_ok(session, presented if isinstance(presented, str) else None):
        raise web.HTTPForbidden(reason="missing or wrong CSRF token")


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path if path.startswith("/") and not path.startswith("//") else "/", safe="")


def render(request: web.Request, name: str, status: int = 200, **ctx: Any) -> web.Response:
    dash = dash_of(request)
    session = session_of(request)
    html = dash.env.get_template(name).render(session=session, path=request.path, **ctx)
    return web.Response(text=html, status=status, content_type="text/html", headers=secure_headers())


JSON_PATHS = ("/api/", "/dash/api/")  # the APIs (and /events, /metrics) answer errors in JSON; pages in HTML


def is_page(path: str) -> bool:
    """A route a browser navigates to (its errors are HTML pages)."""
    return not path.startswith(JSON_PATHS) and path not in ("/events", "/metrics")


def error_page(request: web.Request, status: int, message: str, headers: dict[str, str]) -> web.Response:
    """The error as an HTML page (the API keeps `{"error": ...}`)."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    resp = render(request, "error.html", status=status, code=status, title=title, message=message)
    resp.headers.update(headers)
    return resp


def secure_headers() -> dict[str, str]:
    return {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
            "X-Frame-Options": "DENY", "Cache-Control": "no-store"}


def setup(app: web.Application, server: ApiServer) -> None:
    from floodwatch.server.web import actions, node_admin, notify_page, pages

    dash = Dash(server, make_env())
    app[DASH_KEY] = dash
    app.middlewares.append(with_session)
    pages.add_routes(app)
    actions.add_routes(app)
    notify_page.add_routes(app)
    node_admin.add_routes(app)
    app.router.add_static("/static/", HERE / "static", name="static")
    app.on_startup.append(_start)
    app.on_shutdown.append(_stop)


async def _start(app: web.Application) -> None:
    dash = app[DASH_KEY]
    srv = dash.server
    dash.hub = Hub(srv.store, asyncio.get_running_loop(), srv.count)
    store: Any = srv.store
    if store.dialect == "postgresql":  # every replica's incidents through LISTEN/NOTIFY, samples polled
        store.announce = live.encode
        dash.tasks += [asyncio.ensure_future(dash.hub.follow(store, srv.db)),
                       asyncio.ensure_future(dash.hub.poll(srv.db))]
    else:
        store.listeners.append(dash.hub.from_store)
    if await srv.db.call(users.ensure_admin, srv.store, dash.admin_file, time.time()):
        logger.bind(actor="apiserver").info("dashboard: created user admin; its password is in {}", dash.admin_file)
    dash.dissections = Dissections(srv.pcap_dir)
    dash.tasks += [asyncio.ensure_future(dash.hub.run()), asyncio.ensure_future(_prune(dash)),
                   asyncio.ensure_future(dash.dissections.run())]


async def _stop(app: web.Application) -> None:
    dash = app[DASH_KEY]
    if dash.hub is not None:
        dash.hub.close()
    for task in dash.tasks:
        task.cancel()
    await asyncio.gather(*dash.tasks, return_exceptions=True)
    if dash.dissections is not None:
        dash.dissections.stop()
    if dash.hub is not None:
        with contextlib.suppress(ValueError):
            dash.server.store.listeners.remove(dash.hub.from_store)
        store: Any = dash.server.store
        if store.dialect == "postgresql":
            store.announce = None


async def _prune(dash: Dash) -> None:
    while True:
        await asyncio.sleep(300)
        try:
            await dash.server.db.call(rollup.prune, dash.server.store, time.time())
            await dash.server.db.call(sessions.prune, dash.server.store, time.time())
        except Exception as e:  # noqa: BLE001 - the next round retries
            logger.bind(actor="apiserver").error("pruning metric rollups and sessions failed: {}", e)
