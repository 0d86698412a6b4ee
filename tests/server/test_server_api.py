"""The agent endpoints over real HTTP against the server running as a subprocess: good and bad input."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from fwserver_util import Backend, Node, ServerProc, cli, cli_inproc, incident_body

ENDPOINTS = [("POST", "heartbeat"), ("POST", "metrics"), ("POST", "incident"), ("POST", "pcap"),
             ("GET", "config"), ("POST", "commands/ack")]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProc]:
    s = ServerProc(tmp_path_factory.mktemp("api"), ["--max-upload-bytes", str(1 << 20), "--read-timeout", "1"],
                   backend=backend)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def node(srv: ServerProc) -> Node:
    return srv.add_node()


@pytest.fixture(scope="module")
def admin(srv: ServerProc) -> dict[str, str]:
    token = cli_inproc("admin-token", *srv.store_args)["admin_token"]
    return {"Authorization": f"Bearer {token}"}


# -- authentication --------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_endpoint_refuses_missing_or_wrong_credentials(srv: ServerProc, node: Node, method: str,
                                                            path: str) -> None:
    other = srv.add_node()
    bad = [
        {},
        {"X-Node-UUID": node.uuid},
        {"Authorization": f"Bearer {node.key}"},
        {"Authorization": f"Bearer {node.key}x", "X-Node-UUID": node.uuid},
        {"Authorization": f"Bearer {node.key}", "X-Node-UUID": other.uuid},  # another node's UUID
        {"Authorization": f"Bearer {node.key}", "X-Node-UUID": "not-a-uuid"},
        {"Authorization": f"Basic {node.key}", "X-Node-UUID": node.uuid},
        {"Authorization": f"Bearer {node.key}", "X-Node-UUID": "00000000-0000-4000-8000-000000000000"},
    ]
    for headers in bad:
        r = srv.request(method, path, {"pps": 1, "bps": 1} if method == "POST" else None, headers=headers)
        assert r.status == 401, (headers, r.raw)
        assert "error" in r.json


def test_unknown_route_and_wrong_method_answer_json(srv: ServerProc, node: Node) -> None:
    r = srv.request("GET", "nope", node=node)
    assert r.status == 404 and "error" in r.json
    r = srv.request("GET", "heartbeat", node=node)
    assert r.status == 405 and "error" in r.json


# -- heartbeat -------------------------------------------------------------------------------------


def test_heartbeat_marks_the_node_online_with_version_and_os(srv: ServerProc) -> None:
    n = srv.add_node("hb-node")
    r = srv.post("heartbeat", {"agent_version": "0.1.0", "uptime": 42, "os": "Ubuntu 22.04"}, n)
    assert r.status == 200, r.raw
    nodes = {x["name"]: x for x in cli_inproc("nodes", *srv.store_args)}
    assert nodes["hb-node"]["status"] == "online"
    assert nodes["hb-node"]["agent_version"] == "0.1.0" and nodes["hb-node"]["os"] == "Ubuntu 22.04"
    assert nodes["hb-node"]["uptime"] == 42


@pytest.mark.parametrize(("body", "field"), [
    ({"uptime": "42"}, "uptime"), ({"agent_version": 5}, "agent_version"), ({"os": ["x"]}, "os"),
    ({"uptime": -1}, "uptime"), ({"uptime": True}, "uptime"), ([1, 2], "body"), ("text", "body"),
    ({"os": "Debian\u0000"}, "os"),  # PostgreSQL cannot store a NUL: refused on both stores alike
])
def test_heartbeat_bad_fields_are_named(srv: ServerProc, node: Node, body: object, field: str) -> None:
    r = srv.post("heartbeat", body, node)
    assert r.status == 400
    assert r.json["error"].startswith(f"{field}:"), r.json


def test_a_nul_in_a_name_from_the_url_is_a_400_not_a_storage_failure(srv: ServerProc, admin: dict[str, str]) -> None:
    r = srv.request("GET", "/api/v1/admin/nodes/edge%00a", headers=admin)
    assert r.status == 400 and "NUL" in r.json["error"], r.raw
    r = srv.request("GET", "/nodes/edge%00a")  # the dashboard's page: signed out, sent to the sign-in page
    assert r.status < 500, r.raw[:200]


@pytest.mark.parametrize("raw", [b"{", b"", b"{'a': 1}", b"\xff\xfe", b'{"uptime": NaN}', b"[" * 100000])
def test_malformed_json_is_400(srv: ServerProc, node: Node, raw: bytes) -> None:
    r = srv.request("POST", "heartbeat", node=node, raw=raw, headers={"Content-Type": "application/json"})
    assert r.status == 400, r.raw
    assert r.json["error"].startswith("body:")


def test_json_body_over_the_limit_is_413(srv: ServerProc, node: Node) -> None:
    big = json.dumps([{"pps": 1, "bps": 1, "os": "x" * 1000}] * 1200).encode()
    assert len(big) > 1 << 20
    r = srv.request("POST", "metrics", node=node, raw=big, headers={"Content-Type": "application/json"})
    assert r.status == 413


# -- metrics ---------------------------------------------------------------------------------------


def test_metrics_one_sample_and_a_backlog_keep_each_recorded_at(srv: ServerProc, admin: dict[str, str]) -> None:
    n = srv.add_node()
    assert srv.post("metrics", {"pps": 10, "bps": 800, "recorded_at": "2026-11-28T09:00:00Z"}, n).json == \
        {"accepted": 1}
    backlog = [{"pps": i, "bps": i * 8, "tcp_pct": 50.5, "udp_pct": 49.5, "icmp_pct": 0, "conn_count": 3,
                "recorded_at": f"2026-11-28T08:00:0{i}+00:00"} for i in range(5)]
    r = srv.post("metrics", backlog, n)
    assert r.status == 200 and r.json == {"accepted": 5}
    stored = srv.request("GET", f"/api/v1/admin/nodes/{n.uuid}/metrics", headers=admin).json
    assert [s["recorded_at"] for s in stored] == [f"2026-11-28T08:00:0{i}.000Z" for i in range(5)] + [
        "2026-11-28T09:00:00.000Z"]
    assert stored[2]["pps"] == 2 and stored[2]["tcp_pct"] == 50.5 and stored[2]["conn_count"] == 3


def test_a_retried_metrics_post_is_answered_ok_and_each_sample_stored_once(srv: ServerProc,
                                                                          admin: dict[str, str]) -> None:
    """The agent retries a POST whose answer it lost (a replica died after its commit): it gets 200 again, so
    it stops retrying, and each sample stays stored once. A sample without a recorded_at of its own (the
    official agent's) is stamped at arrival and cannot be told from its retry: stored again (docs/server.md)."""
    n = srv.add_node()
    batch = [{"pps": 100 + i, "bps": 800, "recorded_at": f"2026-11-28T10:00:0{i}.250Z"} for i in range(3)]
    for _ in range(2):
        r = srv.post("metrics", batch, n)
        assert r.status == 200 and r.json == {"accepted": 3}, r.raw
    r = srv.post("metrics", [batch[2], {"pps": 7, "bps": 8, "recorded_at": "2026-11-28T10:00:09+00:00"}], n)
    assert r.status == 200 and r.json == {"accepted": 2}, r.raw
    for _ in range(2):
        assert srv.post("metrics", {"pps": 55, "bps": 440}, n).status == 200
    stored = srv.request("GET", f"/api/v1/admin/nodes/{n.uuid}/metrics", headers=admin).json
    assert [s["pps"] for s in stored] == [100, 101, 102, 7, 55, 55], stored
    assert stored[0]["recorded_at"] == "2026-11-28T10:00:00.250Z"


@pytest.mark.parametrize(("body", "field"), [
    ({"bps": 1}, "pps"), ({"pps": 1}, "bps"), ({"pps": -1.5, "bps": 1}, "pps"), ({"pps": "1", "bps": 1}, "pps"),
    ({"pps": 1, "bps": 1, "tcp_pct": 101}, "tcp_pct"), ({"pps": 1, "bps": 1, "udp_pct": "x"}, "udp_pct"),
    ({"pps": 1, "bps": 1, "recorded_at": "2026-11-28T09:00:00"}, "recorded_at"),
    ({"pps": 1, "bps": 1, "recorded_at": "yesterday"}, "recorded_at"),
    ({"pps": 1, "bps": 1, "conn_count": -3}, "conn_count"),
    ([{"pps": 1, "bps": 1}, {"pps": 1}], "[1].bps"), ([{"pps": 1, "bps": 1}, 7], "[1].body"),
    ([{"pps": 1, "bps": 1}] * 1001, "body"),
])
def test_metrics_bad_input_names_the_field_and_stores_nothing(srv: ServerProc, admin: dict[str, str],
                                                              body: object, field: str) -> None:
    n = srv.add_node()
    r = srv.post("metrics", body, n)
    assert r.status == 400
    assert r.json["error"].startswith(f"{field}:"), r.json
    assert srv.request("GET", f"/api/v1/admin/nodes/{n.uuid}/metrics", headers=admin).json == []


# -- incidents -------------------------------------------------------------------------------------


def test_incident_open_is_idempotent_on_key_and_updates_touch_only_that_incident(srv: ServerProc) -> None:
    n = srv.add_node()
    key = secrets.token_hex(16)
    first = srv.post("incident", incident_body(key), n)
    assert first.status == 201
    iid = first.json["incident_id"]
    again = srv.post("incident", incident_body(key, peak_pps=1), n)  # a retried open: same id, no change
    assert again.status == 200 and again.json == {"incident_id": iid}
    other = srv.post("incident", incident_body(), n).json["incident_id"]
    assert other != iid
    upd = srv.post("incident", incident_body(key, incident_id=iid, peak_pps=250000, severity="critical"), n)
    assert upd.status == 200 and upd.json == {"incident_id": iid}
    res = srv.post("incident", {"incident_id": iid, "incident_key": key, "status": "resolved",
                                "ended_at": "2026-11-28T10:05:00Z"}, n)
    assert res.status == 200
    late = srv.post("incident", {"incident_id": iid, "status": "active", "peak_pps": 260000}, n)
    assert late.status == 200
    shown = cli_inproc("incident", "show", str(iid), *srv.store_args)
    assert shown["status"] == "resolved" and shown["ended_at"] == "2026-11-28T10:05:00.000Z"
    assert shown["peak_pps"] == 260000 and shown["severity"] == "critical"
    assert shown["attack_family"] == "udp_flood" and shown["top_src_ips"] == [{"ip": "198.18.0.9", "count": 500}]
    assert [h["kind"] for h in shown["history"]] == ["open", "update", "resolve", "update"]
    untouched = cli_inproc("incident", "show", str(other), *srv.store_args)
    assert untouched["status"] == "active" and untouched["peak_pps"] == 120000 and untouched["updates"] == 0
    listed = {i["incident_id"]: i for i in cli_inproc("incidents", *srv.store_args)}
    assert listed[iid]["status"] == "resolved" and listed[iid]["pcap_stored"] is False


def test_incident_keys_are_per_node(srv: ServerProc) -> None:
    a, b = srv.add_node(), srv.add_node()
    key = secrets.token_hex(16)
    ia = srv.post("incident", incident_body(key), a).json["incident_id"]
    ib = srv.post("incident", incident_body(key), b).json["incident_id"]
    assert ia != ib
    assert srv.post("incident", {"incident_id": ia, "peak_pps": 1}, b).status == 404


@pytest.mark.parametrize(("over", "field", "status"), [
    ({"attack_family": None}, "attack_family", 400), ({"severity": None}, "severity", 400),
    ({"attack_family": "meteor"}, "attack_family", 400), ({"severity": "extreme"}, "severity", 400),
    ({"peak_pps": "lots"}, "peak_pps", 400), ({"protocol_breakdown": [1]}, "protocol_breakdown", 400),
    ({"tcp_flag_breakdown": {"SYN": 1.5}}, "tcp_flag_breakdown.SYN", 400),
    ({"top_src_ips": [{"ip": 5, "count": 1}]}, "top_src_ips[0].ip", 400),
    ({"top_dst_ports": [{"port": 80, "count": "x"}]}, "top_dst_ports[0].count", 400),
    ({"spoofing_detected": "yes"}, "spoofing_detected", 400), ({"confidence": 101}, "confidence", 400),
    ({"status": "resolved"}, "ended_at", 400), ({"status": "over"}, "status", 400),
    ({"started_at": "10:00"}, "started_at", 400), ({"incident_id": 0}, "incident_id", 400),
    ({"incident_id": 10**9}, "incident_id", 404), ({"incident_key": ""}, "incident_key", 400),
    ({"target_ips": [1]}, "target_ips[0]", 400),
])
def test_incident_bad_input(srv: ServerProc, node: Node, over: dict[str, object], field: str, status: int) -> None:
    r = srv.post("incident", incident_body(**over), node)
    assert r.status == status, r.raw
    assert r.json["error"].startswith(f"{field}:"), r.json


def test_incident_update_with_a_different_key_is_refused(srv: ServerProc, node: Node) -> None:
    iid = srv.post("incident", incident_body("key-one"), node).json["incident_id"]
    r = srv.post("incident", {"incident_id": iid, "incident_key": "key-two", "peak_pps": 5}, node)
    assert r.status == 409 and "incident_key" in r.json["error"]


# -- config and commands ---------------------------------------------------------------------------


def test_config_carries_thresholds_iocs_and_commands_until_acked(srv: ServerProc, admin: dict[str, str]) -> None:
    n = srv.add_node("cfg-node")
    cfg = srv.request("GET", "config", node=n).json
    assert cfg["pps_threshold"] is None and cfg["pending_commands"] == [] and cfg["ioc_patterns"] == []
    assert isinstance(cfg["node_id"], int)
    cli("set-threshold", "cfg-node", "50000", "--bps", "900000000", *srv.store_args)
    r = srv.request("PUT", f"/api/v1/admin/nodes/{n.uuid}/config", headers=admin, body={
        "baseline": {"p99_pps": 12000, "mean_pps": 3400},
        "ioc_patterns": [{"pattern": "deadbeef", "name": "x", "attack_family": "udp_flood"}, "plain"]})
    assert r.status == 200, r.raw
    c1 = cli_inproc("queue-command", "cfg-node", "iptables -I INPUT -s 198.18.0.9 -j DROP", *srv.store_args)
    c2 = cli_inproc("queue-command", n.uuid, '{"action": "block", "ip": "198.18.0.10"}', "--json-command",
                    *srv.store_args)
    cfg = srv.request("GET", "config", node=n).json
    assert cfg["pps_threshold"] == 50000 and cfg["bps_threshold"] == 900000000
    assert cfg["baseline"] == {"p99_pps": 12000, "mean_pps": 3400}
    assert cfg["ioc_patterns"][1] == "plain"
    assert [{k: c[k] for k in ("id", "command")} for c in cfg["pending_commands"]] == [
        {"id": c1["command_id"], "command": "iptables -I INPUT -s 198.18.0.9 -j DROP"},
        {"id": c2["command_id"], "command": {"action": "block", "ip": "198.18.0.10"}}]
    ack = {"command_id": c1["command_id"], "status": "applied", "output": "ok", "executed_at": "2026-11-28T10:00:00Z"}
    r = srv.post("commands/ack", ack, n)
    assert r.status == 200 and r.json["duplicate"] is False
    assert srv.post("commands/ack", ack, n).json["duplicate"] is True
    assert [c["id"] for c in srv.request("GET", "config", node=n).json["pending_commands"]] == [c2["command_id"]]
    listed = {c["id"]: c for c in cli_inproc("commands", "cfg-node", *srv.store_args)}
    assert listed[c1["command_id"]]["status"] == "applied" and listed[c1["command_id"]]["output"] == "ok"
    assert listed[c2["command_id"]]["status"] == "pending"


def test_acks_for_unknown_or_foreign_commands_and_bad_acks(srv: ServerProc, node: Node) -> None:
    other = srv.add_node()
    foreign = cli_inproc("queue-command", other.uuid, "x", *srv.store_args)["command_id"]
    assert srv.post("commands/ack", {"command_id": 10**9, "status": "applied"}, node).status == 404
    r = srv.post("commands/ack", {"command_id": foreign, "status": "applied"}, node)
    assert r.status == 404 and r.json["error"].startswith("command_id:")
    for body, field in (({"status": "applied"}, "command_id"), ({"command_id": 1}, "status"),
                        ({"command_id": 1, "status": "done"}, "status"), ({"command_id": "1", "status": "applied"},
                                                                           "command_id"),
                        ({"command_id": 1, "status": "failed", "executed_at": 5}, "executed_at")):
        r = srv.post("commands/ack", body, node)
        assert r.status == 400 and r.json["error"].startswith(f"{field}:"), r.json
    assert [c["id"] for c in srv.request("GET", "config", node=other).json["pending_commands"]] == [foreign]


def test_pcap_dir_is_private(srv: ServerProc) -> None:
    assert (srv.pcap_dir.stat().st_mode & 0o777) == 0o700
    if srv.backend.kind == "sqlite":
        assert (Path(srv.db).stat().st_mode & 0o777) == 0o600
    else:  # no SQLite file is made beside the captures when the data is in PostgreSQL
        assert not Path(srv.db).exists()
