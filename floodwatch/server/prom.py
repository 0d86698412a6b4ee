"""GET /metrics on the server (embedded and `floodwatch server`): the fleet and the server itself in
the Prometheus text format (docs/metrics.md lists every metric).

What a scrape costs is bounded whatever the fleet's size: nodes are counted by status in one query,
active incidents by family in one (a covering index, status + family, keeps it off the rows), and the per-node
series (last pps/bps, from the rollups' node_latest) cover at most `[apiserver] metrics_max_nodes` nodes,
the most recently seen first, in one more; families beyond MAX_FAMILIES are summed as family="other".
Request latency is measured by a middleware here, per route pattern (never the raw path), method and
status class; storage latency by the database thread, per store operation and per commit.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from floodwatch import __version__
from floodwatch.prom.access import read_token, refusal
from floodwatch.prom.text import CONTENT_TYPE, COUNTER, GAUGE, HISTOGRAM, Exposition, Histogram, metric_name
from floodwatch.server.http import error
from floodwatch.server.store import Store

if TYPE_CHECKING:
    from floodwatch.server.app import ApiServer

# Active incidents by family are counted without touching the table's rows by the index incidents_status_family
# (25 ms -> 3 ms at 5,000 of 100,000 active; schema version 3, migrations.py).
MAX_FAMILIES = 50  # incident families exported one by one; the rest are summed as "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def fleet_overview(store: Store, now: float, offline_after: float, max_nodes: int) -> dict[str, Any]:
    """Nodes by status, active incidents by family, the latest sample of the most recently seen nodes.
    Runs in the database thread (SQL both backends run)."""
    row = store.execute("SELECT COUNT(*), COUNT(*) FILTER (WHERE last_seen_at IS NULL), "
                        "COUNT(*) FILTER (WHERE last_seen_at >= ?) FROM nodes", (now - offline_after,)).fetchone()
    total, new, online = int(row[0]), int(row[1]), int(row[2])
    families = [(str(r[0]), int(r[1])) for r in store.execute(
        "SELECT attack_family, COUNT(*) FROM incidents WHERE status = 'active' GROUP BY attack_family "
        "ORDER BY COUNT(*) DESC, attack_family").fetchall()]
    rows = store.execute(  # node_latest: each node's newest sample, kept by the rollups
        "SELECT n.name, n.last_seen_at, l.pps, l.bps FROM nodes n LEFT JOIN node_latest l ON l.node_id = n.id "
        "WHERE n.last_seen_at IS NOT NULL ORDER BY n.last_seen_at DESC, n.id LIMIT ?", (max_nodes,)).fetchall()
    nodes = [{"name": str(r[0]), "last_seen": float(r[1]), "online": r[1] >= now - offline_after,
              "pps": r[2], "bps": r[3]} for r in rows]
    return {"nodes": {"online": online, "offline": total - new - online, "new": new}, "families": families,
            "node_rows": nodes, "omitted": max(0, total - new - len(nodes))}


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


def route_of(request: web.Request) -> str:
    """The matched route's pattern (`/api/v1/agent/incidents/{id}`), or "unmatched": never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


class ServerMetrics:
    """The /metrics route, the request-latency middleware and the storage-latency histogram."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        settings = server.settings
        self.token = read_token(settings.metrics_token_file, "apiserver.metrics_token_file")
        self.requests = Histogram(("route", "method", "code"))
        self.storage = Histogram(("operation",))
        self.started = time.time()
        server.db.on_timing = self.storage.observe

    def add_routes(self, app: web.Application) -> None:
        if self.server.settings.metrics_endpoint:
            app.router.add_get("/metrics", self.scrape)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        t0 = time.perf_counter()
        status = 500
        try:
            response: web.StreamResponse = await handler(request)
            status = response.status
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            method = request.method if request.method in METHODS else "other"
            self.requests.observe(time.perf_counter() - t0, route_of(request), method, status_class(status))

    async def scrape(self, request: web.Request) -> web.Response:
        refused = refusal(request.remote, request.headers.get("Authorization"), self.token)
        if refused is not None:
            headers = {"WWW-Authenticate": 'Bearer realm="metrics"'} if refused[0] == 401 else None
            raise error(refused[0], refused[1], headers)
        s = self.server.settings
        overview = await self.server.db.call(fleet_overview, self.server.store, time.time(), s.offline_after,
                                             s.metrics_max_nodes)
        return web.Response(body=self.render(overview).encode(), headers={"Content-Type": CONTENT_TYPE})

    def render(self, overview: dict[str, Any]) -> str:
        out = Exposition()
        out.add("floodwatch_server_info", GAUGE, "The server's version (value 1).", 1, {"version": __version__})
        out.add("floodwatch_server_start_time_seconds", GAUGE, "When the server started (epoch seconds).",
                self.started)
        nodes = out.family("floodwatch_server_nodes", GAUGE, "Nodes by status (new: never seen).")
        for status, n in overview["nodes"].items():
            nodes.add(n, {"status": status})
        self._families(out, overview["families"])
        self._nodes(out, overview)
        self.requests.export(out.family("floodwatch_server_http_request_duration_seconds", HISTOGRAM,
                                        "Requests by route pattern, method and status class, and how long "
                                        "they took (_count: the number of requests)."))
        self.storage.export(out.family("floodwatch_server_storage_operation_duration_seconds", HISTOGRAM,
                                       "Database work in the database thread: one store operation, or a commit "
                                       "(operation=\"commit\")."))
        for name, value in sorted(self.server.snapshot().items()):
            if isinstance(value, int | float) and not isinstance(value, bool):
                out.add(metric_name("floodwatch_server", name, "total"), COUNTER,
                        f"The server's {name} counter (docs/metrics.md).", value)
        return out.render()

    def _families(self, out: Exposition, families: list[tuple[str, int]]) -> None:
        fam = out.family("floodwatch_server_incidents_active", GAUGE,
                         f"Incidents not resolved, by attack family (beyond {MAX_FAMILIES} families: other).")
        for family, n in families[:MAX_FAMILIES]:
            fam.add(n, {"family": family})
        rest = sum(n for _, n in families[MAX_FAMILIES:])
        if rest:
            fam.add(rest, {"family": "other"})
        out.add("floodwatch_server_incidents_active_all", GAUGE, "Incidents not resolved, all families.",
                sum(n for _, n in families))

    def _nodes(self, out: Exposition, overview: dict[str, Any]) -> None:
        cap = self.server.settings.metrics_max_nodes
        pps = out.family("floodwatch_server_node_last_pps", GAUGE,
                         f"Packets per second in a node's latest sample (the {cap} most recently seen nodes).")
        bps = out.family("floodwatch_server_node_last_bps", GAUGE, "Bits per second in a node's latest sample.")
        seen = out.family("floodwatch_server_node_last_seen_timestamp_seconds", GAUGE,
                          "When a node was last heard from (epoch seconds).")
        online = out.family("floodwatch_server_node_online", GAUGE, "1 while a node is online, else 0.")
        for row in overview["node_rows"]:
            labels = {"node": row["name"]}
            seen.add(row["last_seen"], labels)
            online.add(int(row["online"]), labels)
            if row["pps"] is not None:
                pps.add(row["pps"], labels)
                bps.add(row["bps"], labels)
        out.add("floodwatch_server_nodes_omitted", GAUGE,
                "Seen nodes left out of the per-node series by [apiserver] metrics_max_nodes.", overview["omitted"])
