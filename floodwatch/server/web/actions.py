"""The dashboard's state-changing requests: sign in/out, thresholds, commands (with the executor's own
validation as a preview), users and nodes. Each checks the role and the CSRF token on the server."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Any

from aiohttp import web

from floodwatch.errors import CommandRejected
from floodwatch.executor.hostfacts import HostFacts
from floodwatch.executor.validate import validate_command
from floodwatch.server.http import read_json
from floodwatch.server.store import Conflict
from floodwatch.server.validate import is_decimal
from floodwatch.server.web import check_csrf, dash_of, render, require, secure_headers, sessions, users
from floodwatch.server.web.node_admin import users_page_with
from floodwatch.server.web.sessions import COOKIE
from floodwatch.settings.executor import ExecutorSettings

MAX_COMMANDS = 100  # per request (block the top N sources: N <= this)
_EXECUTOR = ExecutorSettings()  # the node's defaults: the preview says what a default agent will accept


async def login_form(request: web.Request) -> web.Response:
    return render(request, "login.html", error=None, next=_next(request.query.get("next")))


def _next(target: str | None) -> str:
    return target if target and target.startswith("/") and not target.startswith("//") else "/"


async def login(request: web.Request) -> web.Response:
    dash = dash_of(request)
    form = await request.post()
    name, password = str(form.get("username", ""))[:64], str(form.get("password", ""))[:256]
    srv = dash.server
    wait = await srv.db.call(sessions.login_wait, srv.store, request.remote or "?", name, time.time())
    if wait > 0:
        dash.server.count("dash_login_limited")
        return render(request, "login.html", status=429, error=f"Too many attempts: retry in {wait:.0f} s",
                      next=_next(str(form.get("next", ""))))
    user = await srv.db.call(users.find_user, srv.store, name)
    matched = await asyncio.to_thread(users.check_password, password, user["pw_hash"] if user else None)
    if not matched or user is None:
        await srv.db.call(sessions.login_failed, srv.store, request.remote or "?", name, time.time())
        srv.count("dash_login_failures")
        return render(request, "login.html", status=401, error="Wrong user name or password",
                      next=_next(str(form.get("next", ""))))
    token, _ = await srv.db.call(sessions.create, srv.store, user["name"], user["role"], time.time())
    resp = web.HTTPFound(_next(str(form.get("next", ""))))
    resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=request.secure, path="/")
    raise resp


async def logout(request: web.Request) -> web.Response:
    session = require(request, page=False)
    check_csrf(request, session, await request.post())
    srv = dash_of(request).server
    await srv.db.call(sessions.drop, srv.store, request.cookies.get(COOKIE))
    resp = web.HTTPFound("/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp


async def set_threshold(request: web.Request) -> web.Response:
    session = require(request, "operator", page=False)
    form = await request.post()
    check_csrf(request, session, form)
    srv = dash_of(request).server
    node = await srv.db.call(srv.store.find_node, request.match_info["node"])
    if node is None:
        raise web.HTTPNotFound(reason="no such node")
    changes: dict[str, Any] = {}
    for key in ("pps_threshold", "bps_threshold"):
        text = str(form.get(key, "")).strip()
        if text:
            if not is_decimal(text) or int(text) > 2**53:
                raise web.HTTPBadRequest(reason=f"{key}: a whole number")
            changes[key] = int(text)
    if changes:
        await srv.db.call(srv.store.update_node_config, node["node_id"], changes)
    raise web.HTTPFound(f"/nodes/{node['node_id']}")


def host_facts(targets: list[Any]) -> HostFacts:
    """What the server knows of the node's host: the addresses attacked are its own. (Its gateways,
    resolvers and SSH peers are known only there: the node judges again with all of them.)"""
    own = []
    for t in targets:
        try:
            own.append(ipaddress.ip_address(str(t)))
        except ValueError:
            continue
    return HostFacts(own=tuple(own))


def preview(commands: list[str], facts: HostFacts) -> list[dict[str, Any]]:
    """What the node's validator says of each command: the argv it would run, or why it refuses."""
    out = []
    for text in commands:
        try:
            plan = validate_command(text, _EXECUTOR, facts)
            out.append({"command": text, "ok": True, "argv": plan.argv, "summary": plan.summary})
        except CommandRejected as e:
            out.append({"command": text, "ok": False, "error": str(e)})
    return out


def block_commands(ips: list[str]) -> list[str]:
    """`block the top N sources`: one DROP rule per source address (ip6tables for IPv6)."""
    out = []
    for ip in ips:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            continue
        prog = "ip6tables" if addr.version == 6 else "iptables"
        out.append(f"{prog} -I INPUT -s {addr} -j DROP")
    return out


