"""The queries every agent request runs are served by an index on both backends (EXPLAIN), so their cost
does not grow with the fleet's history. SQLite: no SCAN at all (not even of a whole index). PostgreSQL
is asked with sequential scans disabled: a plan that still scans the table means no index answers it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pgcluster import PgCluster

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
]


@pytest.fixture(params=["sqlite", "postgresql"])
def explain(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A function: query, args -> the plan's text."""
    if request.param == "sqlite":
        from floodwatch.server.sqlite_store import SQLiteStore

        lite = SQLiteStore(tmp_path / "server.db")
        yield lambda sql, args: "\n".join(str(r[3]) for r in lite.execute("EXPLAIN QUERY PLAN " + sql, args))
        lite.close()
        return
    from floodwatch.server.pg_store import PGStore

    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    pg = PGStore(cluster.new_database(), cluster.password)

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
