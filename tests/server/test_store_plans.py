"""The queries every agent request runs are served by an index on both backends (EXPLAIN), so their cost
does not grow with the fleet's history. SQLite: no SCAN at all (not even of a whole index). PostgreSQL
is asked with sequential scans disabled: a plan that still scans the table means no index answers it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.pgcluster import PgCluster

_INCIDENTS = ("SELECT i.*, n.uuid AS node_uuid, n.name AS node_name, p.bytes AS pcap_bytes, p.sha256 AS pcap_sha256 "
              "FROM incidents i JOIN nodes n ON n.id = i.node_id LEFT JOIN pcaps p ON p.incident_id = i.id")
# (what runs it, the query as the stores send it, with ? for parameters)
PER_REQUEST = [
    ("auth (every request)", "SELECT id, key_hash FROM nodes WHERE uuid = ?", ("u",)),
    ("incident open retried", "SELECT id, started_at FROM incidents WHERE node_id = ? AND incident_key = ?", (1, "k")),
    ("incident update", "SELECT id, incident_key, status, details FROM incidents WHERE id = ? AND node_id = ?",
     (1, 1)),
    ("config fetch", "SELECT id, command FROM commands WHERE node_id = ? AND acked_at IS NULL ORDER BY id LIMIT 1000",
     (1,)),
    ("command ack", "SELECT acked_at FROM commands WHERE id = ? AND node_id = ?", (1, 1)),
    ("admin: metrics", "SELECT * FROM metrics WHERE node_id = ? AND recorded_at >= ? ORDER BY recorded_at, id "
     "LIMIT ?", (1, 0.0, 100)),
    ("admin: incident history", "SELECT received_at, kind, body FROM incident_history WHERE incident_id = ? "
     "ORDER BY id", (1,)),
    ("admin: incident", "SELECT i.*, n.uuid FROM incidents i JOIN nodes n ON n.id = i.node_id "
     "LEFT JOIN pcaps p ON p.incident_id = i.id WHERE i.id = ?", (1,)),
    ("admin: a node's commands", "SELECT * FROM commands WHERE node_id = ? ORDER BY id", (1,)),
    ("metrics retention", "DELETE FROM metrics WHERE recorded_at < ?", (0.0,)),
    ("admin: a node's incidents", f"{_INCIDENTS} WHERE i.node_id = ? ORDER BY i.id DESC LIMIT ?", (1, 100)),
    ("admin: incidents by status", f"{_INCIDENTS} WHERE i.status = ? ORDER BY i.id DESC LIMIT ?", ("active", 100)),
    # the dashboard (web/sessions.py, users.py, queries.py, live.py, rollup.py)
    ("dash: session", "SELECT s.csrf, s.seen_at, u.name, u.role FROM dash_sessions s JOIN dash_users u "
     "ON u.name = s.user_name WHERE s.token_hash = ?", ("h",)),
    ("dash: session used", "UPDATE dash_sessions SET seen_at = ? WHERE token_hash = ?", (1.0, "h")),
    ("dash: sessions expired", "DELETE FROM dash_sessions WHERE seen_at < ?", (1.0,)),
    ("dash: sign-in failures", "SELECT at FROM dash_login_failures WHERE key = ? AND at > ? ORDER BY at DESC "
     "LIMIT ?", ("a:x", 1.0, 5)),
    ("dash: sign-in failures expired", "DELETE FROM dash_login_failures WHERE at <= ?", (1.0,)),
    ("dash: user", "SELECT name, role, pw_hash FROM dash_users WHERE name = ?", ("u",)),
    ("dash: fleet page nodes", "SELECT * FROM nodes WHERE id IN (?, ?)", (1, 2)),
    ("dash: fleet page samples", "SELECT node_id, recorded_at, pps, bps FROM node_latest WHERE node_id IN (?, ?)",
     (1, 2)),
    ("dash: sparklines", "SELECT node_id, t, pps_sum * 1.0 / n FROM metrics_1m WHERE node_id IN (?, ?) AND t >= ? "
     "ORDER BY node_id, t", (1, 2, 0)),
    ("dash: node's sample", "SELECT recorded_at, pps, bps FROM node_latest WHERE node_id = ?", (1,)),
    ("dash: chart, raw", "SELECT recorded_at, pps, pps, bps, bps, coalesce(tcp_pct, 0), coalesce(udp_pct, 0), "
     "coalesce(icmp_pct, 0) FROM metrics WHERE node_id = ? AND recorded_at >= ? AND recorded_at <= ? "
     "ORDER BY recorded_at", (1, 0.0, 1.0)),
    ("dash: chart, 1 min", "SELECT (t / 600) * 600 AS b, sum(pps_sum) * 1.0 / sum(n), max(pps_max) FROM metrics_1m "
     "WHERE node_id = ? AND t >= ? AND t <= ? GROUP BY b ORDER BY b", (1, 0, 1)),
    ("dash: chart, 1 h", "SELECT (t / 3600) * 3600 AS b, sum(pps_sum) * 1.0 / sum(n), max(pps_max) FROM metrics_1h "
     "WHERE node_id = ? AND t >= ? AND t <= ? GROUP BY b ORDER BY b", (1, 0, 1)),
    ("dash: chart's incidents", "SELECT id, started_at, coalesce(ended_at, ?), attack_family, severity FROM "
     "incidents WHERE node_id = ? AND started_at <= ? AND coalesce(ended_at, ?) >= ? ORDER BY started_at DESC "
     "LIMIT 500", (1.0, 1, 1.0, 1.0, 0.0)),
    ("dash: incidents by family", f"{_INCIDENTS} WHERE i.attack_family = ? ORDER BY i.id DESC LIMIT ?",
     ("udp_flood", 51)),
    ("dash: a node's active incidents", f"{_INCIDENTS} WHERE i.node_id = ? AND i.status = ? ORDER BY i.id DESC "
     "LIMIT ?", (1, "active", 51)),
    ("dash: incident page", "SELECT node_id, created_at FROM incidents WHERE id = ?", (1,)),
    ("dash: a node's commands", "SELECT c.*, n.name AS node_name FROM commands c JOIN nodes n ON n.id = c.node_id "
     "WHERE c.node_id = ? AND c.created_at >= ? ORDER BY c.id DESC LIMIT ?", (1, 0.0, 100)),
    ("dash: live, a node's active count", "SELECT count(*) FROM incidents WHERE status = 'active' AND node_id = ?",
     (1,)),
    ("dash: rollups retention", "DELETE FROM metrics_1m WHERE t < ?", (0,)),
]
# Newest-first pages of the whole fleet's rows: an index walked in order, stopping at LIMIT (never a sort
# of the table).
WALKS = [
    ("dash: incidents", f"{_INCIDENTS} ORDER BY i.id DESC LIMIT ?", (51,)),
    ("dash: older incidents", f"{_INCIDENTS} WHERE i.id < ? ORDER BY i.id DESC LIMIT ?", (1000, 51)),
    ("dash: commands", "SELECT c.*, n.name AS node_name FROM commands c JOIN nodes n ON n.id = c.node_id "
     "WHERE c.created_at >= ? ORDER BY c.id DESC LIMIT ?", (0.0, 500)),
    ("dash: node names", "SELECT name FROM nodes ORDER BY name LIMIT 5000", ()),
    ("dash: sessions bound", "SELECT seen_at FROM dash_sessions ORDER BY seen_at DESC LIMIT 1 OFFSET ?", (10,)),
]
# The fleet's totals (fleet page, /metrics) read the nodes table, whose size is the fleet's; incidents only
# through an index (never the history).
FLEET_WIDE = [
    ("dash: fleet page", "SELECT n.id, coalesce(a.k, 0) AS active FROM nodes n LEFT JOIN (SELECT node_id, "
     "count(*) AS k FROM incidents WHERE status = 'active' GROUP BY node_id) a ON a.node_id = n.id "
     "ORDER BY active DESC, n.name LIMIT ? OFFSET ?", (101, 0)),
    ("dash: fleet totals", "SELECT count(*), count(*) FILTER (WHERE last_seen_at >= ?) FROM nodes", (0.0,)),
    ("dash: nodes attacked", "SELECT count(DISTINCT node_id) FROM incidents WHERE status = 'active'", ()),
    ("metrics: nodes", "SELECT COUNT(*), COUNT(*) FILTER (WHERE last_seen_at IS NULL), "
     "COUNT(*) FILTER (WHERE last_seen_at >= ?) FROM nodes", (0.0,)),
    ("metrics: families", "SELECT attack_family, COUNT(*) FROM incidents WHERE status = 'active' "
     "GROUP BY attack_family ORDER BY COUNT(*) DESC, attack_family", ()),
    ("metrics: latest samples", "SELECT n.name, n.last_seen_at, l.pps, l.bps FROM nodes n LEFT JOIN node_latest l "
     "ON l.node_id = n.id WHERE n.last_seen_at IS NOT NULL ORDER BY n.last_seen_at DESC, n.id LIMIT ?", (100,)),
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def explain(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A function: query, args -> the plan's text (one database per backend for the module)."""
    if request.param == "sqlite":
        from floodwatch.server.sqlite_store import SQLiteStore

        lite = SQLiteStore(tmp_path_factory.mktemp("plans") / "server.db")
        yield lambda sql, args: "\n".join(str(r[3]) for r in lite.execute("EXPLAIN QUERY PLAN " + sql, args))
        lite.close()
        return
    from floodwatch.server.pg_store import PGStore

    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    pg = PGStore(cluster.new_database(), cluster.password)
    with pg._tx() as cur:  # some history, analysed: PostgreSQL plans an empty table as if it were tiny
        cur.execute("INSERT INTO nodes (uuid, name, key_hash, created_at) SELECT 'u' || i, 'n' || i, 'h', 0 "
                    "FROM generate_series(1, 200) i")
        cur.execute("INSERT INTO incidents (node_id, status, attack_family, severity, created_at, updated_at, "
                    "started_at) SELECT 1 + i % 200, 'resolved', 'udp_flood', 'high', i, i, i "
                    "FROM generate_series(1, 20000) i")
        cur.execute("INSERT INTO commands (node_id, command, created_at) SELECT 1 + i % 200, '\"status\"', i "
                    "FROM generate_series(1, 20000) i")
        cur.execute("ANALYZE")

    def plan(sql: str, args: tuple[Any, ...]) -> str:
        with pg._tx() as cur:
            cur.execute("SET LOCAL enable_seqscan = off")
            return "\n".join(r["QUERY PLAN"] for r in cur.execute("EXPLAIN " + sql.replace("?", "%s"), args))

    yield plan
    pg.close()