async def _commands_from(request: web.Request, body: Any) -> tuple[dict[str, Any], list[str], HostFacts]:
    srv = dash_of(request).server
    node = await srv.db.call(srv.store.find_node, str(body.get("node", "")))
    if node is None:
        raise web.HTTPNotFound(reason="no such node")
    texts = [t.strip() for t in str(body.get("commands", "")).splitlines() if t.strip()]
    top_n, inc_id = str(body.get("block_top", "")), str(body.get("incident_id", ""))
    facts = HostFacts()
    if is_decimal(inc_id) and len(inc_id) < 19:
        inc = await srv.db.call(srv.store.incident, int(inc_id), False)
        if inc is None or inc["node_uuid"] != node["node_uuid"]:
            raise web.HTTPNotFound(reason="no such incident on this node")
        facts = host_facts(inc.get("target_ips") or [])
        if is_decimal(top_n):
            ips = [str(s.get("ip")) for s in (inc.get("top_src_ips") or []) if isinstance(s, dict)]
            texts += block_commands(ips[:min(int(top_n), MAX_COMMANDS)])
    if not texts or len(texts) > MAX_COMMANDS:
        raise web.HTTPBadRequest(reason=f"commands: 1 to {MAX_COMMANDS}")
    return node, texts, facts


async def command_preview(request: web.Request) -> web.Response:
    session = require(request, "operator", page=False)
    check_csrf(request, session)
    body = await read_json(request)  # limits and a 400 for what is not JSON, as the API's
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason="body: a JSON object")
    _, texts, facts = await _commands_from(request, body)
    return web.json_response({"results": preview(texts, facts)}, headers=secure_headers())


async def queue_commands(request: web.Request) -> web.Response:
    """Queue the commands the validator accepts; refuse the whole request if it rejects any."""
    session = require(request, "operator", page=False)
    form = await request.post()
    check_csrf(request, session, form)
    node, texts, facts = await _commands_from(request, form)
    results = preview(texts, facts)
    srv = dash_of(request).server
    if not all(r["ok"] for r in results):
        return render(request, "rejected.html", status=400, results=results, node=node)
    for text in texts:
        await srv.db.call(srv.store.queue_command, node["node_id"], text, time.time())
    srv.count("dash_commands_queued", len(texts))
    back = str(form.get("back", ""))
    raise web.HTTPFound(back if back.startswith("/") and not back.startswith("//") else "/commands")


async def dissect(request: web.Request) -> web.Response:
    """Operator: dissect the incident's stored capture (queued; the page shows the findings when done)."""
    from floodwatch.server.web.pages import incident_id_of

    session = require(request, "operator", page=False)
    check_csrf(request, session, await request.post())
    dash = dash_of(request)
    incident_id = incident_id_of(request)
    meta = await dash.server.db.call(dash.server.store.pcap, incident_id)
    if meta is None or dash.dissections is None:
        raise web.HTTPNotFound(reason="no capture stored for this incident")
    inc = await dash.server.db.call(dash.server.store.incident, incident_id, False)
    dash.dissections.submit(incident_id, meta["file_name"], (inc or {}).get("attack_subtype") or "")
    raise web.HTTPFound(f"/incidents/{incident_id}")


async def users_page(request: web.Request) -> web.Response:
    require(request, "admin")
    return await users_page_with(request)


async def users_change(request: web.Request) -> web.Response:
    """Admin: add a user (its password shown once), delete one, or add a node (its key shown once)."""
    session = require(request, "admin", page=False)
    form = await request.post()
    check_csrf(request, session, form)
    dash = dash_of(request)
    srv = dash.server
    action, name = str(form.get("action", "")), str(form.get("name", "")).strip()
    created = node_created = None
    try:
        if action == "add":
            created = await srv.db.call(users.add_user, srv.store, name, str(form.get("role", "")), time.time())
        elif action == "delete" and name != session.user:
            await srv.db.call(users.delete_user, srv.store, name)  # its sessions go with it
        elif action == "add-node" and 0 < len(name) <= 128:
            node_created = await srv.create_node(name)
        else:
            raise web.HTTPBadRequest(reason="action: add, delete (not yourself) or add-node")
    except (ValueError, Conflict) as e:
        raise web.HTTPBadRequest(reason=str(e)) from None
    return await users_page_with(request, created=created, node_created=node_created)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/login", login_form)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_post("/nodes/{node}/threshold", set_threshold)
    r.add_post("/dash/api/commands/preview", command_preview)
    r.add_post("/commands", queue_commands)
    r.add_post("/incidents/{incident_id}/dissect", dissect)
    r.add_get("/users", users_page)
    r.add_post("/users", users_change)

