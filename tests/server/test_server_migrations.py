"""Schema versions: a database written by the server as shipped (version 1) is upgraded with its data by
`floodwatch server migrate` and by a server start; a database newer than this code is refused untouched."""

from __future__ import annotations

import hashlib
import sqlite3
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from fwserver_util import Node, ServerProc, cli, cli_json, incident_body, running

from floodwatch.server import auth, migrations
from floodwatch.server.sqlite_store import SQLiteStore
from floodwatch.server.validate import iso_from_epoch

SHIPPED = Path(__file__).parent / "data" / "sqlite_store_890339c.py.txt"
T0 = 1_764_410_400.0  # 2025-11-29T10:00:00Z, on a minute and an hour boundary


def shipped_store_module() -> types.ModuleType:
    """The store module as released (before migrations), loaded from its copy."""
    mod = types.ModuleType("sqlite_store_890339c")
    sys.modules[mod.__name__] = mod
    exec(compile(SHIPPED.read_text(), str(SHIPPED), "exec"), mod.__dict__)  # our own copy, in the repository
    return mod


def write_v1_database(path: Path) -> dict[str, Any]:
    """A version-1 database with data in it, written by the shipped code itself."""
    old = shipped_store_module().SQLiteStore(path)
    key, node_uuid = auth.new_api_key(), auth.new_node_uuid()
    a = old.add_node("edge-a", node_uuid, auth.hash_secret(key), T0)["node_id"]
    b = old.add_node("edge-b", auth.new_node_uuid(), auth.hash_secret(auth.new_api_key()), T0)["node_id"]
    # two minutes of samples on a, one on b
    old.add_metrics(a, [{"recorded_at": T0 + i, "pps": 100 + i, "bps": 8000, "tcp_pct": 50.0} for i in range(120)],
                    T0 + 120)
    old.add_metrics(b, [{"recorded_at": T0 + 5, "pps": 7, "bps": 56}], T0 + 6)
    inc, created = old.upsert_incident(a, {"incident_key": "k-shipped", "status": "active",
                                           "attack_family": "udp_flood", "severity": "high",
                                           "started_at": T0 + 30, "peak_pps": 9000}, T0 + 31)
    assert created
    acked = old.queue_command(a, {"action": "block", "ip": "198.18.0.9"}, T0)
    pending = old.queue_command(a, "status", T0)
    assert old.ack_command(a, {"command_id": acked, "status": "success", "error": None, "output": "ok"}, T0 + 1)
    old.add_admin_token("ops", auth.hash_secret("fwa_" + "x" * 30), T0)
    old.close()
    assert sqlite3.connect(path).execute("SELECT value FROM meta").fetchone() == ("1",)
    return {"node": Node(node_uuid, key), "a": a, "b": b, "incident": inc, "pending": pending}


def test_migrate_upgrades_the_shipped_schema_keeping_every_row(tmp_path: Path) -> None:
    db = tmp_path / "server.db"
    made = write_v1_database(db)

    out = cli_json("migrate", "--db", str(db))
    assert out["before"] == 1 and out["after"] == migrations.CURRENT == 4 and out["applied"] == [2, 3, 4]
    backup = Path(out["backup"])
    assert backup.stat().st_mode & 0o777 == 0o600
    assert sqlite3.connect(backup).execute("SELECT count(*) FROM metrics").fetchone() == (121,)

    store = SQLiteStore(db, create=False)
    assert store.schema_before == 4 and store.migrated == []  # nothing left to do
    assert [n["name"] for n in store.list_nodes(T0, 90)] == ["edge-a", "edge-b"]
    assert len(store.metrics(made["a"], 0, 1000)) == 120
    assert store.incident_by_key(made["a"], "k-shipped") == (made["incident"], T0 + 30)
    assert [c["id"] for c in store.pending_commands(made["a"], T0 + 2)] == [made["pending"]]
    assert store.admin_token_hashes() == [auth.hash_secret("fwa_" + "x" * 30)]
    # the rollups the dashboard charts read were filled from the stored samples
    rows = store.execute("SELECT node_id, t, n, pps_sum, pps_max FROM metrics_1m ORDER BY node_id, t").fetchall()
    assert [tuple(r) for r in rows] == [(made["a"], int(T0), 60, sum(range(100, 160)), 159),
                                        (made["a"], int(T0) + 60, 60, sum(range(160, 220)), 219),
                                        (made["b"], int(T0), 1, 7, 7)]
    assert tuple(store.execute("SELECT n, pps_max FROM metrics_1h WHERE node_id = ?", (made["a"],)).fetchone()) \
        == (120, 219)
    latest = {r[0]: tuple(r[1:]) for r in store.execute("SELECT node_id, recorded_at, pps FROM node_latest")}
    assert latest == {made["a"]: (T0 + 119, 219), made["b"]: (T0 + 5, 7)}
    assert [r[0] for r in store.execute("SELECT version FROM schema_migrations ORDER BY version")] == [1, 2, 3, 4]
    assert store.check() == []
    store.close()

    assert cli_json("migrate", "--db", str(db)) == {"before": 4, "after": 4, "applied": [], "backup": None}


