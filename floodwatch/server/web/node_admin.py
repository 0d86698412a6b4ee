"""Admin: remove a node. GET /nodes/{node}/remove asks for confirmation (the admin types the node's name);
the POST (CSRF-checked) deletes the node, its credentials and everything it sent (ApiServer.remove_node)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from loguru import logger

from floodwatch.server.web import check_csrf, dash_of, render, require, users


async def _node(request: web.Request) -> dict[str, Any]:
    srv = dash_of(request).server
    found: dict[str, Any] | None = await srv.db.call(srv.store.find_node, request.match_info["node"])
    if found is None:
        raise web.HTTPNotFound(reason="no such node")
    return found


async def confirm_page(request: web.Request) -> web.Response:
    require(request, "admin")
    return render(request, "node_remove.html", node=await _node(request), error=None)


async def remove(request: web.Request) -> web.Response:
    session = require(request, "admin", page=False)
    form = await request.post()
    check_csrf(request, session, form)
    node = await _node(request)
    if str(form.get("confirm", "")).strip() != node["name"]:
        return render(request, "node_remove.html", status=400, node=node,
                      error="Type the node's name exactly to confirm.")
    srv = dash_of(request).server
    removed = await srv.remove_node(node["node_id"])
    if removed is None:
        raise web.HTTPNotFound(reason="no such node")
    srv.count("dash_nodes_removed")
    logger.bind(actor="apiserver").warning(
        "dashboard: {} removed node {} ({}): {} incidents, {} metric samples, {} commands, {} captures deleted",
        session.user, node["name"], node["node_uuid"], removed["incidents"], removed["metrics"],
        removed["commands"], len(removed["pcap_files"]))
    return await users_page_with(request, {"name": node["name"], **removed})


async def users_page_with(request: web.Request, node_removed: dict[str, Any] | None = None,
                          created: Any = None, node_created: Any = None) -> web.Response:
    """The users and nodes page, with the notice of what was just done."""
    srv = dash_of(request).server
    rows = await srv.db.call(users.list_users, srv.store)
    return render(request, "users.html", rows=rows, created=created, node_created=node_created,
                  node_removed=node_removed, roles=users.ROLES)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/nodes/{node}/remove", confirm_page)
    app.router.add_post("/nodes/{node}/remove", remove)
