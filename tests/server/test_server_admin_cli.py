"""The operator side: the admin API with its own tokens, and the CLI with the server up or down."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fwserver_util import Backend, Node, ServerProc, cli, cli_json, incident_body, running, upload

from tests.helpers import eventually


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProc]:
    s = ServerProc(tmp_path_factory.mktemp("admin"), backend=backend)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def admin(srv: ServerProc) -> dict[str, str]:
    return {"Authorization": f"Bearer {cli_json('admin-token', *srv.store_args)['admin_token']}"}


def test_admin_api_refuses_missing_wrong_and_node_credentials(srv: ServerProc) -> None:
    node = srv.add_node()
    for headers in ({}, {"Authorization": "Bearer fwa_wrong-token-of-some-length"},
                    {"Authorization": f"Bearer {node.key}"}, node.headers()):
        r = srv.request("GET", "/api/v1/admin/nodes", headers=headers)
        assert r.status == 401 and "error" in r.json


def test_admin_api_manages_nodes_commands_and_incidents(srv: ServerProc, admin: dict[str, str],
                                                        tmp_path: Path) -> None:
    r = srv.request("POST", "/api/v1/admin/nodes", body={"name": "via-api"}, headers=admin)
    assert r.status == 201, r.raw
    node = Node(r.json["node_uuid"], r.json["api_key"])
    assert srv.request("POST", "/api/v1/admin/nodes", body={"name": "via-api"}, headers=admin).status == 409
    assert srv.request("POST", "/api/v1/admin/nodes", body={"name": 5}, headers=admin).status == 400
    assert srv.post("heartbeat", {"agent_version": "9"}, node).status == 200
    names = {n["name"]: n for n in srv.request("GET", "/api/v1/admin/nodes", headers=admin).json}
    assert names["via-api"]["status"] == "online" and names["via-api"]["agent_version"] == "9"

    r = srv.request("POST", "/api/v1/admin/nodes/via-api/commands", body={"command": {"action": "block"}},
                    headers=admin)
    assert r.status == 201
    cid = r.json["command_id"]
    assert srv.request("POST", "/api/v1/admin/nodes/via-api/commands", body={}, headers=admin).status == 400
    assert srv.request("POST", "/api/v1/admin/nodes/nobody/commands", body={"command": "x"},
                       headers=admin).status == 404
    assert [{k: c[k] for k in ("id", "command")} for c in srv.request("GET", "config", node=node).json[
        "pending_commands"]] == [{"id": cid, "command": {"action": "block"}}]
    assert srv.post("commands/ack", {"command_id": cid, "status": "rejected", "error": "no"}, node).status == 200
    cmds = srv.request("GET", f"/api/v1/admin/nodes/{node.uuid}/commands", headers=admin).json
    assert cmds[0]["status"] == "rejected" and cmds[0]["error"] == "no"

    r = srv.request("PUT", "/api/v1/admin/nodes/via-api/config", body={"pps_threshold": "x"}, headers=admin)
    assert r.status == 400 and r.json["error"].startswith("pps_threshold:")
    r = srv.request("PUT", "/api/v1/admin/nodes/via-api/config", body={"pps_threshold": 7000}, headers=admin)
    assert r.status == 200 and r.json["pps_threshold"] == 7000
    assert srv.request("GET", "/api/v1/admin/nodes/via-api", headers=admin).json["config"]["pps_threshold"] == 7000

    iid = srv.post("incident", incident_body(exporters=["192.0.2.1"]), node).json["incident_id"]
    content = os.urandom(5000)
    assert upload(srv, node, iid, content).status == 201
    listed = srv.request("GET", "/api/v1/admin/incidents?node=via-api&status=active", headers=admin).json
    assert [i["incident_id"] for i in listed] == [iid] and listed[0]["pcap_stored"] is True
    shown = srv.request("GET", f"/api/v1/admin/incidents/{iid}", headers=admin).json
    assert shown["history"][0]["kind"] == "open"
    assert shown["history"][0]["body"]["exporters"] == ["192.0.2.1"]  # network mode's routers, kept as sent
    pcap = srv.request("GET", f"/api/v1/admin/incidents/{iid}/pcap", headers=admin)
    assert pcap.status == 200 and pcap.raw == content
    assert srv.request("GET", "/api/v1/admin/incidents/999999/pcap", headers=admin).status == 404
    assert srv.request("GET", "/api/v1/admin/incidents/abc", headers=admin).status == 400
    assert srv.request("GET", "/api/v1/admin/incidents?status=open", headers=admin).status == 400
    health = srv.request("GET", "/api/v1/admin/health", headers=admin).json
    assert health["counters"]["pcaps_stored"] >= 1


def test_admin_token_from_a_file(tmp_path: Path) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text("fwa_a-token-from-a-file-0123456789\n")
    token_file.chmod(0o600)
    with running(tmp_path, "--admin-token-file", str(token_file)) as srv:
        token = token_file.read_text().strip()
        ok = srv.request("GET", "/api/v1/admin/nodes", headers={"Authorization": f"Bearer {token}"})
        assert ok.status == 200 and ok.json == []


def test_cli_works_with_the_server_down(tmp_path: Path) -> None:
    db = str(tmp_path / "down.db")
    assert cli("nodes", "--db", db, check=False).returncode != 0  # no database yet: a clear error
    created = cli_json("add-node", "edge-1", "--db", db)
    assert set(created) >= {"node_uuid", "api_key"} and created["api_key"].startswith("fwk_")
    assert created["api_key"] not in (tmp_path / "down.db").read_bytes().decode("latin-1")  # stored hashed
    dup = cli("add-node", "edge-1", "--db", db, check=False)
    assert dup.returncode == 1 and "exists" in dup.stderr
    assert cli_json("incidents", "--db", db) == []
    assert cli_json("queue-command", "edge-1", "iptables -L", "--db", db)["command_id"] == 1
    cli("set-threshold", created["node_uuid"], "1234", "--db", db)
    nodes = cli_json("nodes", "--db", db)
    assert nodes[0]["pps_threshold"] == 1234 and nodes[0]["status"] == "new"
    assert cli("set-threshold", "ghost", "1", "--db", db, check=False).returncode == 1
    assert cli("incident", "show", "5", "--db", db, check=False).returncode == 1
    assert cli("fetch-pcap", "5", "--out", str(tmp_path / "x"), "--db", db, check=False).returncode == 1
    text = cli("incidents", "--db", db).stdout
    assert "id" in text and "pcap" in text


def test_cli_against_a_running_server_and_text_output(srv: ServerProc, tmp_path: Path) -> None:
    node = srv.add_node("texty")
    iid = srv.post("incident", incident_body(peak_pps=31337), node).json["incident_id"]
    text = cli("incidents", *srv.store_args).stdout
    line = next(x for x in text.splitlines() if x.split()[0] == str(iid))
    assert "texty" in line and "31337" in line and line.rstrip().endswith("no")
    shown = cli("incident", "show", str(iid), *srv.store_args).stdout
    assert "history (1)" in shown
    cli("queue-command", "texty", json.dumps({"action": "block"}), "--json-command", *srv.store_args)
    assert srv.request("GET", "config", node=node).json["pending_commands"][0]["command"] == {"action": "block"}


def test_start_removes_leftovers_of_interrupted_uploads(tmp_path: Path) -> None:
    pcaps = tmp_path / "server-pcaps"
    pcaps.mkdir(mode=0o700)
    (pcaps / ".upload-0123456789abcdef.part").write_bytes(b"half")
    (pcaps / "incident-7-0123456789abcdef.pcap").write_bytes(b"renamed, never committed")
    (pcaps / "operator-notes.txt").write_text("not ours: kept")
    with running(tmp_path):
        assert sorted(p.name for p in pcaps.iterdir() if p.is_file()) == ["operator-notes.txt"]


def test_bad_listen_address_and_busy_port_fail_clearly(tmp_path: Path, srv: ServerProc) -> None:
    bad = cli("--listen", "nonsense", "--db", str(tmp_path / "x.db"), check=False)
    assert bad.returncode == 2 and "listen" in bad.stderr
    busy = cli("--listen", f"127.0.0.1:{srv.port}", "--db", str(tmp_path / "y.db"), check=False)
    assert busy.returncode == 1 and "cannot listen" in busy.stderr + busy.stdout


def test_metrics_older_than_the_retention_are_deleted(tmp_path: Path) -> None:
    import time as _time

    old = _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(_time.time() - 3 * 86400))
    new = _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime())
    with running(tmp_path) as srv:
        node = srv.add_node("keeper")
        assert srv.post("metrics", [{"pps": 1, "bps": 1, "recorded_at": old},
                                    {"pps": 2, "bps": 1, "recorded_at": new}], node).json == {"accepted": 2}
    token = cli_json("admin-token", "--db", str(tmp_path / "server.db"))["admin_token"]
    with running(tmp_path, "--metrics-retention-days", "1") as srv:  # the sweep runs at start, then every 60 s
        from tests.helpers import eventually

        def kept() -> list[int]:
            r = srv.request("GET", "/api/v1/admin/nodes/keeper/metrics", headers={"Authorization": f"Bearer {token}"})
            return [m["pps"] for m in r.json]

        eventually(lambda: kept() == [2], 10, message="old sample pruned")


def test_remove_node_deletes_it_with_its_data_and_captures(srv: ServerProc, admin: dict[str, str]) -> None:
    node = srv.add_node("to-remove")
    keep = srv.add_node("to-keep")
    assert srv.post("metrics", {"pps": 1, "bps": 8, "recorded_at": "2026-11-30T10:00:00Z"}, node).status == 200
    iid = srv.post("incident", incident_body(), node).json["incident_id"]
    assert upload(srv, node, iid, b"\xd4\xc3\xb2\xa1" + b"x" * 100).status == 201
    stored = [p.name for p in srv.pcap_dir.iterdir() if p.name.startswith(f"incident-{iid}-")]
    assert len(stored) == 1
    out = cli_json("remove-node", "to-remove", *srv.store_args)
    assert out["name"] == "to-remove" and out["incidents"] == 1 and out["metrics"] == 1
    assert out["pcap_files"] == stored and not (srv.pcap_dir / stored[0]).exists()
    assert "to-remove" not in {n["name"] for n in cli_json("nodes", *srv.store_args)}
    eventually(lambda: srv.post("heartbeat", {}, node).status == 401, 10, message="its key refused")
    assert srv.post("heartbeat", {}, keep).status == 200
    again = cli("remove-node", "to-remove", *srv.store_args, check=False)
    assert again.returncode == 1 and "no node 'to-remove'" in again.stderr
