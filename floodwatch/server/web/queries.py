"""The dashboard's reads: each one a few indexed queries (they run in the database thread), written once
in SQL both backends run (`Store.execute`, `?` placeholders)."""

from __future__ import annotations

import json
import time
from typing import Any

from floodwatch.server import rollup
from floodwatch.server.sqlite_store import _INCIDENT_SELECT, _incident, node_row
from floodwatch.server.store import Store

PAGE_SIZE = 50
FLEET_PAGE = 100
SPARK_SECONDS = 900


def like_pattern(search: str) -> str:
    """A case-insensitive LIKE pattern (with ESCAPE '\\') matching names that contain `search` literally."""
    escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _in(ids: list[int]) -> str:
    return ",".join("?" * len(ids))


def fleet(store: Store, now: float, offline_after: float, page: int = 0, search: str = "",
          per_page: int = FLEET_PAGE) -> dict[str, Any]:
    """One page of nodes, attacked first (then by name), each with its newest sample, 15-minute sparkline
    and active incidents; and the fleet's totals. A few queries whatever the fleet's size (the nodes
    table is read whole to sort it; incidents and samples through indexes)."""
    where, args = ("WHERE lower(n.name) LIKE ? ESCAPE '\\' ", (like_pattern(search),)) if search else ("", ())
    sql = ("SELECT n.id, coalesce(a.k, 0) AS active FROM nodes n LEFT JOIN (SELECT node_id, count(*) AS k FROM "  # noqa: S608
           f"incidents WHERE status = 'active' GROUP BY node_id) a ON a.node_id = n.id {where}"
           "ORDER BY active DESC, n.name LIMIT ? OFFSET ?")
    rows = store.execute(sql, (*args, per_page + 1, page * per_page)).fetchall()
    more = len(rows) > per_page
    active = {int(r[0]): int(r[1]) for r in rows[:per_page]}
    ids = list(active)
    by_id, latest = {}, {}
    if ids:
        by_id = {int(r["id"]): node_row(r, now, offline_after) for r in store.execute(
            f"SELECT * FROM nodes WHERE id IN ({_in(ids)})", tuple(ids)).fetchall()}  # noqa: S608 - placeholders
        latest = {int(r[0]): tuple(r[1:]) for r in store.execute(
            f"SELECT node_id, recorded_at, pps, bps FROM node_latest WHERE node_id IN ({_in(ids)})", tuple(ids))}  # noqa: S608
    sparks = rollup.sparklines(store, now - SPARK_SECONDS, ids)
    nodes = []
    for nid, count in active.items():
        n = by_id[nid]
        t, pps, bps = latest.get(nid, (None, None, None))
        n.update(pps=pps, bps=bps, sample_at=t, active_incidents=count, spark=[p for _, p in sparks.get(nid, [])])
        nodes.append(n)
    total, online = store.execute("SELECT count(*), count(*) FILTER (WHERE last_seen_at >= ?) FROM nodes",
                                  (now - offline_after,)).fetchone()
    attacked = store.execute("SELECT count(DISTINCT node_id) FROM incidents WHERE status = 'active'").fetchone()[0]
    return {"nodes": nodes, "more": more, "total": int(total), "online": int(online), "attacked": int(attacked)}


def node_page(store: Store, ref: str, now: float, offline_after: float) -> dict[str, Any] | None:
    node = store.find_node(ref, now, offline_after)
    if node is None:
        return None
    node["config"] = store.node_config(node["node_id"])
    row = store.execute("SELECT recorded_at, pps, bps FROM node_latest WHERE node_id = ?",
                        (node["node_id"],)).fetchone()
    node.update(pps=row[1] if row else None, bps=row[2] if row else None)
    node["recent_incidents"] = incidents(store, {"node_id": node["node_id"]}, limit=10)
    return node


