"""Notifications end to end: the real server (a subprocess) with channels of every kind pointed at real
local receivers (aiohttp, aiosmtpd with STARTTLS + AUTH); incidents arrive through the agent API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import BusHarness, base_config, eventually, free_port, start_actor, stop_process, write_config
from tests.pgcluster import bindir
from tests.server.fwserver_util import Backend, Node, ServerProc, cli_json, incident_body, pg_backend
from tests.server.notify_peers import Reply
from tests.server.notify_setup import LINK_BASE, Peers, webhook_events

pytestmark = pytest.mark.slow
KINDS = ("webhook", "pagerduty", "slack", "discord", "teams", "telegram")



def counts(peers: Peers) -> dict[str, int]:
    """Distinct messages each receiver accepted (the webhook: channel `hook` only), and mails."""
    out = {k: len(peers.rx.unique(k)) for k in KINDS if k != "webhook"}
    out["webhook"] = len(webhook_events(peers, "hook"))
    out["email"] = len(peers.smtp.unique())
    return out


def wait_counts(peers: Peers, n: int, timeout: float = 20) -> None:
    eventually(lambda: all(v >= n for v in counts(peers).values()), timeout, message=f"{n} per kind: {counts(peers)}")
    assert all(v == n for v in counts(peers).values()), counts(peers)
    assert peers.rx.errors == [], peers.rx.errors


def test_open_escalate_resolve_reach_every_kind_once(peers: Peers, tmp_path: Path, fresh_backend: Backend) -> None:
    config = peers.config()
    (tmp_path / "last.toml").write_text(config.read_text())
    srv = ServerProc(tmp_path, ["--config", str(config)], backend=fresh_backend).start()
    try:
        node = srv.add_node("web-1")
        opened = srv.post("incident", incident_body(), node)
        assert opened.status == 201
        iid = opened.json["incident_id"]
        wait_counts(peers, 1)
        # an update that changes nothing a person cares about says nothing; an escalation does
        assert srv.post("incident", {"incident_id": iid, "peak_pps": 150000, "severity": "high"}, node).status == 200
        assert srv.post("incident", {"incident_id": iid, "severity": "critical"}, node).status == 200
        wait_counts(peers, 2)
        assert srv.post("incident", {"incident_id": iid, "status": "resolved",
                                     "ended_at": "2026-11-28T10:04:12Z"}, node).status == 200
        wait_counts(peers, 3)
        assert webhook_events(peers, "hook") == ["incident.opened", "incident.escalated", "incident.resolved"]
        # filters: critical-only hears from the escalation on (and then of the resolve); the others nothing
        assert webhook_events(peers, "crit-only") == ["incident.escalated", "incident.resolved"]
        assert webhook_events(peers, "other-node") == [] and webhook_events(peers, "dns-only") == []
        check_contents(peers, iid)
    finally:
        srv.stop()
    log = srv.log()
    for secret in peers.secrets():
        assert secret not in log
    status = {r["channel"]: r for r in cli_json("notify", "status", "--config", str(srv.tmp / "last.toml"),
                                                  *srv.store_args)}
    assert status["hook"]["sent"] == 3 and status["hook"]["pending"] == 0 and status["crit-only"]["sent"] == 2


def check_contents(peers: Peers, iid: int) -> None:
    link = f"{LINK_BASE}/incidents/{iid}"
    pd = [g.body for g in peers.rx.messages("pagerduty")]
    assert [b["event_action"] for b in pd] == ["trigger", "trigger", "resolve"]
    assert len({b["dedup_key"] for b in pd}) == 1
    assert pd[0]["payload"]["severity"] == "error" and pd[1]["payload"]["severity"] == "critical"
    assert pd[0]["payload"]["source"] == "web-1" and pd[0]["links"][0]["href"] == link
    hook = [g.body for g in peers.rx.messages("webhook") if g.body["channel"] == "hook"]
    assert hook[0]["incident"]["incident_id"] == iid and hook[0]["link"] == link
    assert "severity high -> critical" in hook[1]["reason"]
    assert "after 4m12s" in hook[2]["title"] and "Duration: 4m12s" in hook[2]["text"]
    slack = peers.rx.messages("slack")[0].body
    text = str(slack["blocks"])
    for part in ("web-1", "udp_flood/dns_amplification", "120.0 kpps", "198.18.0.1", "198.18.0.9 (500)", link):
        assert part in text, part
    discord = peers.rx.messages("discord")[0].body
    assert discord["allowed_mentions"] == {"parse": []} and discord["embeds"][0]["url"] == link
    teams = peers.rx.messages("teams")[0].body["attachments"][0]["content"]
    assert teams["actions"][0]["url"] == link
    tg = peers.rx.messages("telegram")[0].body
    assert tg["chat_id"] == "-100200300" and "<b>DDoS attack on web-1" in tg["text"]
    mails = list(peers.smtp.unique().values())
    assert mails[0]["Subject"].startswith("[floodwatch] DDoS attack on web-1")
    assert mails[2]["Subject"].startswith("[floodwatch] DDoS attack on web-1 resolved")
    types = [part.get_content_type() for part in mails[0].walk()]
    assert "text/plain" in types and "text/html" in types


def test_failing_receivers_still_get_exactly_one_of_each(peers: Peers, tmp_path: Path,
                                                        fresh_backend: Backend) -> None:
    retry_429 = Reply(429, '{"retry_after": 2}', {"Retry-After": "2"})
    for kind in ("webhook", "slack", "discord", "teams", "pagerduty"):
        peers.rx.fail[kind] = [Reply(500, "boom"), Reply(503, "busy"), retry_429]
    peers.rx.fail["telegram"] = [Reply(502), Reply(429, '{"ok":false,"error_code":429,"description":"Too Many '
                                              'Requests: retry after 2","parameters":{"retry_after":2}}')]
    channels = [c for c in peers.channels() if c["name"] in ("hook", "pd", "chat-slack", "chat-discord",
                                                               "chat-teams", "tg", "mail")]
    srv = ServerProc(tmp_path, ["--config", str(peers.config(channels))], backend=fresh_backend).start()
    try:
        node = srv.add_node("web-2")
        iid = srv.post("incident", incident_body(), node).json["incident_id"]
        assert srv.post("incident", {"incident_id": iid, "status": "resolved",
                                     "ended_at": "2026-11-28T10:01:00Z"}, node).status == 200
        wait_counts(peers, 2, timeout=40)
    finally:
        srv.stop()
    assert webhook_events(peers, "hook") == ["incident.opened", "incident.resolved"]
    for kind in ("webhook", "slack", "discord", "teams", "pagerduty", "telegram"):
        attempts = [(t, status) for k, t, status in peers.rx.attempts if k == kind]
        limited = next(t for t, status in attempts if status == 429)
        after = [t for t, _ in attempts if t > limited]
        assert after and after[0] - limited >= 1.9, f"{kind}: Retry-After not honoured"


def test_server_killed_mid_delivery_resends_with_the_same_key(peers: Peers, tmp_path: Path,
                                                              fresh_backend: Backend) -> None:
    channels = [c for c in peers.channels() if c["name"] in ("hook", "pd")]
    config = peers.config(channels)
    peers.rx.hold.add("webhook")  # the receiver takes the open and never answers: the server is killed waiting
    srv = ServerProc(tmp_path, ["--config", str(config)], backend=fresh_backend).start()
    node = srv.add_node("web-3")
    iid = srv.post("incident", incident_body(), node).json["incident_id"]
    eventually(lambda: peers.rx.messages("webhook"), 20, message="the held webhook delivery")
    eventually(lambda: peers.rx.messages("pagerduty"), 20, message="the trigger")
    srv.kill9()
    peers.rx.hold.clear()
    # on PostgreSQL the dead process's channel leases are taken over at once (it ran on this host)
    srv = ServerProc(tmp_path, ["--config", str(config)], backend=fresh_backend).start()
    try:
        deliveries = eventually(lambda: len(peers.rx.messages("webhook")) >= 2 and peers.rx.messages("webhook"), 20,
                                message="the open sent again after the restart")
        assert deliveries[0].key == deliveries[1].key, "a redelivery must carry the same delivery id"
        assert srv.post("incident", {"incident_id": iid, "status": "resolved",
                                     "ended_at": "2026-11-28T10:02:00Z"}, node).status == 200
        eventually(lambda: len(webhook_events(peers, "hook")) == 2, 20, message="the resolve")
        eventually(lambda: len(peers.rx.unique("pagerduty")) == 2, 20, message="the PagerDuty resolve")
    finally:
        srv.stop()
    assert webhook_events(peers, "hook") == ["incident.opened", "incident.resolved"]
    assert [g.body["event_action"] for g in peers.rx.unique("pagerduty").values()] == ["trigger", "resolve"]
    assert peers.rx.errors == []


def test_a_storm_is_rate_limited_into_a_digest(peers: Peers, tmp_path: Path,
                                               request: pytest.FixtureRequest) -> None:
    """On both stores at once: the storm waits out a real minute of the rate limit, so the SQLite and the
    PostgreSQL server share that minute (each its own channel, told apart by name) instead of two."""
    backends = {"sqlite": Backend()}
    if bindir() is not None:
        backends["postgresql"] = pg_backend(request.getfixturevalue("pg_cluster"), tmp_path)
    servers, ids = {}, {}
    try:
        for kind, backend in backends.items():
            channel = {**peers.channels()[0], "name": f"storm-{kind}", "rate_per_minute": 3}
            servers[kind] = srv = ServerProc(tmp_path / kind, ["--config", str(peers.config([channel]))],
                                             backend=backend).start()
            nodes = [srv.add_node(f"edge-{i:02d}") for i in range(12)]
            ids[kind] = {srv.post("incident", incident_body(), n).json["incident_id"] for n in nodes}
        eventually(lambda: all(len(storm_reported(peers, k)) >= 12 for k in backends), 100, interval=0.2,
                   message="every incident reported")
    finally:
        for srv in servers.values():
            srv.stop()
    for kind in backends:
        assert sorted(storm_reported(peers, kind)) == sorted(ids[kind]), f"{kind}: each incident exactly once"
        got = [g for g in peers.rx.unique("webhook").values() if g.body["channel"] == f"storm-{kind}"]
        times = sorted(g.at for g in got)
        assert all(later - first >= 59 for first, later in zip(times, times[3:])), f"{kind}: over 3 a minute"
        digest = [g.body for g in got if g.body["type"] == "incidents.digest"]
        # the first minute's 3 messages (single incidents, or a digest of those that came in together
        # while the notifier was busy), then everything still waiting in one digest
        assert digest and len(got) <= 4, f"{kind}: the storm is folded into digests"
        for d in digest:
            assert len(d["incidents"]) >= 2 and d["title"] == f"{len(d['incidents'])} nodes under attack"


def storm_reported(peers: Peers, kind: str) -> list[int]:
    """The incident ids the `storm-KIND` channel told, alone or in a digest."""
    out = []
    for g in peers.rx.unique("webhook").values():
        if g.body["channel"] == f"storm-{kind}":
            items = g.body.get("incidents") or [{"incident": g.body["incident"]}]
            out += [i["incident"]["incident_id"] for i in items]
    return out


def test_the_embedded_server_actor_notifies_too(peers: Peers, harness: BusHarness, tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "actor.toml", base_config(
        tmp_path, harness.endpoints, apiserver={"listen": f"127.0.0.1:{port}"},
        notify={"backoff_initial": 0.2, "channel": [peers.channels()[0]]}))
    proc = start_actor("apiserver", cfg, tmp_path / "actor.log")
    try:
        harness.wait_ready("apiserver")
        creds = json.loads((tmp_path / "state" / "server-local-node.json").read_text())
        srv = ServerProc(tmp_path, port=port)
        assert srv.post("incident", incident_body(), Node(creds["node_uuid"], creds["api_key"])).status == 201
        eventually(lambda: webhook_events(peers, "hook") == ["incident.opened"], 20, message="the open")
        eventually(lambda: harness.counters("apiserver").get("notify_sent", 0) == 1, 20,
                   message="notify counters in the actor's heartbeat")
    finally:
        assert stop_process(proc) == 0, (tmp_path / "actor.log").read_text()


def test_incidents_of_official_agents_part_c_notify_the_same_way(peers: Peers, tmp_path: Path,
                                                                fresh_backend: Backend) -> None:
    srv = ServerProc(tmp_path, ["--config", str(peers.config([peers.channels()[0]]))], backend=fresh_backend).start()
    try:
        node = srv.add_node("ft-1")
        opened = srv.post("incidents", {"attack_family": "udp_flood", "attack_subtype": None, "peak_pps": 90000.0,
                                        "peak_bps": 7.2e8, "started_at": "2026-11-28T10:00:00+00:00",
                                        "top_src_ips": [{"ip": "198.18.0.7", "count": 10}], "source_ip_count": 1},
                          node)
        assert opened.status == 201, opened.raw
        uuid = opened.json["uuid"]
        assert srv.post(f"incidents/{uuid}", {"peak_pps": 95000.0, "attack_family": "udp_flood"}, node).status == 200
        resolve = srv.post(f"incidents/{uuid}/resolve", {"duration_seconds": 42, "confidence": 80}, node)
        assert resolve.status == 200, resolve.raw
        eventually(lambda: len(webhook_events(peers, "hook")) >= 2, 20, message="open and resolve")
    finally:
        srv.stop()
    assert webhook_events(peers, "hook") == ["incident.opened", "incident.resolved"]
    assert peers.rx.errors == []