@pytest.mark.parametrize(("what", "sql", "args"), PER_REQUEST, ids=[p[0] for p in PER_REQUEST])
def test_per_request_queries_use_an_index(explain: Any, what: str, sql: str, args: tuple[Any, ...]) -> None:
    plan = explain(sql, args)
    scans = [line for line in plan.splitlines()
             if "Seq Scan" in line or line.startswith("SCAN ")]
    assert not scans, f"{what}: a full scan\n{plan}"


@pytest.mark.parametrize(("what", "sql", "args"), WALKS, ids=[p[0] for p in WALKS])
def test_newest_first_pages_walk_an_index_without_sorting(explain: Any, what: str, sql: str,
                                                          args: tuple[Any, ...]) -> None:
    plan = explain(sql, args)
    bad = [line for line in plan.splitlines() if "Seq Scan" in line or "TEMP B-TREE" in line
           or line.strip().startswith(("Sort", "->  Sort")) or (line.startswith("SCAN ") and " INDEX " not in line
                                                                 and not line.startswith(("SCAN i", "SCAN c")))]
    assert not bad, f"{what}: sorts or scans\n{plan}"


@pytest.mark.parametrize(("what", "sql", "args"), FLEET_WIDE, ids=[p[0] for p in FLEET_WIDE])
def test_fleet_totals_read_only_the_nodes_table(explain: Any, what: str, sql: str, args: tuple[Any, ...]) -> None:
    plan = explain(sql, args)
    scans = [line for line in plan.splitlines() if "Seq Scan" in line or line.startswith("SCAN ")]
    assert all(" nodes" in line or line.startswith("SCAN n") for line in scans), f"{what}: scans more\n{plan}"