def node_series(store: Store, node_id: int, span: float, now: float) -> dict[str, Any]:
    """The chart's data: points at the range's resolution plus the incidents to shade."""
    out = rollup.series(store, node_id, now - span, now)
    rows = store.execute(
        "SELECT id, started_at, coalesce(ended_at, ?), attack_family, severity FROM incidents WHERE node_id = ? "
        "AND started_at <= ? AND coalesce(ended_at, ?) >= ? ORDER BY started_at DESC LIMIT 500",
        (now, node_id, now, now, now - span)).fetchall()
    out["incidents"] = [{"id": r[0], "start": r[1], "end": r[2], "family": r[3], "severity": r[4]} for r in rows]
    return out


INCIDENT_FILTERS = (("node_id", "i.node_id = ?"), ("status", "i.status = ?"), ("family", "i.attack_family = ?"),
                    ("since", "i.started_at >= ?"), ("until", "i.started_at <= ?"), ("before", "i.id < ?"))


def incidents(store: Store, f: dict[str, Any], limit: int = PAGE_SIZE) -> list[dict[str, Any]]:
    """Newest first, filtered by node_id, status, family, since/until (epoch), older than `before` (id)."""
    where, args = [], []
    for key, sql in INCIDENT_FILTERS:
        if f.get(key) is not None:
            where.append(sql)
            args.append(f[key])
    sql = _INCIDENT_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY i.id DESC LIMIT ?"
    return [_incident(r) for r in store.execute(sql, (*args, limit)).fetchall()]


def commands(store: Store, node_id: int | None, since: float = 0.0, limit: int = 200) -> list[dict[str, Any]]:
    """Newest first; one node's (through its index) or the whole fleet's."""
    by_node, args = ("c.node_id = ? AND ", (node_id,)) if node_id is not None else ("", ())
    sql = ("SELECT c.*, n.name AS node_name FROM commands c JOIN nodes n ON n.id = c.node_id "  # noqa: S608
           f"WHERE {by_node}c.created_at >= ? ORDER BY c.id DESC LIMIT ?")
    rows = store.execute(sql, (*args, since, limit)).fetchall()
    return [{"id": r["id"], "node_name": r["node_name"], "command": json.loads(r["command"]),
             "created_at": r["created_at"], "delivered_at": r["delivered_at"], "acked_at": r["acked_at"],
             "status": r["ack_status"] or ("delivered" if r["delivered_at"] else "queued"),
             "error": r["ack_error"], "output": r["ack_output"]} for r in rows]


def incident_page(store: Store, incident_id: int) -> dict[str, Any] | None:
    inc = store.incident(incident_id, history=True)
    if inc is None:
        return None
    row = store.execute("SELECT node_id, created_at FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    inc["node_id"] = row[0]
    pcap = store.pcap(incident_id)
    inc["pcap_file"] = pcap["file_name"] if pcap else None
    inc["commands"] = commands(store, row[0], since=row[1], limit=100)
    inc["http"] = http_details(inc["history"])
    return inc


def _rows(v: Any, name: str) -> list[tuple[str, int]]:
    rows = v if isinstance(v, list) else []
    return [(str(r[name])[:300], r["count"]) for r in rows[:20]
            if isinstance(r, dict) and name in r and isinstance(r.get("count"), int)]


def http_details(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """An http_flood's details from the latest report that carried them (docs/weblog.md: http_site,
    http_top_paths, ...), shapes checked (an agent sent them); None when no report did."""
    for h in reversed(history):
        b = h["body"]
        if not any(k in b for k in ("http_site", "http_top_paths", "http_top_agents")):
            continue
        mix = b.get("http_status_mix")
        props = b.get("mitigation_proposals")
        return {"site": str(b.get("http_site") or "")[:300], "paths": _rows(b.get("http_top_paths"), "path"),
                "agents": _rows(b.get("http_top_agents"), "agent"),
                "status_mix": mix if isinstance(mix, dict) else {},
                "proposals": [str(p)[:500] for p in props[:20]] if isinstance(props, list) else []}
    return None


def node_names(store: Store) -> list[str]:
    return [str(r[0]) for r in store.execute("SELECT name FROM nodes ORDER BY name LIMIT 5000")]


def now() -> float:
    return time.time()
