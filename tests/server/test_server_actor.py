"""The apiserver actor: a real process under the bus harness, and under the real supervisor."""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path

import pytest
from fwserver_util import Backend

from tests.helpers import (
    BusHarness,
    base_config,
    eventually,
    free_port,
    start_actor,
    start_supervisor,
    stop_process,
    try_status,
    write_config,
)


def _post(port: int, path: str, body: dict[str, object], creds: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", f"/api/v1/agent/{path}", body=json.dumps(body),
                     headers={"Authorization": f"Bearer {creds['api_key']}", "X-Node-UUID": creds["node_uuid"]})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def apiserver_section(port: int, backend: Backend) -> dict[str, object]:
    """[apiserver] listening on `port`, its storage SQLite in the state directory or `backend`'s PostgreSQL."""
    if backend.kind == "sqlite":
        return {"listen": f"127.0.0.1:{port}"}
    return {"listen": f"127.0.0.1:{port}", "database": backend.url, "database_password_file": backend.password_file}


def test_actor_provisions_the_local_node_serves_and_reports_counters(harness: BusHarness, tmp_path: Path,
                                                                     fresh_backend: Backend) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "c.toml", base_config(tmp_path, harness.endpoints,
                                                        apiserver=apiserver_section(port, fresh_backend)))
    proc = start_actor("apiserver", cfg, tmp_path / "actor.log")
    try:
        harness.wait_ready("apiserver")
        creds_file = tmp_path / "state" / "server-local-node.json"
        assert (creds_file.stat().st_mode & 0o777) == 0o600
        creds = json.loads(creds_file.read_text())
        assert _post(port, "heartbeat", {"agent_version": "t", "uptime": 1, "os": "test"}, creds) == 200
        assert _post(port, "metrics", {"pps": 1, "bps": 8}, creds) == 200
        eventually(lambda: harness.counters("apiserver").get("heartbeats", 0) >= 1
                   and harness.counters("apiserver").get("metric_samples", 0) >= 1, 20,
                   message="server counters in the actor's heartbeat")
    finally:
        assert stop_process(proc) == 0, (tmp_path / "actor.log").read_text()
    # restarted, it keeps the same node and credentials
    proc = start_actor("apiserver", cfg, tmp_path / "actor.log")
    try:
        eventually(lambda: harness.hellos.count("apiserver") >= 2, 20)
        eventually(lambda: _safe_post(port, creds) == 200, 20, message="same credentials after restart")
        assert json.loads(creds_file.read_text()) == creds
    finally:
        assert stop_process(proc) == 0


def _safe_post(port: int, creds: dict[str, str]) -> int:
    try:
        return _post(port, "heartbeat", {}, creds)
    except OSError:
        return 0


@pytest.mark.slow
def test_supervisor_runs_the_embedded_server(tmp_path: Path, fresh_backend: Backend) -> None:
    from tests.helpers import tcp_endpoints

    port = free_port()
    cfg = write_config(tmp_path / "c.toml", base_config(
        tmp_path, tcp_endpoints(), apiserver=apiserver_section(port, fresh_backend),
        supervisor={"actors": ["apiserver"], "critical": []}))
    proc = start_supervisor(cfg, tmp_path / "sup.log")
    try:
        eventually(lambda: try_status(cfg).get("apiserver", {}).get("state") == "running", 30,
                   message="apiserver running under the supervisor")
        creds = json.loads((tmp_path / "state" / "server-local-node.json").read_text())
        eventually(lambda: _safe_post(port, creds) == 200, 20)
        db = tmp_path / "state" / "server.db"
        if fresh_backend.kind == "sqlite":
            assert db.exists() and (db.stat().st_mode & 0o777) == 0o600
        else:  # the local node is in PostgreSQL, and no SQLite file was made beside it
            assert not db.exists()
            from floodwatch.server.backend import read_password
            from floodwatch.server.pg_store import PGStore

            store = PGStore(fresh_backend.url, read_password(fresh_backend.password_file), max_size=1)
            try:
                assert creds["node_uuid"] in {n["node_uuid"] for n in store.list_nodes(0.0, 90.0)}
            finally:
                store.close()
        assert os.path.isdir(tmp_path / "state" / "server-pcaps")
    finally:
        assert stop_process(proc, 20) == 0, (tmp_path / "sup.log").read_text()[-3000:]
