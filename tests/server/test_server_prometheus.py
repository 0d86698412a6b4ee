"""GET /metrics of the real server (`floodwatch server`), scraped by the real Prometheus: the fleet as
the agents reported it, requests and storage work, the token rule."""

from __future__ import annotations

import http.client
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_netns
from tests.helpers import PYTHON, eventually, free_port, netns_pair, write_config
from tests.prom_util import Prometheus, Target, require_prometheus
from tests.server.fwserver_util import Backend, Node, ServerProc, incident_body

pytestmark = pytest.mark.slow


def scrape(srv: ServerProc, token: str | None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"} if token else {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


@pytest.fixture
def fleet(tmp_path: Path, backend: Backend) -> Iterator[tuple[ServerProc, Prometheus, str]]:
    """A server (on SQLite, then on PostgreSQL) scraped by a real Prometheus."""
    require_prometheus()
    token = secrets.token_hex(20)
    token_file = tmp_path / "metrics.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    cfg = write_config(tmp_path / "server.toml", {
        "agent": {"state_dir": str(tmp_path / "state")},
        "apiserver": {"metrics_token_file": str(token_file), "offline_after": 3.0}})
    srv = ServerProc(tmp_path, ["--config", str(cfg)], backend=backend).start()
    prom = None
    try:
        prom = Prometheus([Target("server", f"127.0.0.1:{srv.port}", str(token_file))], free_port()).start()
        yield srv, prom, token
    finally:
        if prom is not None:
            prom.stop()
        srv.stop()


def report(srv: ServerProc, node: Node, pps: int, bps: int, at: str) -> None:
    assert srv.post("heartbeat", {"agent_version": "0.1.0", "os": "linux", "uptime": 10}, node).status == 200
    assert srv.post("metrics", {"pps": pps, "bps": bps, "timestamp": at}, node).status == 200


def test_prometheus_sees_the_fleet_requests_and_storage(fleet: tuple[ServerProc, Prometheus, str]) -> None:
    srv, prom, token = fleet
    alpha, beta, _never_seen = srv.add_node("alpha"), srv.add_node("beta"), srv.add_node("gamma")
    report(srv, beta, 500, 4_000, "2026-11-30T10:00:00Z")
    report(srv, alpha, 1_000, 8_000, "2026-11-30T10:00:00Z")
    report(srv, alpha, 250_000, 2_000_000_000, "2026-11-30T10:00:01Z")  # the latest sample wins
    for node in (alpha, alpha, beta):
        assert srv.post("incident", incident_body(), node).status == 201
    assert srv.post("incident", incident_body(attack_family="syn_flood", status="resolved",
                                              ended_at="2026-11-28T10:05:00Z"), beta).status == 201
    assert srv.post("heartbeat", {"agent_version": "0.1.0"}, Node(alpha.uuid, "fwk_wrong")).status == 401
    probe = f"/api/v1/agent/no-such-route-{secrets.token_hex(4)}"
    assert srv.request("GET", probe).status == 404

    eventually(lambda: prom.value('up{job="server"}') == 1, 20, interval=0.3, message="server scraped")

    def beta_offline_alpha_online() -> bool:  # beta stops reporting; alpha goes on
        srv.post("heartbeat", {"agent_version": "0.1.0"}, alpha)
        return prom.query("floodwatch_server_nodes") == {"status=new": 1, "status=offline": 1, "status=online": 1}

    eventually(beta_offline_alpha_online, 30, interval=0.5, message="alpha online, beta offline, gamma new")
    assert prom.query("floodwatch_server_incidents_active") == {"family=udp_flood": 3}
    assert prom.value("floodwatch_server_node_last_pps{node=\"alpha\"}") == 250_000
    assert prom.value("floodwatch_server_node_last_bps{node=\"alpha\"}") == 2_000_000_000
    assert prom.value("floodwatch_server_node_last_pps{node=\"beta\"}") == 500
    assert prom.value('floodwatch_server_node_online{node="beta"}') == 0
    assert prom.query('floodwatch_server_node_last_pps{node="gamma"}') == {}  # never reported
    requests = "floodwatch_server_http_request_duration_seconds_count"
    assert prom.value(f'{requests}{{route="/api/v1/agent/incident",method="POST",code="2xx"}}') == 4
    assert prom.value(f'{requests}{{route="/api/v1/agent/heartbeat",method="POST",code="4xx"}}') == 1
    assert prom.value('floodwatch_server_storage_operation_duration_seconds_count{operation="upsert_incident"}') == 4
    assert prom.value("floodwatch_server_auth_failures_total") == 1
    assert prom.value(f'{requests}{{route="unmatched",method="GET",code="4xx"}}') == 1  # never the raw path
    assert prom.metric_type("floodwatch_server_http_request_duration_seconds") == "histogram"
    assert prom.metric_type("floodwatch_server_requests_total") == "counter"

    status, body = scrape(srv, None)
    assert status == 401 and "bearer token" in body  # a token is set: loopback is not enough
    assert scrape(srv, "x" * 40)[0] == 401
    status, body = scrape(srv, token)
    assert status == 200
    assert token not in body and alpha.key not in body and alpha.uuid not in body
    assert probe not in body
    checked = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_without_a_token_only_loopback_clients_are_answered(tmp_path: Path) -> None:
    """The server on a veth address in a namespace; a client in the other namespace gets 403."""
    require_netns()
    get = ("import sys, urllib.request, urllib.error\n"
           "try:\n    print(urllib.request.urlopen(sys.argv[1], timeout=10).status)\n"
           "except urllib.error.HTTPError as e:\n    print(e.code)")
    with netns_pair("fwpra") as pair:
        srv = ServerProc(tmp_path, ["--listen", f"{pair.ip4_b}:0"], wrap=["ip", "netns", "exec", pair.ns_b]).start()
        try:
            url = f"http://{pair.ip4_b}:{srv.port}"
            remote = pair.run(pair.ns_a, [PYTHON, "-c", get, f"{url}/metrics"], timeout=30).stdout.strip()
            health = pair.run(pair.ns_a, [PYTHON, "-c", get, f"{url}/api/v1/health"], timeout=30).stdout.strip()
        finally:
            srv.stop()
    assert (remote, health) == ("403", "200")


def test_metrics_endpoint_off(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "server.toml", {"apiserver": {"metrics_endpoint": False}})
    srv = ServerProc(tmp_path, ["--config", str(cfg)]).start()
    try:
        assert scrape(srv, None)[0] == 404
    finally:
        srv.stop()
