"""The operator's API under /api/v1/admin/, with its own bearer tokens (never a node's key).

Tokens come from `floodwatch server admin-token` (stored hashed in the database), from the file named by
`apiserver.admin_token_file`, or from $FLOODWATCH_ADMIN_TOKEN. See docs/server.md for every route.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

from aiohttp import web

from floodwatch.server import auth, validate
from floodwatch.server.http import error, now, ok, read_json, server_of
from floodwatch.server.store import Conflict


async def _check(request: web.Request) -> None:
    srv = server_of(request)
    if not srv.settings.allow_remote_admin and not _loopback(request.remote):
        raise error(403, "the admin API answers loopback clients only")
    token = auth.bearer(request.headers.get("Authorization"))
    presented = auth.hash_secret(token or "")
    matched = _any_match(presented, await srv.admin_hashes())
    if not matched and token is not None:
        matched = _any_match(presented, await srv.admin_hashes(refresh=True))
    if token is None or not matched:
        srv.count("admin_auth_failures")
        raise error(401, "unauthorized: wrong or missing admin token")


def _any_match(presented: str, hashes: list[str]) -> bool:
    matched = False
    for h in hashes:  # every one compared: the time does not depend on which matched
        matched |= auth.secret_matches_hash(presented, h)
    return matched


def _loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


async def _node(request: web.Request) -> dict[str, Any]:
    srv = server_of(request)
    ref = validate.url_text(request.match_info["node"], "node")
    node = await srv.db.call(srv.store.find_node, ref, now(), srv.settings.offline_after)
    if node is None:
        raise error(404, f"node: no node {ref!r}")
    return dict(node)


def _int_query(request: web.Request, name: str, default: int, hi: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not validate.is_decimal(text) or not 0 < int(text) <= hi:
        raise error(400, f"{name}: expected an integer between 1 and {hi}")
    return int(text)


async def list_nodes(request: web.Request) -> web.Response:
    await _check(request)
    srv = server_of(request)
    return ok(await srv.db.call(srv.store.list_nodes, now(), srv.settings.offline_after))


async def add_node(request: web.Request) -> web.Response:
    await _check(request)
    srv = server_of(request)
    body = await read_json(request)
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not 0 < len(name.strip()) <= 128:
        raise error(400, "name: required, a string of 1 to 128 characters")
    try:
        created = await srv.create_node(name.strip())
    except Conflict as e:
        raise error(409, f"name: {e}") from None
    return ok(created, status=201)


async def show_node(request: web.Request) -> web.Response:
    await _check(request)
    srv = server_of(request)
    node = await _node(request)
    node["config"] = await srv.db.call(srv.store.node_config, node["node_id"])
    return ok(node)


async def set_config(request: web.Request) -> web.Response:
    await _check(request)
    srv = server_of(request)
    node = await _node(request)
    changes = validate.node_config(await read_json(request))
    await srv.db.call(srv.store.update_node_config, node["node_id"], changes)
    return ok(await srv.db.call(srv.store.node_config, node["node_id"]))


async def queue_command(request: web.Request) -> web.Response:
    await _check(request)
    srv = server_of(request)
    node = await _node(request)
    body = await read_json(request)
    if not isinstance(body, dict) or body.get("command") in (None, "", [], {}):
        raise error(400, "command: required")
    command_id = await srv.db.call(srv.store.queue_command, node["node_id"], body["command"], now())
    return ok({"command_id": command_id}, status=201)


async def list_commands(request: web.Request) -> web.Response:
    await _check(request)
    srv = server_of(request)
    node = await _node(request)
    return ok(await srv.db.call(srv.store.list_commands, node["node_id"]))


async def node_metrics(request: web.Request) -> web.Response:
    await _check(request)
    srv = server_of(request)
    node = await _node(request)
    since = -math.inf
    if "since" in request.query:
        try:
            since = validate.parse_time(request.query["since"]).timestamp()
        except ValueError as e:
            raise error(400, f"since: expected an ISO 8601 UTC timestamp ({e})") from None
    limit = _int_query(request, "limit", 1000, 100_000)
    return ok(await srv.db.call(srv.store.metrics, node["node_id"], since, limit))


async def list_incidents(request: web.Request) -> web.Response:
    await _check(request)
    srv = server_of(request)
    node_id = None
    if "node" in request.query:
        node = await srv.db.call(srv.store.find_node, validate.url_text(request.query["node"], "node"))
        if node is None:
            raise error(404, f"node: no node {request.query['node']!r}")
        node_id = node["node_id"]
    status = request.query.get("status")
    if status is not None and status not in validate.STATUSES:
        raise error(400, "status: must be active or resolved")
    limit = _int_query(request, "limit", 1000, 100_000)
    return ok(await srv.db.call(srv.store.list_incidents, node_id, status, limit))


def _incident_id(request: web.Request) -> int:
    text = request.match_info["incident_id"]
    if not validate.is_decimal(text) or not 0 < int(text) < 2**63:
        raise error(400, "incident_id: expected a positive integer")
    return int(text)


async def show_incident(request: web.Request) -> web.Response:
    await _check(request)
    srv = server_of(request)
    incident_id = _incident_id(request)
    found = await srv.db.call(srv.store.incident, incident_id, True)
    if found is None:
        raise error(404, f"incident_id: no incident {incident_id}")
    return ok(found)


async def fetch_pcap(request: web.Request) -> web.StreamResponse:
    await _check(request)
    srv = server_of(request)
    incident_id = _incident_id(request)
    meta = await srv.db.call(srv.store.pcap, incident_id)
    if meta is None:
        raise error(404, f"incident_id: no capture stored for incident {incident_id}")
    path = srv.pcap_dir / meta["file_name"]  # a name the server chose, never the client's
    return web.FileResponse(path, headers={
        "Content-Type": "application/vnd.tcpdump.pcap",
        "Content-Disposition": f'attachment; filename="incident-{incident_id}.pcap"',
        "X-Content-SHA256": meta["sha256"]})


async def health(request: web.Request) -> web.Response:
    await _check(request)
    return ok({"ok": True, "counters": server_of(request).snapshot()})


def add_routes(app: web.Application, prefix: str) -> None:
    r = app.router
    r.add_get(f"{prefix}/health", health)
    r.add_get(f"{prefix}/nodes", list_nodes)
    r.add_post(f"{prefix}/nodes", add_node)
    r.add_get(f"{prefix}/nodes/{{node}}", show_node)
    r.add_put(f"{prefix}/nodes/{{node}}/config", set_config)
    r.add_post(f"{prefix}/nodes/{{node}}/config", set_config)
    r.add_post(f"{prefix}/nodes/{{node}}/commands", queue_command)
    r.add_get(f"{prefix}/nodes/{{node}}/commands", list_commands)
    r.add_get(f"{prefix}/nodes/{{node}}/metrics", node_metrics)
    r.add_get(f"{prefix}/incidents", list_incidents)
    r.add_get(f"{prefix}/incidents/{{incident_id}}", show_incident)
    r.add_get(f"{prefix}/incidents/{{incident_id}}/pcap", fetch_pcap)