def test_a_server_started_on_the_shipped_schema_upgrades_it_and_serves_its_nodes(tmp_path: Path) -> None:
    made = write_v1_database(tmp_path / "server.db")
    with running(tmp_path) as srv:
        assert "database schema upgraded from version 1 to 4" in srv.log()
        node = made["node"]
        assert srv.post("heartbeat", {"agent_version": "2"}, node).status == 200
        r = srv.post("incident", incident_body("k-shipped"), node)  # the open the agent retries: same incident
        assert r.status in (200, 201) and r.json["incident_id"] == made["incident"], r.raw
        pending = srv.request("GET", "config", node=node).json["pending_commands"]
        assert [c["id"] for c in pending] == [made["pending"]]  # the command acked before the upgrade stays acked


def test_a_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    db = tmp_path / "server.db"
    SQLiteStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', 0)")
    conn.commit()
    conn.close()
    digest = hashlib.sha256(db.read_bytes()).hexdigest()

    for args in (["migrate", "--db", str(db)], ["nodes", "--db", str(db)]):
        proc = cli(*args, check=False)
        assert proc.returncode == 1
        assert "schema is version 99, newer than this floodwatch knows (up to 4)" in proc.stderr, proc.stderr
    srv = ServerProc(tmp_path)
    try:
        with pytest.raises(AssertionError, match="server exited"):
            srv.start()
    finally:
        srv.stop()
    assert "newer than this floodwatch knows" in srv.log()
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    assert not list(tmp_path.glob("server.db.*.bak"))


# The dashboard's users table as web/users.py created it (IF NOT EXISTS) on schema version 2.
DASH_USERS_V2 = ("CREATE TABLE IF NOT EXISTS dash_users (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
                 "role TEXT NOT NULL, pw_hash TEXT NOT NULL, created_at REAL NOT NULL)")


def test_a_version_2_database_with_dashboard_users_keeps_them_and_they_sign_in(tmp_path: Path) -> None:
    from floodwatch.server.web import users

    db = tmp_path / "server.db"
    conn = sqlite3.connect(db, isolation_level=None)
    for m in migrations.MIGRATIONS[:2]:
        m.apply(conn)
    conn.execute("INSERT INTO schema_migrations VALUES (1, 'v1', 0), (2, 'v2', 0)")
    conn.execute(DASH_USERS_V2)
    password = users.new_password()
    conn.execute("INSERT INTO dash_users (name, role, pw_hash, created_at) VALUES ('ops', 'admin', ?, ?)",
                 (users.hash_password(password), T0))
    conn.close()

    with running(tmp_path) as srv:
        assert "database schema upgraded from version 2 to 4" in srv.log()
        assert not (tmp_path / "dashboard-admin-password").exists()  # an admin exists: none made
        status, headers = _login(srv.port, "ops", password)
        assert status == 302 and "fw_session=" in headers.get("set-cookie", "")
    with sqlite3.connect(db) as check:  # the session is in the database, only as a hash
        assert check.execute("SELECT user_name, length(token_hash) FROM dash_sessions").fetchall() == [("ops", 64)]


