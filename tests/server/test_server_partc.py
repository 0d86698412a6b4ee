"""Part C (the official agent's dialect, ../shared/AGENT_API.md) replayed request by request against the
real server, asserting what an operator then sees: `floodwatch server nodes/incidents/commands --json`,
`incident show`, and the stored capture's bytes and sha256."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fwserver_util import Backend, Node, ServerProc, cli_inproc, multipart

from floodwatch.server.chunks import CHUNK_DIR

UA = {"User-Agent": "ftagent/1.9.65"}
CHUNK = 2 * 1024 * 1024  # what the agent sends


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProc]:
    s = ServerProc(tmp_path_factory.mktemp("partc"), ["--max-upload-bytes", str(8 << 20)], backend=backend)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def node(srv: ServerProc) -> Node:
    return srv.add_node()


def post(srv: ServerProc, path: str, body: Any, node: Node, **kw: Any) -> Any:
    headers = {**UA, **kw.pop("headers", {})}
    return srv.post(path, body, node, headers=headers, **kw)


def incidents(srv: ServerProc, node: Node) -> list[dict[str, Any]]:
    return list(cli_inproc("incidents", "--node", node.uuid, *srv.store_args))


def shown(srv: ServerProc, incident_id: int) -> dict[str, Any]:
    return dict(cli_inproc("incident", "show", str(incident_id), *srv.store_args))


def open_body(**over: Any) -> dict[str, Any]:
    """An open as the official agent sends it: floats, a +00:00 offset, no severity."""
    body = {"peak_pps": 48211.7, "peak_bps": 38568801.3, "started_at": "2026-11-30T10:00:00.123456+00:00",
            "attack_family": "udp_flood", "attack_subtype": None, "baseline_pps": 211.4, "duration": 0,
            "gre_dedup_active": False, "top_src_ips": [{"ip": "198.18.7.2", "count": 431}], "source_ip_count": 1}
    body.update(over)
    return body


def update_body(**over: Any) -> dict[str, Any]:
    body = {"peak_pps": 61000.4, "peak_bps": 48800000.9, "attack_family": "tcp_flood", "attack_subtype": None,
            "protocol_breakdown": {"tcp": 91.5, "udp": 8.0, "icmp": 0.5, "other": 0.0}, "source_ip_count": 17,
            "total_packets": 90210, "top_src_ips": [{"ip": "198.18.7.2", "count": 5000}],
            "top_dst_ports": [{"port": 80, "count": 9000}], "ioc_hits": ["mirai:udp_flood"],
            "spoofing_detected": False, "botnet_detected": True, "fragment_count": 0, "fragment_pct": 0.0}
    body.update(over)
    return body


def resolve_body() -> dict[str, Any]:
    """A resolve: zeros and empties where the updates had sources, no status, no ended_at."""
    return {"duration_seconds": 42.5, "peak_pps": 61000.4, "peak_bps": 48800000.9, "attack_family": "tcp_flood",
            "attack_subtype": "ack_flood", "confidence": 70, "protocol_breakdown": {"tcp": 90.0, "udp": 10.0},
            "ioc_hits": [], "spoofing_detected": False, "botnet_detected": True, "total_packets": 120000,
            "source_ip_count": 0, "src_ip_entropy": 0.0, "top_src_ips": [], "top_dst_ports": [],
            "tcp_flag_breakdown": {"SYN": 0, "ACK": 0}, "velocity_curve": [{"t": 0, "pps": 48211.7}],
            "pkt_length_histogram": {"0-63": 10}, "ttl_distribution": {"64": 3}, "avg_pkt_length": 60.0}


def test_heartbeat_and_float_metrics_show_on_the_node(srv: ServerProc, node: Node) -> None:
    hb = {"version": "1.9.65", "baseline_ready": False, "baseline_avg_pps": 3.2, "interface": "eth0",
          "available_interfaces": [{"name": "eth0", "rx_bytes": 1}], "circuit_breaker": "closed"}
    assert post(srv, "heartbeat", hb, node).status == 200
    sample = {"pps": 115375.9, "bps": 92300720.4, "tcp_pct": 1.0, "udp_pct": 98.5, "icmp_pct": 0.5,
              "conn_count": 4, "threshold": 600.0, "avg_pps": 90000.1, "samples": 5}
    r = post(srv, "metrics", sample, node)
    assert r.status == 200 and r.json == {"accepted": 1}, r.raw
    me = next(n for n in cli_inproc("nodes", *srv.store_args) if n["node_uuid"] == node.uuid)
    assert me["status"] == "online" and me["agent_version"] == "1.9.65"
    token = cli_inproc("admin-token", *srv.store_args)["admin_token"]
    stored = srv.request("GET", f"/api/v1/admin/nodes/{node.uuid}/metrics",
                         headers={"Authorization": f"Bearer {token}"}).json
    assert [(m["pps"], m["bps"], m["conn_count"]) for m in stored] == [(115376, 92300720, 4)]


def test_open_update_resolve_as_the_agent_sends_them(srv: ServerProc, node: Node) -> None:
    cli_inproc_plain("set-threshold", node.uuid, "10000", *srv.store_args)  # to derive severity
    r = post(srv, "incidents", open_body(), node)
    assert r.status == 201, r.raw
    uuid = r.json["uuid"]
    again = post(srv, "incidents", open_body(), node)  # a retry after a lost answer: same incident
    assert again.status == 200 and again.json["uuid"] == uuid
    [inc] = incidents(srv, node)
    assert inc["severity"] == "medium"  # 48212 pps over a 10000 threshold: 4.8x (the detector's rule)
    assert inc["peak_pps"] == 48212 and inc["status"] == "active" and inc["incident_key"] == uuid
    assert inc["started_at"] == "2026-11-30T10:00:00.123Z"

    for _ in range(2):
        r = post(srv, f"incidents/{uuid}", update_body(), node)
        assert r.status == 200, r.raw
    [inc] = incidents(srv, node)
    assert inc["attack_family"] == "tcp_flood"  # outside part A's list: kept and shown
    assert inc["severity"] == "high" and inc["peak_pps"] == 61000  # 6.1x: escalated with the peak
    assert inc["ioc_matches"] == ["mirai:udp_flood"] and inc["botnet_detected"] is True
    assert inc["protocol_breakdown"]["other"] == 0.0 and inc["source_ip_count"] == 17

    r = post(srv, f"incidents/{uuid}/resolve", resolve_body(), node)
    assert r.status == 200 and r.json["status"] == "resolved", r.raw
    [inc] = incidents(srv, node)
    assert inc["status"] == "resolved" and inc["ended_at"] == "2026-11-30T10:00:42.623Z"
    assert inc["source_ip_count"] == 17 and inc["top_src_ips"] == [{"ip": "198.18.7.2", "count": 5000}]
    assert inc["top_dst_ports"] == [{"port": 80, "count": 9000}] and inc["ioc_matches"] == ["mirai:udp_flood"]
    assert inc["confidence"] == 70 and inc["attack_subtype"] == "ack_flood" and inc["updates"] == 3
    history = shown(srv, inc["incident_id"])["history"]
    assert [h["kind"] for h in history] == ["open", "update", "update", "resolve"]
    assert history[0]["body"]["baseline_pps"] == 211.4  # unknown fields kept, as sent
    assert history[0]["body"]["started_at"] == "2026-11-30T10:00:00.123456+00:00"
    assert history[1]["body"]["total_packets"] == 90210 and history[1]["body"]["ioc_hits"] == ["mirai:udp_flood"]
    assert history[3]["body"]["velocity_curve"] == [{"t": 0, "pps": 48211.7}]


def test_an_update_for_a_uuid_never_opened_here_opens_it(srv: ServerProc, node: Node) -> None:
    local = "3f0c8a52-1b6e-4f7e-9c55-0a1d2f0c9e77"  # the agent's own uuid after its open failed
    assert post(srv, f"incidents/{local}", update_body(attack_family="icmp_flood"), node).status == 200
    assert post(srv, f"incidents/{local}/resolve", resolve_body(), node).status == 200
    [inc] = incidents(srv, node)
    assert inc["incident_key"] == local and inc["status"] == "resolved"
    assert inc["severity"] == "medium"  # no threshold set: 61000 pps by its absolute size alone
    assert inc["source_ip_count"] == 17 and inc["attack_family"] == "tcp_flood"
    r = post(srv, "incidents/not%20a%20uuid/resolve", resolve_body(), node)
    assert r.status in (400, 404), r.raw


def test_bad_part_c_bodies_are_400_naming_the_field(srv: ServerProc, node: Node) -> None:
    uuid = post(srv, "incidents", open_body(started_at="2026-11-30T11:00:00+00:00"), node).json["uuid"]
    for body, field in ((open_body(peak_pps="lots"), "peak_pps"), (open_body(attack_family="UDP FLOOD!"),
                                                                     "attack_family"), ([1, 2], "body")):
        r = post(srv, "incidents", body, node)
        assert r.status == 400 and r.json["error"].startswith(field), r.raw
    r = post(srv, f"incidents/{uuid}", update_body(top_src_ips="x"), node)
    assert r.status == 400 and r.json["error"].startswith("top_src_ips"), r.raw
    assert len(incidents(srv, node)) == 1


def test_small_capture_as_multipart_field_pcap(srv: ServerProc, node: Node, tmp_path: Path) -> None:
    uuid = post(srv, "incidents", open_body(), node).json["uuid"]
    content = b"\xd4\xc3\xb2\xa1" + secrets.token_bytes(300_000)
    body, ctype = multipart([("pcap", f"{uuid}_20261130T100042Z.pcap", content)])
    r = srv.request("POST", f"incidents/{uuid}/pcap", node=node, raw=body, headers={**UA, "Content-Type": ctype})
    assert r.status == 201, r.raw
    assert_stored(srv, node, content, tmp_path)


def assert_stored(srv: ServerProc, node: Node, content: bytes, tmp_path: Path) -> None:
    [inc] = incidents(srv, node)
    assert inc["pcap_stored"] and inc["pcap_bytes"] == len(content)
    assert inc["pcap_sha256"] == hashlib.sha256(content).hexdigest()
    out = tmp_path / "fetched.pcap"
    cli_inproc_plain("fetch-pcap", str(inc["incident_id"]), "--out", str(out), *srv.store_args)
    assert out.read_bytes() == content


def cli_inproc_plain(*args: str) -> None:
    from floodwatch.server.cli import main

    assert main(list(args)) == 0


def chunk(srv: ServerProc, node: Node, uuid: str, upload: str, index: int, total: int, data: bytes) -> Any:
    return srv.request("POST", f"incidents/{uuid}/pcap", node=node, raw=data, headers={
        **UA, "Content-Type": "application/octet-stream", "X-Upload-Id": upload, "X-Chunk-Index": str(index),
        "X-Chunk-Total": str(total)})


def test_large_capture_in_chunks_with_a_repeat_and_a_restart(srv: ServerProc, node: Node, tmp_path: Path) -> None:
    uuid = post(srv, "incidents", open_body(), node).json["uuid"]
    content = secrets.token_bytes(2 * CHUNK + 12345)
    parts = [content[i:i + CHUNK] for i in range(0, len(content), CHUNK)]
    upload = secrets.token_hex(8)
    assert chunk(srv, node, uuid, upload, 0, 3, parts[0]).status == 202
    assert chunk(srv, node, uuid, upload, 2, 3, parts[2]).status == 409  # out of order
    assert chunk(srv, node, uuid, upload, 0, 3, parts[0]).status == 202  # the agent starts again at 0
    assert chunk(srv, node, uuid, upload, 1, 3, parts[1]).status == 202
    assert chunk(srv, node, uuid, upload, 1, 3, parts[1]).status == 202  # a repeat: not written twice
    assert not incidents(srv, node)[0]["pcap_stored"]
    r = chunk(srv, node, uuid, upload, 2, 3, parts[2])
    assert r.status == 201 and r.json["complete"] is True and r.json["bytes"] == len(content), r.raw
    assert_stored(srv, node, content, tmp_path)
    assert chunk(srv, node, uuid, "other", 1, 3, parts[1]).status == 409  # unknown upload
    assert chunk(srv, node, uuid, "bad id!", 0, 3, parts[0]).status == 400
    assert chunk(srv, node, "00000000-0000-4000-8000-000000000000", upload, 0, 1, b"x").status == 404
    leftovers = [p for p in srv.pcap_dir.iterdir() if p.name.startswith(".upload-") and p.is_file()]
    assert leftovers == [] and list((srv.pcap_dir / CHUNK_DIR).iterdir()) == []


def test_commands_carry_command_text_and_the_ack_lands(srv: ServerProc, node: Node) -> None:
    cid = cli_inproc("queue-command", node.uuid, "iptables -I INPUT -s 198.18.7.2 -j DROP",
                     *srv.store_args)["command_id"]
    token = cli_inproc("admin-token", *srv.store_args)["admin_token"]
    srv.request("POST", f"/api/v1/admin/nodes/{node.uuid}/config", headers={"Authorization": f"Bearer {token}"},
                body={"ioc_patterns": [{"pattern": "deadbeef", "name": "mirai", "attack_family": "udp_flood"},
                                       "cafebabe"]})
    cfg = srv.request("GET", "config", node=node, headers=UA).json
    assert cfg["pending_commands"] == [{"id": cid, "command": "iptables -I INPUT -s 198.18.7.2 -j DROP",
                                        "command_text": "iptables -I INPUT -s 198.18.7.2 -j DROP",
                                        "command_type": "iptables",
                                        "title": "iptables -I INPUT -s 198.18.7.2 -j DROP"}]
    assert [(p["pattern"], p["attack_name"], p["attack_family"]) for p in cfg["ioc_patterns"]] == [
        ("deadbeef", "mirai", "udp_flood"), ("cafebabe", "cafebabe", "unknown")]
    r = post(srv, "commands/ack", {"command_id": cid, "status": "applied", "error": None}, node)
    assert r.status == 200, r.raw
    [cmd] = cli_inproc("commands", node.uuid, *srv.store_args)
    assert cmd["status"] == "applied" and cmd["acked_at"] is not None
    assert srv.request("GET", "config", node=node, headers=UA).json["pending_commands"] == []


@pytest.mark.parametrize("path", ["gre-tunnels", "vm-stats", "sp/metrics", "sp/blocks", "l7/detect", "l7/metrics",
                                  "mirror-metrics"])
def test_the_agents_other_endpoints_answer_404_saying_so(srv: ServerProc, node: Node, path: str) -> None:
    r = post(srv, path, {"tunnels": []}, node)
    assert r.status == 404 and "not supported" in r.json["error"], r.raw
    assert srv.post(path, {}, None, headers=UA).status == 401


def test_overload_is_503_with_retry_after_for_the_official_agent(tmp_path: Path) -> None:
    s = ServerProc(tmp_path, ["--rate-limit", "0.5", "--rate-burst", "2"]).start()
    try:
        n = s.add_node()
        sample = {"pps": 1.5, "bps": 12.0}
        answers = [s.post("metrics", sample, n, headers=UA) for _ in range(4)]
        assert [a.status for a in answers[:2]] == [200, 200]
        assert answers[-1].status == 503 and int(answers[-1].headers["Retry-After"]) >= 1
        plain = s.post("metrics", sample, n)  # a part-A client keeps 429
        assert plain.status == 429 and "Retry-After" in plain.headers
        assert s.post("incidents", open_body(), n).status == 503  # a part-C route: 503 whatever the agent
    finally:
        s.stop()


def test_stale_chunked_uploads_expire_and_in_progress_ones_are_bounded(tmp_path: Path) -> None:
    from floodwatch.server.chunks import ChunkedUploads

    t = [1000.0]
    uploads = ChunkedUploads(tmp_path, 1 << 20, 1.0, stale_after=300.0, max_open=2, clock=lambda: t[0])
    (tmp_path / "few").mkdir()
    few = ChunkedUploads(tmp_path / "few", 1 << 20, 1.0, max_open=100)
    uploads._start((1, 1, "a"), 3)
    t[0] += 200
    uploads._start((1, 1, "b"), 3)
    uploads._start((1, 1, "b"), 3)  # chunk 0 again: the same upload, not one more
    with pytest.raises(Exception, match="too many") as refused:
        uploads._start((1, 2, "c"), 3)
    assert getattr(refused.value, "status", None) == 503
    for n in range(3):  # one node holds at most MAX_OPEN_PER_NODE, whatever room is left
        few._start((7, 1, f"n{n}"), 2)
    with pytest.raises(Exception, match="too many"):
        [few._start((7, 1, f"m{n}"), 2) for n in range(2)]
    assert few.in_progress() == 4
    few._start((8, 1, "other-node"), 2)  # another node still has room
    t[0] += 150  # "a" untouched for 350 s, "b" for 150 s
    # a second process on the same directory (a replica) sees the same uploads and expires them alike
    replica = ChunkedUploads(tmp_path, 1 << 20, 1.0, stale_after=300.0, max_open=2, clock=lambda: t[0])
    assert replica.in_progress() == 2
    assert replica.expire() == 1 and uploads.in_progress() == 1
    assert len(list((tmp_path / CHUNK_DIR).glob("*.part"))) == 1
    t[0] += 1000
    assert uploads.expire() == 1 and list((tmp_path / CHUNK_DIR).iterdir()) == []
