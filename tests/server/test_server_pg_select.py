"""Choosing PostgreSQL: `[apiserver] database` (validated at load), its password from a file or the
environment (never in the URL, never in output or logs), the real server and the operator CLI on it,
and the schema versions (`floodwatch server migrate`; a newer schema refused) on PostgreSQL."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from floodwatch.config import load_config
from floodwatch.errors import ConfigError
from floodwatch.server import migrations, pg_schema
from floodwatch.settings.apiserver import ApiserverSettings
from tests.pgcluster import PgCluster
from tests.server.fwserver_util import (
    Backend,
    Node,
    ServerProc,
    admin_headers,
    cli,
    cli_inproc,
    incident_body,
    pg_backend,
)


@pytest.mark.parametrize(("url", "message"), [
    ("postgresql://fw:hunter2@db:5432/fw", "no password in the URL"),
    ("postgresql://fw@db/fw?password=hunter2", "no password in the URL"),
    ("mysql://fw@db/fw", "must be postgresql://"),
    ("postgresql://fw@db:99999/fw", "not a valid URL"),
    ("postgresql://fw@db:5432/", "must name a host and a database"),
])
def test_a_bad_database_setting_is_refused_at_load_without_echoing_a_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as e:
        ApiserverSettings(database=url).validate()
    assert "hunter2" not in str(e.value)


def test_the_config_file_selects_postgresql_and_checks_it(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[apiserver]\ndatabase = "postgresql://fw@127.0.0.1:5432/fw"\n'
                    'database_password_file = "/etc/floodwatch/db-password"\n')
    config = load_config(good)
    assert config.apiserver.database == "postgresql://fw@127.0.0.1:5432/fw"
    bad = tmp_path / "bad.toml"
    bad.write_text('[apiserver]\ndatabase_password_file = "/etc/floodwatch/db-password"\n')
    with pytest.raises(ConfigError, match="database_password_file: only with database"):
        load_config(bad)


@pytest.fixture(scope="module")
def pg(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    return pg_backend(pg_cluster, tmp_path_factory.mktemp("pgsel"))


def test_the_server_from_its_config_serves_agents_and_operators_on_postgresql(
        pg: Backend, pg_cluster: PgCluster, tmp_path: Path) -> None:
    config = tmp_path / "floodwatch.toml"
    config.write_text(f'[apiserver]\ndatabase = "{pg.url}"\ndatabase_password_file = "{pg.password_file}"\n'
                      f'pcap_dir = "{tmp_path / "pcaps"}"\n')
    srv = ServerProc(tmp_path, backend=Backend("postgresql", config=str(config))).start()
    try:
        node = srv.add_node("edge-1")
        assert srv.post("heartbeat", {"agent_version": "1.2.3", "os": "Debian 12", "uptime": 5}, node).status == 200
        samples = [{"pps": 100 + i, "bps": 8000, "recorded_at": f"2026-11-30T10:00:0{i}Z"} for i in range(3)]
        assert srv.post("metrics", samples, node).json == {"accepted": 3}
        inc = srv.post("incident", {"incident_key": "k-1", "attack_family": "udp_flood", "severity": "high",
                                    "status": "active", "peak_pps": 5000}, node)
        assert inc.status in (200, 201), inc.raw
        nodes = srv.request("GET", "/api/v1/admin/nodes", headers=admin_headers(srv))
        assert nodes.status == 200 and [n["name"] for n in nodes.json] == ["edge-1"]
        assert nodes.json[0]["agent_version"] == "1.2.3"
        # the rows are in PostgreSQL, where a second process (the CLI) reads them
        db = pg.url.rsplit("/", 1)[1]
        assert pg_cluster.psql("SELECT count(*) FROM metrics m JOIN nodes n ON n.id = m.node_id "
                               "WHERE n.name = 'edge-1'", db=db).strip() == "3"
        listed = cli_inproc("incidents", "--database", pg.url, "--password-file", pg.password_file)
        assert [(i["incident_key"], i["peak_pps"]) for i in listed] == [("k-1", 5000)]
    finally:
        assert srv.stop() == 0
    log = srv.log()
    assert "listening on" in log and pg.url in log  # the URL (no password in it) says where the data is
    assert pg_cluster.password not in log


def test_the_password_from_the_environment_and_a_readable_password_file_refused(
        pg: Backend, pg_cluster: PgCluster, tmp_path: Path) -> None:
    env_only = cli("nodes", "--database", pg.url, "--json", check=False,
                   env={**os.environ, "FLOODWATCH_DB_PASSWORD": pg_cluster.password})
    assert env_only.returncode == 0, env_only.stderr
    open_file = tmp_path / "pw"
    open_file.write_text(pg_cluster.password)
    open_file.chmod(0o644)
    refused = cli("nodes", "--database", pg.url, "--password-file", str(open_file), check=False)
    assert refused.returncode == 1 and "readable by others" in refused.stderr
    wrong = tmp_path / "wrong"
    wrong.touch(mode=0o600)
    wrong.write_text("not-" + pg_cluster.password)
    denied = cli("nodes", "--database", pg.url, "--password-file", str(wrong), check=False)
    assert denied.returncode == 1 and "password authentication failed" in denied.stderr
    assert pg_cluster.password not in denied.stderr + denied.stdout


def test_export_names_its_limit_on_postgresql(pg: Backend, tmp_path: Path) -> None:
    out = cli("export", "--database", pg.url, "--password-file", pg.password_file, "--out", str(tmp_path / "x"),
              check=False)
    assert out.returncode == 1 and "reads a SQLite database" in out.stderr and not (tmp_path / "x").exists()


def _v1_database(pg_cluster: PgCluster, tmp: Path) -> Backend:
    """A database as the first release left it (schema version 1), with a node and a metric in it."""
    backend = pg_backend(pg_cluster, tmp)
    db = backend.url.rsplit("/", 1)[1]
    statements = [s for s in pg_schema.V1.split(";") if s.strip()]
    pg_cluster.psql(";".join(statements) + ";" + f"ALTER SCHEMA public OWNER TO {pg_cluster.user};", db=db)
    for table in ("meta", "nodes", "metrics", "incidents", "incident_history", "pcaps", "commands", "admin_tokens"):
        pg_cluster.psql(f"ALTER TABLE {table} OWNER TO {pg_cluster.user}", db=db)
    pg_cluster.psql("INSERT INTO nodes (uuid, name, key_hash, created_at) VALUES ('u-1', 'old', 'h', 1);"
                    "INSERT INTO metrics (node_id, recorded_at, received_at, pps, bps) "
                    "VALUES (1, 1764496800, 1764496801, 700, 5600)", db=db)
    return backend


def test_migrate_upgrades_a_shipped_postgresql_schema_with_its_data(pg_cluster: PgCluster, tmp_path: Path) -> None:
    backend = _v1_database(pg_cluster, tmp_path)
    args = ["--database", backend.url, "--password-file", backend.password_file]
    out = cli_inproc("migrate", *args)
    assert out["before"] == 1 and out["after"] == migrations.CURRENT and out["backup"] is None
    assert out["applied"] == [m.version for m in migrations.MIGRATIONS if m.version > 1]
    db = backend.url.rsplit("/", 1)[1]
    versions = pg_cluster.psql("SELECT version FROM schema_migrations ORDER BY version", db=db).split()
    assert versions == [str(m.version) for m in migrations.MIGRATIONS]
    # the rollups were filled from the stored samples; the node is still there
    assert pg_cluster.psql("SELECT n, pps_max FROM metrics_1m", db=db).strip() == "1|700"
    assert [n["name"] for n in cli_inproc("nodes", *args)] == ["old"]
    assert cli_inproc("migrate", *args)["applied"] == []


def test_a_server_started_on_a_shipped_postgresql_schema_upgrades_it_and_serves_its_nodes(
        pg_cluster: PgCluster, tmp_path: Path) -> None:
    from floodwatch.server import auth

    backend = _v1_database(pg_cluster, tmp_path)
    key, node_uuid = auth.new_api_key(), auth.new_node_uuid()
    pg_cluster.psql(f"INSERT INTO nodes (uuid, name, key_hash, created_at) VALUES "
                    f"('{node_uuid}', 'shipped', '{auth.hash_secret(key)}', 1)", db=backend.url.rsplit("/", 1)[1])
    srv = ServerProc(tmp_path / "srv", backend=backend).start()
    try:
        assert f"database schema upgraded from version 1 to {migrations.CURRENT}" in srv.log()
        node = Node(node_uuid, key)
        assert srv.post("heartbeat", {"agent_version": "2"}, node).status == 200
        assert srv.post("incident", incident_body("k-after-upgrade"), node).status == 201
        nodes = srv.request("GET", "/api/v1/admin/nodes", headers=admin_headers(srv)).json
        assert {n["name"]: n["agent_version"] for n in nodes} == {"old": None, "shipped": "2"}
    finally:
        srv.stop()


def test_a_newer_postgresql_schema_stops_the_server_and_migrate(pg_cluster: PgCluster, tmp_path: Path) -> None:
    backend = pg_backend(pg_cluster, tmp_path)
    args = ["--database", backend.url, "--password-file", backend.password_file]
    cli_inproc("nodes", *args)  # creates the current schema
    db = backend.url.rsplit("/", 1)[1]
    future = migrations.CURRENT + 1
    pg_cluster.psql(f"INSERT INTO schema_migrations VALUES ({future}, 'future', 0)", db=db)
    refused = cli("migrate", *args, check=False)
    assert refused.returncode == 1 and f"version {future}, newer than this floodwatch knows" in refused.stderr
    srv = ServerProc(tmp_path / f"s-{secrets.token_hex(2)}", backend=backend)
    srv.tmp.mkdir()
    with pytest.raises(AssertionError, match="server exited"):
        srv.start()
    assert "newer than this floodwatch knows" in srv.log()
    assert pg_cluster.psql("SELECT max(version) FROM schema_migrations", db=db).strip() == str(future)


def test_lost_database_connections_cost_a_retry_never_a_500_or_data(
        pg: Backend, pg_cluster: PgCluster, tmp_path: Path) -> None:
    """PostgreSQL restarted or a connection cut: the requests in flight get 503 + Retry-After (agents
    retry), the pool replaces the connections, and the server goes on."""
    from tests.helpers import eventually

    srv = ServerProc(tmp_path, backend=pg).start()
    try:
        name = f"cut-{secrets.token_hex(2)}"
        node = srv.add_node(name)
        assert srv.post("heartbeat", {"agent_version": "1"}, node).status == 200
        db = pg.url.rsplit("/", 1)[1]
        statuses: list[int] = []
        for i in range(3):
            killed = pg_cluster.psql(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                     f"WHERE datname = '{db}' AND pid <> pg_backend_pid()")
            assert int(killed) >= 1
            sample = {"pps": i, "bps": 8, "recorded_at": f"2026-11-30T11:00:0{i}Z"}

            def sent(s: dict[str, object] = sample) -> bool:
                r = srv.post("metrics", s, node)
                statuses.append(r.status)
                assert r.status in (200, 503), r.raw
                if r.status == 503:
                    assert r.headers.get("Retry-After") == "5"
                return r.status == 200

            eventually(sent, 20, message="the server answers again")
        assert pg_cluster.psql(f"SELECT count(*) FROM metrics m JOIN nodes n ON n.id = m.node_id "
                               f"WHERE n.name = '{name}'", db=db).strip() == "3"
    finally:
        assert srv.stop() == 0
    assert "Traceback" not in srv.log() and pg_cluster.password not in srv.log()
    assert 500 not in statuses


def test_an_unreachable_database_stops_the_server_at_start_with_the_reason() -> None:
    from tests.helpers import free_port

    url = f"postgresql://fw@127.0.0.1:{free_port()}/fw"  # nothing listens there
    env = {**os.environ, "FLOODWATCH_DB_PASSWORD": "not-shown"}
    served = cli("--listen", "127.0.0.1:0", "--database", url, check=False, env=env)
    assert served.returncode == 1, served.stderr
    assert "cannot connect to the database" in served.stderr and url in served.stderr
    assert "not-shown" not in served.stderr + served.stdout


def test_version_4_on_postgresql_keeps_one_copy_of_a_sample_stored_twice(pg_cluster: PgCluster, tmp_path: Path) -> None:
    """A version-3 database whose agent's retry stored a sample three times (and the rollups counted each),
    plus two samples the server stamped at one arrival: the upgrade keeps the first copy, takes the others
    out of the rollups' counts and sums, keeps both stamped samples; a retry afterwards stores nothing."""
    import psycopg

    backend = pg_backend(pg_cluster, tmp_path)
    t0 = 1_764_410_400.0
    with psycopg.connect(backend.url, password=pg_cluster.password) as conn:
        for version in (1, 2, 3):  # v1's tables, the samples as v3 servers stored them, then v2's and v3's
            for stmt in pg_schema.VERSIONS[version].split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            if version == 1:
                conn.execute("INSERT INTO nodes (uuid, name, key_hash, created_at) VALUES ('u-a', 'a', 'h', 0), "
                             "('u-b', 'b', 'h', 0)")
                with conn.cursor() as cur:
                    cur.executemany("INSERT INTO metrics (node_id, recorded_at, received_at, pps, bps, tcp_pct) "
                                    "VALUES (%s, %s, %s, %s, %s, %s)", [
                                        (1, t0 + 1, t0 + 5, 100, 800, 10.0), (1, t0 + 2, t0 + 5, 200, 1600, None),
                                        (1, t0 + 1, t0 + 9, 100, 800, 10.0), (1, t0 + 1, t0 + 12, 100, 800, 10.0),
                                        (2, t0 + 1, t0 + 5, 7, 56, None), (1, t0 + 70, t0 + 70, 5, 40, None),
                                        (1, t0 + 70, t0 + 70, 6, 48, None)])
        conn.execute("INSERT INTO schema_migrations VALUES (1, 'v1', 0), (2, 'v2', 0), (3, 'v3', 0)")
    db = backend.url.rsplit("/", 1)[1]
    minutes = "SELECT t, n, pps_sum, pps_max, bps_sum, tcp_sum FROM metrics_1m WHERE node_id = 1 ORDER BY t"
    assert pg_cluster.psql(minutes, db=db).split() == [f"{int(t0)}|4|500|200|4000|30", f"{int(t0) + 60}|2|11|6|88|0"]

    args = ["--database", backend.url, "--password-file", backend.password_file]
    out = cli_inproc("migrate", *args)
    assert (out["before"], out["applied"]) == (3, [4])
    rows = pg_cluster.psql("SELECT node_id, recorded_at - 1764410400, received_at - 1764410400, pps FROM metrics "
                           "ORDER BY id", db=db).split()
    assert rows == ["1|1|5|100", "1|2|5|200", "2|1|5|7", "1|70|70|5", "1|70|70|6"]
    assert pg_cluster.psql(minutes, db=db).split() == [f"{int(t0)}|2|300|200|2400|10", f"{int(t0) + 60}|2|11|6|88|0"]
    assert pg_cluster.psql("SELECT n, pps_sum FROM metrics_1h WHERE node_id = 1", db=db).strip() == "4|311"

    from floodwatch.server.pg_store import PGStore

    store = PGStore(backend.url, pg_cluster.password)
    try:
        assert store.migrated == []
        assert store.add_metrics(1, [{"recorded_at": t0 + 1, "pps": 100, "bps": 800}], t0 + 80) == 0
        assert store.add_metrics(1, [{"recorded_at": t0 + 70, "pps": 9, "bps": 72, "stamped": True}], t0 + 80) == 1
    finally:
        store.close()
    assert pg_cluster.psql(minutes, db=db).split()[1] == f"{int(t0) + 60}|3|20|9|160|0"