def _login(port: int, user: str, password: str) -> tuple[int, dict[str, str]]:
    import http.client
    import urllib.parse

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/login", urllib.parse.urlencode({"username": user, "password": password}),
                 {"Content-Type": "application/x-www-form-urlencoded"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}


def write_v3_database_with_a_retried_sample(path: Path) -> tuple[int, int]:
    """A version-3 database as its servers stored samples (each POST's rows, the rollups counting every row):
    node a's sample at T0+1 stored three times (the agent retried after lost answers), its twin at T0+1 on
    node b, and two samples the server stamped at one arrival (a batch without times); (a, b)."""
    conn = sqlite3.connect(path, isolation_level=None)
    migrations.MIGRATIONS[0].apply(conn)
    conn.execute("INSERT INTO nodes (uuid, name, key_hash, created_at) VALUES ('u-a', 'a', 'h', 0), "
                 "('u-b', 'b', 'h', 0)")
    rows = [(1, T0 + 1, T0 + 5, 100, 800, 10.0), (1, T0 + 2, T0 + 5, 200, 1600, None),
            (1, T0 + 1, T0 + 9, 100, 800, 10.0), (1, T0 + 1, T0 + 12, 100, 800, 10.0), (2, T0 + 1, T0 + 5, 7, 56, None),
            (1, T0 + 70, T0 + 70, 5, 40, None), (1, T0 + 70, T0 + 70, 6, 48, None)]
    conn.executemany("INSERT INTO metrics (node_id, recorded_at, received_at, pps, bps, tcp_pct) "
                     "VALUES (?, ?, ?, ?, ?, ?)", rows)
    for m in migrations.MIGRATIONS[1:3]:
        m.apply(conn)
    conn.execute("INSERT INTO schema_migrations VALUES (1, 'v1', 0), (2, 'v2', 0), (3, 'v3', 0)")
    conn.close()
    return 1, 2


def test_version_4_keeps_one_copy_of_a_sample_stored_twice_and_corrects_the_rollups(tmp_path: Path) -> None:
    db = tmp_path / "server.db"
    a, b = write_v3_database_with_a_retried_sample(db)
    minutes = "SELECT t, n, pps_sum, pps_max, bps_sum, tcp_sum FROM metrics_1m WHERE node_id = 1 ORDER BY t"
    with sqlite3.connect(db) as before:
        assert before.execute(minutes).fetchall() == [(T0, 4, 500, 200, 4000, 30.0), (T0 + 60, 2, 11, 6, 88, 0.0)]

    out = cli_json("migrate", "--db", str(db))
    assert (out["before"], out["applied"]) == (3, [4]) and Path(out["backup"]).is_file()
    store = SQLiteStore(db, create=False)
    got = [(m["recorded_at"], m["received_at"], m["pps"]) for m in store.metrics(a, 0, 100)]
    assert got == [(iso_from_epoch(T0 + 1), iso_from_epoch(T0 + 5), 100),  # the first copy stays
                   (iso_from_epoch(T0 + 2), iso_from_epoch(T0 + 5), 200),
                   (iso_from_epoch(T0 + 70), iso_from_epoch(T0 + 70), 5),  # stamped by the server: both kept
                   (iso_from_epoch(T0 + 70), iso_from_epoch(T0 + 70), 6)]
    assert [m["pps"] for m in store.metrics(b, 0, 100)] == [7]
    # the removed copies are out of the counts and sums (a retried copy held the same values: maxima stay)
    assert [tuple(r) for r in store.execute(minutes)] == [(T0, 2, 300, 200, 2400, 10.0), (T0 + 60, 2, 11, 6, 88, 0.0)]
    assert tuple(store.execute("SELECT n, pps_sum FROM metrics_1h WHERE node_id = 1").fetchone()) == (4, 311)
    # from now on a retry stores nothing, a sample the server stamps is stored
    assert store.add_metrics(a, [{"recorded_at": T0 + 1, "pps": 100, "bps": 800}], T0 + 80) == 0
    assert store.add_metrics(a, [{"recorded_at": T0 + 70, "pps": 9, "bps": 72, "stamped": True}], T0 + 80) == 1
    assert tuple(store.execute(minutes).fetchall()[1]) == (T0 + 60, 3, 20, 9, 160, 0.0)
    assert store.check() == []
    store.close()
