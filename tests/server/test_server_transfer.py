"""`floodwatch server export` / `import`: a SQLite server's data (written by the real server over HTTP)
moves into a real PostgreSQL with every id, and reads back the same through both stores."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from fwserver_util import Backend, Node, admin_headers, cli, cli_json, incident_body, running

from floodwatch.server.pg_store import PGStore
from floodwatch.server.sqlite_store import SQLiteStore
from floodwatch.server.web import users
from tests.pgcluster import PgCluster


def _fill(tmp: Path) -> tuple[Path, Node]:
    with running(tmp) as srv:
        admin = admin_headers(srv)
        a, b = srv.add_node("edge-a"), srv.add_node("edge-b")
        assert srv.post("heartbeat", {"agent_version": "3.1", "os": "linux"}, a).status == 200
        backlog = [{"pps": 100 + i, "bps": 800, "recorded_at": f"2026-11-28T09:00:{i:02d}Z"} for i in range(50)]
        assert srv.post("metrics", backlog, a).status in (200, 201)
        r = srv.post("incident", incident_body("k-1"), a)
        inc = r.json["incident_id"]
        assert srv.post("incident", {"incident_id": inc, "status": "resolved",
                                     "ended_at": "2026-11-28T10:05:00Z"}, a).status == 200
        srv.post("incident", incident_body("k-2"), b)
        for cmd in ("one", "two"):
            assert srv.request("POST", "/api/v1/admin/nodes/edge-a/commands", body={"command": cmd},
                               headers=admin).status == 201
        first = srv.request("GET", "config", node=a).json["pending_commands"][0]["id"]
        assert srv.post("commands/ack", {"command_id": first, "status": "applied"}, a).status == 200
    return tmp / "server.db", a


def _view(store: Any) -> dict[str, Any]:
    nodes = store.list_nodes(1.8e9, 90)
    return {"nodes": nodes, "incidents": [store.incident(i["incident_id"]) for i in store.list_incidents()],
            "commands": [store.list_commands(n["node_id"]) for n in nodes],
            "metrics": [store.metrics(n["node_id"], 0, 1000) for n in nodes],
            "tokens": sorted(store.admin_token_hashes()), "users": users.list_users(store)}


def test_export_then_import_into_postgresql_keeps_everything(tmp_path: Path, pg_cluster: PgCluster) -> None:
    db, agent = _fill(tmp_path)
    dump = tmp_path / "server.export"
    counts = cli_json("export", "--db", str(db), "--out", str(dump))
    assert counts["nodes"] == 2 and counts["metrics"] == 50 and counts["incident_history"] == 3
    assert dump.stat().st_mode & 0o777 == 0o600

    url = pg_cluster.new_database()
    pw = tmp_path / "pw"
    pw.touch(mode=0o600)  # a password file readable by others is refused
    pw.write_text(pg_cluster.password + "\n")
    proc = cli("import", str(dump), "--database", url, "--password-file", str(pw), "--json")
    assert pg_cluster.password not in proc.stdout + proc.stderr

    sqlite, pg = SQLiteStore(db, create=False), PGStore(url, pg_cluster.password)
    try:
        before = _view(sqlite)
        assert _view(pg) == before and before["incidents"][1]["status"] == "resolved"
        # the dashboard's users came along: the admin signs in with the password the SQLite server made
        admin = users.find_user(pg, "admin")
        assert admin is not None and users.check_password(
            (tmp_path / "dashboard-admin-password").read_text().strip(), admin["pw_hash"])
        a = before["nodes"][0]["node_id"]
        # the imported keys stay idempotent, acked commands stay acked, new ids follow the imported ones
        assert pg.upsert_incident(a, {"incident_key": "k-1", "attack_family": "x", "severity": "low"}, 1.8e9) == \
            (before["incidents"][1]["incident_id"], False)
        assert [c["command"] for c in pg.pending_commands(a, 1.8e9)] == ["two"]
        assert pg.queue_command(a, "three", 1.8e9) > max(c["id"] for c in before["commands"][0])
    finally:
        sqlite.close()
        pg.close()

    # only into an empty database; the password from the environment works too
    env = {**os.environ, "FLOODWATCH_DB_PASSWORD": pg_cluster.password}
    again = subprocess.run([*cli_cmd(), "import", str(dump), "--database", url], capture_output=True, text=True,
                           env=env, timeout=60)
    assert again.returncode == 1 and "already holds nodes" in again.stderr

    # the server on the imported database: the agent keeps its credentials and its pending command
    with running(tmp_path / "on-pg", backend=Backend("postgresql", url, str(pw))) as srv:
        assert srv.post("heartbeat", {"agent_version": "3.2", "os": "linux"}, agent).status == 200
        assert [c["command"] for c in srv.request("GET", "config", node=agent).json["pending_commands"]] == \
            ["two", "three"]  # "three": queued on PostgreSQL above


def cli_cmd() -> list[str]:
    from tests.helpers import PYTHON

    return [PYTHON, "-m", "floodwatch.server"]
