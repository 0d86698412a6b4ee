"""The dashboard's pages (GET): fleet, node, incidents, incident, commands; chart data; live events."""

from __future__ import annotations

import calendar
import time
from typing import Any

from aiohttp import web

from floodwatch.server import rollup
from floodwatch.server.validate import FAMILIES, STATUSES, is_decimal
from floodwatch.server.web import dash_of, render, require, secure_headers
from floodwatch.server.web import queries as q


def _srv(request: web.Request) -> Any:
    return dash_of(request).server


async def fleet(request: web.Request) -> web.Response:
    require(request)
    srv = _srv(request)
    page_text, search = request.query.get("page", "0"), request.query.get("q", "")[:64]
    page = int(page_text) if page_text.isdigit() and len(page_text) < 7 else 0
    data = await srv.db.call(q.fleet, srv.store, time.time(), srv.settings.offline_after, page, search)
    return render(request, "fleet.html", page=page, search=search, **data)


async def node(request: web.Request) -> web.Response:
    require(request)
    srv = _srv(request)
    found = await srv.db.call(q.node_page, srv.store, request.match_info["node"], time.time(),
                              srv.settings.offline_after)
    if found is None:
        raise web.HTTPNotFound(reason="no such node")
    return render(request, "node.html", node=found, ranges=list(rollup.RANGES))


async def series(request: web.Request) -> web.Response:
    require(request, page=False)
    srv = _srv(request)
    span = rollup.RANGES.get(request.query.get("range", "1h"))
    if span is None:
        raise web.HTTPBadRequest(reason=f"range: one of {', '.join(rollup.RANGES)}")
    found = await srv.db.call(srv.store.find_node, request.match_info["node"])
    if found is None:
        raise web.HTTPNotFound(reason="no such node")
    data = await srv.db.call(q.node_series, srv.store, found["node_id"], float(span), time.time())
    return web.json_response(data, headers=secure_headers())


def _epoch(text: str | None, name: str) -> float | None:
    """'2026-11-28' or '2026-11-28T10:00' (UTC) -> epoch seconds."""
    if not text:
        return None
    for fmt in ("%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return float(calendar.timegm(time.strptime(text, fmt)))
        except ValueError:
            continue
    raise web.HTTPBadRequest(reason=f"{name}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)")


async def _filters(request: web.Request) -> dict[str, Any]:
    srv = _srv(request)
    qs = request.query
    f: dict[str, Any] = {"status": qs.get("status") or None, "family": qs.get("family") or None,
                         "since": _epoch(qs.get("since"), "since"), "until": _epoch(qs.get("until"), "until")}
    if f["status"] is not None and f["status"] not in STATUSES:
        raise web.HTTPBadRequest(reason="status: active or resolved")
    if f["family"] is not None and f["family"] not in FAMILIES:
        raise web.HTTPBadRequest(reason="family: unknown attack family")
    before = qs.get("before", "")
    f["before"] = int(before) if is_decimal(before) and len(before) < 19 else None
    if qs.get("node"):
        found = await srv.db.call(srv.store.find_node, qs["node"])
        f["node_id"] = found["node_id"] if found else -1
    return f


async def incidents(request: web.Request) -> web.Response:
    require(request)
    srv = _srv(request)
    f = await _filters(request)
    rows = await srv.db.call(q.incidents, srv.store, f, q.PAGE_SIZE + 1)
    more = len(rows) > q.PAGE_SIZE
    rows = rows[:q.PAGE_SIZE]
    args = {k: request.query[k] for k in ("node", "status", "family", "since", "until") if request.query.get(k)}
    names = await srv.db.call(q.node_names, srv.store)
    return render(request, "incidents.html", rows=rows, more=more, args=args, families=sorted(FAMILIES),
                  names=names, older=rows[-1]["incident_id"] if more and rows else None,
                  first_page="before" not in request.query)


def incident_id_of(request: web.Request) -> int:
    text = request.match_info["incident_id"]
    if not is_decimal(text) or not 0 < int(text) < 2**63:
        raise web.HTTPNotFound(reason="no such incident")
    return int(text)


async def incident(request: web.Request) -> web.Response:
    require(request)
    srv = _srv(request)
    found = await srv.db.call(q.incident_page, srv.store, incident_id_of(request))
    if found is None:
        raise web.HTTPNotFound(reason="no such incident")
    curve = [[h["received_at"], h["body"].get("peak_pps"), h["body"].get("peak_bps")] for h in found["history"]]
    dissection = _dissection(request, found)
    return render(request, "incident.html", inc=found, curve=curve, dissection=dissection)


def _dissection(request: web.Request, inc: dict[str, Any]) -> dict[str, Any]:
    """The capture's dissection: its state, and the findings once done (see dissection.py)."""
    dissections = dash_of(request).dissections
    meta = inc.get("pcap_file")
    if dissections is None or not meta:
        return {"state": "none", "findings": None, "error": None}
    state, value = dissections.state(meta)
    return {"state": state, "findings": value if state == "done" else None,
            "error": value if state == "failed" else None}


async def commands(request: web.Request) -> web.Response:
    require(request)
    srv = _srv(request)
    node_id = None
    if request.query.get("node"):
        found = await srv.db.call(srv.store.find_node, request.query["node"])
        node_id = found["node_id"] if found else -1
    rows = await srv.db.call(q.commands, srv.store, node_id, 0.0, 500)
    names = await srv.db.call(q.node_names, srv.store)
    return render(request, "commands.html", rows=rows, names=names, node=request.query.get("node", ""))


async def pcap(request: web.Request) -> web.StreamResponse:
    require(request)
    srv = _srv(request)
    incident_id = incident_id_of(request)
    meta = await srv.db.call(srv.store.pcap, incident_id)
    if meta is None:
        raise web.HTTPNotFound(reason="no capture stored for this incident")
    return web.FileResponse(srv.pcap_dir / meta["file_name"], headers={
        "Content-Type": "application/vnd.tcpdump.pcap", "X-Content-SHA256": meta["sha256"],
        "Content-Disposition": f'attachment; filename="incident-{incident_id}.pcap"'})


async def events(request: web.Request) -> web.StreamResponse:
    require(request, page=False)
    hub = dash_of(request).hub
    if hub is None:
        raise web.HTTPServiceUnavailable(reason="starting")
    return await hub.stream(request)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", fleet)
    r.add_get("/nodes/{node}", node)
    r.add_get("/incidents", incidents)
    r.add_get("/incidents/{incident_id}", incident)
    r.add_get("/incidents/{incident_id}/pcap", pcap)
    r.add_get("/commands", commands)
    r.add_get("/events", events)
    r.add_get("/dash/api/nodes/{node}/series", series)
