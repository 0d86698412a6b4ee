"""Part C of the Agent API: what Flowtriq's official agent (`ftagent`) really sends, served beside part A.

Every part-C request is mapped onto the same store operations as part A (upsert_incident, set_pcap,
the same config and ack), so an incident opened by either dialect looks the same to an operator:

    POST incidents                 open: {"uuid", "incident_id"}; the uuid is the incident's key
    POST incidents/{uuid}          update (an unknown uuid opens the incident: the agent goes on with a
                                   local uuid when its open failed)
    POST incidents/{uuid}/resolve  resolution (status and ended_at derived: started_at + duration_seconds)
    POST incidents/{uuid}/pcap     multipart field `pcap`, or raw chunks (chunks.py)

Differences absorbed here: floats for counts (rounded, validate._count), no `severity` (derived from the
peak over the node's threshold with the detector's own severity_of), families outside part A's list
(kept as sent), `ioc_hits` for `ioc_matches`, and zero/empty source fields (a resolve sends
`source_ip_count: 0`, `top_src_ips: []`) treated as absent so they never erase what updates stored.
Overload is answered 503 + Retry-After instead of 429 to part-C clients, which drop every 4xx.
The agent's other endpoints (gre-tunnels, vm-stats, sp/*, l7/*, mirror-metrics) answer 404: nothing
is stored for them, and the agent only logs a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from floodwatch.detect.classify import severity_of
from floodwatch.server import auth, validate
from floodwatch.server.chunks import ChunkedUploads
from floodwatch.server.http import SERVER_KEY, ApiError, authenticate, error, now, ok, read_json, server_of
from floodwatch.server.upload import Received, _read_form, _store

CLIENT_PREFIX = "ftagent/"  # the official agent's User-Agent
INCIDENT_KEY = r"{uuid:[A-Za-z0-9_-]{1,128}}"
KEY_NAMESPACE = uuid.UUID("6f1c1a52-3b0e-4f7e-9c55-8a1d2f0c9e11")  # keys made from a node and a start time
SOURCE_FIELDS = ("source_ip_count", "top_src_ips", "top_dst_ports", "geo_breakdown", "tcp_flag_breakdown",
                 "protocol_breakdown", "ioc_matches")
COMMAND_TYPES = frozenset({"iptables", "xdp", "shell"})
UNSUPPORTED = ("gre-tunnels", "vm-stats", "sp/metrics", "sp/blocks", "l7/detect", "l7/metrics", "mirror-metrics")
UPLOADS_KEY: web.AppKey[ChunkedUploads] = web.AppKey("partc_uploads")
EXPIRE_EVERY = 10.0


# -- pure mapping --------------------------------------------------------------------------------
def incident_key(body: dict[str, Any], node_uuid: str) -> str:
    """The key (and uuid answered) of a new incident: the body's own `incident_key` when it sends one
    (floodwatch's reporter), else one derived from the node and `started_at`, so a retried open after a
    lost answer finds the same incident, else a random one."""
    given = body.get("incident_key")
    if isinstance(given, str) and validate_key(given):
        return given
    started = body.get("started_at")
    if isinstance(started, str) and started:
        return str(uuid.uuid5(KEY_NAMESPACE, f"{node_uuid}|{started}"))
    return str(uuid.uuid4())


def validate_key(text: str) -> bool:
    return 0 < len(text) <= 128 and all(c.isalnum() or c in "-_" for c in text) and text.isascii()


def _empty(v: Any) -> bool:
    if v is None or v == 0 or v in ([], {}):
        return True
    return isinstance(v, dict) and all(isinstance(n, int | float) and n == 0 for n in v.values())


def normalise(body: dict[str, Any], kind: str, threshold: float, started_at: float | None,
              received: float, opening: bool) -> dict[str, Any]:
    """A part-C incident body -> a part-A/B body for validate.incident (kind: open, update, resolve;
    `opening`: the incident does not exist yet, so the body must open it)."""
    out = {k: v for k, v in body.items() if k not in ("incident_id", "incident_key", "status")}
    if "ioc_hits" in out and "ioc_matches" not in out:
        out["ioc_matches"] = out.pop("ioc_hits")
    for k in SOURCE_FIELDS:
        if k in out and _empty(out[k]):
            del out[k]  # never erase what an update stored with a resolve's zeros
    flags = out.get("tcp_flag_breakdown")
    if isinstance(flags, dict):
        out["tcp_flag_breakdown"] = {f: round(n) if isinstance(n, float) else n for f, n in flags.items()}
    if out.get("severity") is None and (opening or "peak_pps" in out or "peak_bps" in out):
        out["severity"] = severity_of(round(_number(out.get("peak_pps"))), round(_number(out.get("peak_bps"))),
                                      threshold)
    if opening and not out.get("attack_family"):
        out["attack_family"] = "unknown"
    if kind == "resolve":
        out["status"] = "resolved"
        if not out.get("ended_at"):
            duration = _number(out.get("duration_seconds"))
            end = started_at + duration if started_at is not None and duration > 0 else received
            out["ended_at"] = validate.iso_from_epoch(end)
    return out


def _number(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0


def command_for_agent(cmd: dict[str, Any]) -> dict[str, Any]:
    """A pending command as the official agent reads it: `command_text`, `command_type`, `title`, beside
    part A's `id` and `command`. A structured command (an object) is passed as its JSON text unless it
    carries its own `command_text`; the type is `iptables` unless the command names another."""
    command = cmd.get("command")
    text: Any = command
    ctype: Any = "iptables"
    title: Any = ""
    if isinstance(command, dict):
        text = command.get("command_text") or command.get("command")
        ctype = command.get("command_type") if command.get("command_type") in COMMAND_TYPES else "iptables"
        title = command.get("title") if isinstance(command.get("title"), str) else ""
    if not isinstance(text, str):
        text = json.dumps(command)
    return {**cmd, "command_text": text, "command_type": ctype, "title": title or text[:80]}


def ioc_for_agent(pattern: Any, strings_too: bool) -> Any:
    """An IOC pattern with `attack_name` (the official agent's name for `name`); a plain string becomes an
    object when `strings_too` (the official agent skips strings; part B's agents take them)."""
    if isinstance(pattern, str) and strings_too:
        return {"pattern": pattern, "name": pattern[:64], "attack_name": pattern[:64], "attack_family": "unknown"}
    if isinstance(pattern, dict) and "attack_name" not in pattern:
        return {**pattern, "attack_name": pattern.get("name") or pattern.get("pattern")}
    return pattern


def answer_config(body: dict[str, Any], request: web.Request) -> dict[str, Any]:
    """Part C's additions to the GET /config answer: extra fields, so part A's clients are unaffected."""
    body["pending_commands"] = [command_for_agent(c) for c in body.get("pending_commands", [])]
    body["ioc_patterns"] = [ioc_for_agent(p, speaks_partc(request)) for p in body.get("ioc_patterns", [])]
    return body


def speaks_partc(request: web.Request) -> bool:
    """A client of part C: the official agent's User-Agent, or a route only part C has."""
    ua = request.headers.get("User-Agent", "")
    return ua.startswith(CLIENT_PREFIX) or "/agent/incidents" in request.path


# -- handlers ------------------------------------------------------------------------------------
async def _threshold(request: web.Request, node_id: int) -> float:
    srv = server_of(request)
    config = await srv.db.call(srv.store.node_config, node_id)
    return float(config.get("pps_threshold") or 0)


async def _body(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise error(400, "body: expected a JSON object")
    return body


async def open_incident(request: web.Request) -> web.Response:
    node_id = await authenticate(request)
    srv = server_of(request)
    body = await _body(request)
    key = incident_key(body, auth.canonical_uuid(request.headers.get("X-Node-UUID")) or "")
    t = now()
    mapped = normalise(body, "open", await _threshold(request, node_id), None, t, opening=True)
    inc = validate.incident(mapped, any_family=True)
    inc.update(incident_key=key, raw=body)
    incident_id, created = await srv.db.call(srv.store.upsert_incident, node_id, inc, t)
    srv.count("incidents_opened" if created else "incident_updates")
    return ok({"uuid": key, "incident_id": incident_id}, status=201 if created else 200)


async def _change(request: web.Request, kind: str) -> web.Response:
    node_id = await authenticate(request)
    srv = server_of(request)
    key = request.match_info["uuid"]
    body = await _body(request)
    found = await srv.db.call(srv.store.incident_by_key, node_id, key)
    t = now()
    # an unknown uuid opens the incident (the agent goes on with a local uuid when its open failed)
    mapped = normalise(body, kind, await _threshold(request, node_id), found[1] if found else None, t,
                       opening=found is None)
    if found:  # a known incident: validated as an update (a resolve carries no family or severity)
        mapped["incident_id"] = found[0]
    inc = validate.incident(mapped, any_family=True)
    inc.update(incident_key=key, raw=body, incident_id=found[0] if found else None)
    incident_id, created = await srv.db.call(srv.store.upsert_incident, node_id, inc, t)
    srv.count("incidents_opened" if created else "incident_updates")
    return ok({"uuid": key, "incident_id": incident_id, "status": inc.get("status") or "active"})


async def update_incident(request: web.Request) -> web.Response:
    return await _change(request, "update")


async def resolve_incident(request: web.Request) -> web.Response:
    return await _change(request, "resolve")


async def _pcap_part(request: web.Request) -> Received:
    """The multipart shape: one file in field `pcap` (`file` is accepted too), other fields skipped."""
    _, received = await _read_form(request, server_of(request).pcap_dir, ("pcap", "file"))
    if received is None:
        raise error(400, "pcap: required (a file field named pcap)")
    return received


async def incident_pcap(request: web.Request) -> web.Response:
    node_id = await authenticate(request)
    srv = server_of(request)
    key = request.match_info["uuid"]
    found = await srv.db.call(srv.store.incident_by_key, node_id, key)
    if found is None:
        raise error(404, f"incident: no incident {key} for this node")
    if "X-Upload-Id" in request.headers:
        received = await request.app[UPLOADS_KEY].receive(request, node_id, found[0])
        if received is None:
            srv.count("pcap_chunks")
            return ok({"uuid": key, "complete": False}, status=202)
    else:
        received = await _pcap_part(request)
    try:
        answer = await _store(request, node_id, str(found[0]), received)
    finally:
        received.path.unlink(missing_ok=True)
    answer.text = json.dumps({**json.loads(answer.text or "{}"), "uuid": key, "complete": True})
    return answer


async def unsupported(request: web.Request) -> web.Response:
    await authenticate(request)
    server_of(request).count("partc_unsupported")
    raise error(404, f"{request.path.rsplit('/agent/', 1)[-1]}: not supported by this server (nothing stored)")


@web.middleware
async def overload_as_503(request: web.Request, handler: Any) -> web.StreamResponse:
    """Part-C clients drop every 4xx without retrying: tell them about overload with 503 instead of 429."""
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except ApiError as e:
        if e.status == 429 and speaks_partc(request):
            server_of(request).count("overload_as_503")
            raise error(503, e.message, e.headers) from None
        raise


async def _expiry(app: web.Application) -> AsyncIterator[None]:
    srv = app[SERVER_KEY]
    uploads = ChunkedUploads(srv.pcap_dir, srv.settings.max_upload_bytes, srv.settings.read_timeout)
    app[UPLOADS_KEY] = uploads

    async def sweep() -> None:
        while True:
            await asyncio.sleep(EXPIRE_EVERY)
            if uploads.expire():
                srv.count("pcap_uploads_expired")

    task = asyncio.ensure_future(sweep())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    uploads.close()


def add_routes(app: web.Application, prefix: str) -> None:
    """Part C's routes and its overload rule. (heartbeat, metrics, config and commands/ack are shared
    with part A: handlers.py, with validate's aliases and answer_config above.) The overload rule only
    where there is overload to tell: with the per-node rate limit on (the only 429 of the agent API)."""
    if app[SERVER_KEY].limiter.enabled:
        app.middlewares.append(overload_as_503)
    app.cleanup_ctx.append(_expiry)
    app.router.add_post(f"{prefix}/incidents", open_incident)
    app.router.add_post(f"{prefix}/incidents/{INCIDENT_KEY}", update_incident)
    app.router.add_post(f"{prefix}/incidents/{INCIDENT_KEY}/resolve", resolve_incident)
    app.router.add_post(f"{prefix}/incidents/{INCIDENT_KEY}/pcap", incident_pcap)
    for path in UNSUPPORTED:
        app.router.add_post(f"{prefix}/{path}", unsupported)
