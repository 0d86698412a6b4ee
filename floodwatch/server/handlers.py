"""The agent endpoints of the API (parts A and B), except the pcap upload (upload.py)."""

from __future__ import annotations

from aiohttp import web

from floodwatch.server import partc, validate
from floodwatch.server.http import authenticate, now, ok, read_json, server_of
from floodwatch.server.validate import iso_from_epoch


async def heartbeat(request: web.Request) -> web.Response:
    """POST /heartbeat: the node is online; remembers its version, uptime and OS."""
    node_id = await authenticate(request)
    srv = server_of(request)
    hb = validate.heartbeat(await read_json(request))
    t = now()
    await srv.db.call(srv.store.record_heartbeat, node_id, hb, t)
    srv.count("heartbeats")
    return ok({"ok": True, "server_time": iso_from_epoch(t)})


async def metrics(request: web.Request) -> web.Response:
    """POST /metrics: one sample or an array of samples, each kept with its own recorded_at."""
    node_id = await authenticate(request)
    srv = server_of(request)
    t = now()
    samples = validate.metrics(await read_json(request), t, srv.settings.max_metrics_batch)
    if samples:
        await srv.db.call(srv.store.add_metrics, node_id, samples, t)
    srv.count("metric_samples", len(samples))
    return ok({"accepted": len(samples)})


async def incident(request: web.Request) -> web.Response:
    """POST /incident: open (201), find by incident_key (200) or update/resolve by incident_id (200)."""
    node_id = await authenticate(request)
    srv = server_of(request)
    inc = validate.incident(await read_json(request))
    incident_id, created = await srv.db.call(srv.store.upsert_incident, node_id, inc, now())
    srv.count("incidents_opened" if created else "incident_updates")
    return ok({"incident_id": incident_id}, status=201 if created else 200)


async def config(request: web.Request) -> web.Response:
    """GET /config: thresholds, baseline, IOC patterns and the commands not acknowledged yet."""
    node_id = await authenticate(request)
    srv = server_of(request)
    body = await srv.db.call(srv.store.node_config, node_id)
    body["pending_commands"] = await srv.db.call(srv.store.pending_commands, node_id, now())
    srv.count("config_fetches")
    return ok(partc.answer_config(body, request))


async def command_ack(request: web.Request) -> web.Response:
    """POST /commands/ack: a command acknowledged is never pending again; a repeat is harmless."""
    node_id = await authenticate(request)
    srv = server_of(request)
    ack = validate.ack(await read_json(request))
    first = await srv.db.call(srv.store.ack_command, node_id, ack, now())
    srv.count("command_acks")
    return ok({"ok": True, "command_id": ack["command_id"], "duplicate": not first})


def add_routes(app: web.Application, prefix: str) -> None:
    from floodwatch.server.upload import pcap

    app.router.add_post(f"{prefix}/heartbeat", heartbeat)
    app.router.add_post(f"{prefix}/metrics", metrics)
    app.router.add_post(f"{prefix}/incident", incident)
    app.router.add_post(f"{prefix}/pcap", pcap)
    app.router.add_get(f"{prefix}/config", config)
    app.router.add_post(f"{prefix}/commands/ack", command_ack)