def test_a_commit_and_its_notifications_arrive_together_whatever_the_payload_holds(pg_cluster: PgCluster) -> None:
    """The NOTIFYs go with the COMMIT in one text of statements: a payload with quotes, backslashes and
    non-ASCII arrives as it was, only for a transaction that committed; a rolled-back one announces nothing."""
    import asyncio
    import contextlib

    from floodwatch.server.pg_store import PGStore

    store = PGStore(pg_cluster.new_database(), pg_cluster.password)
    payloads = ["it's \\ a 'quote' \\' ; COMMIT; --", "naïve ☃ $$ $x$ E'\\n'", '{"n": [1, 2]}']
    store.announce = lambda events: payloads if events else []
    node = store.add_node("a", "0b5e9a1e-9b1e-4c59-8a0e-d1c4d1c4d1c4", "x", 1.0)["node_id"]

    async def go() -> list[str]:
        got: list[str] = []
        listening = asyncio.Event()

        async def listen() -> None:
            async for payload in store.listen(on_listening=listening.set):
                got.append(payload)

        task = asyncio.ensure_future(listen())
        await asyncio.wait_for(listening.wait(), 10)
        with contextlib.suppress(RuntimeError), store.group():  # rolled back: nothing announced
            store.add_metrics(node, [{"recorded_at": 5.0, "pps": 1, "bps": 1}], 5.0)
            raise RuntimeError("rolled back")
        await asyncio.to_thread(store.add_metrics, node, [{"recorded_at": 6.0, "pps": 2, "bps": 2}], 6.0)
        deadline = asyncio.get_running_loop().time() + 10
        while len(got) < len(payloads) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()  # notifications arrive in commit order: the rolled-back one's would have come first
        return got

    try:
        assert asyncio.run(go()) == payloads
        assert [m["pps"] for m in store.metrics(node, 0, 10)] == [2]
    finally:
        store.close()
