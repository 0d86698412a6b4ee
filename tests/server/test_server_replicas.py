"""Two server replicas on one PostgreSQL behind a real nginx (tests/server/replicas.py), agents made of the
reporter's own parts (tests/server/replica_agents.py): one replica SIGKILLed under load loses nothing
and stores nothing twice.
Needs PostgreSQL and nginx (scripts/setup.sh --dev)."""

from __future__ import annotations

import asyncio
import http.client
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from floodwatch.messages import IncidentOpened, IncidentResolved, IncidentUpdated
from floodwatch.reporter.mapping import iso
from tests.helpers import eventually
from tests.pgcluster import PgCluster
from tests.server.fwserver_util import Node, cli_inproc, pg_backend
from tests.server.replica_agents import Agent, drained, running
from tests.server.replicas import Replicas, have_nginx, replicas

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not have_nginx(), reason="needs nginx (scripts/setup.sh --dev)")]

M0 = float(int(time.time()) - 3600)  # samples an hour old: inside the server's retention
T0 = M0 + 0.5
AGENTS = 8
RATE = 10.0  # metric samples per agent per second of the test (each its own recorded second)


@pytest.fixture
def fleet(pg_cluster: PgCluster, tmp_path: Path) -> Iterator[Replicas]:
    """Two replicas on a fresh database of the session's cluster, behind nginx."""
    with replicas(pg_backend(pg_cluster, tmp_path), count=2) as f:
        yield f


def incident(cls: type, key: str, seq: int, **kw: Any) -> Any:
    base: dict[str, Any] = dict(
        incident_key=key, status="active", attack_family="udp_flood", attack_subtype="dns_amplification",
        severity="high", confidence=90, started_at=T0, ended_at=None, updated_at=T0 + seq, seq=seq,
        peak_pps=100_000 + seq, peak_bps=900_000_000, protocol_breakdown={"udp": 99.0, "tcp": 1.0},
        tcp_flag_breakdown={}, geo_breakdown={"US": 10}, source_ip_count=321,
        top_src_ips=[{"ip": "198.18.0.9", "count": 50}], top_dst_ports=[{"port": 53, "count": 9}],
        target_ips=["198.18.1.2"], ioc_matches=[], spoofing_detected=False, botnet_detected=False)
    base.update(kw)
    return cls(**base)


class Admin:
    """The admin API (an operator's view), through `base` (nginx, or one replica)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str) -> None:
        self.session, self.base, self.headers = session, base.rstrip("/"), {"Authorization": f"Bearer {token}"}

    async def get(self, path: str, **params: Any) -> Any:
        async with self.session.get(f"{self.base}/api/v1/admin/{path}", params=params, headers=self.headers) as r:
            assert r.status == 200, (path, r.status, await r.text())
            return await r.json()

    async def queue(self, node: str, command: str) -> int:
        async with self.session.post(f"{self.base}/api/v1/admin/nodes/{node}/commands", json={"command": command},
                                     headers=self.headers) as r:
            assert r.status == 201, (r.status, await r.text())
            return int((await r.json())["command_id"])


def make_nodes(store_args: list[str], n: int) -> list[Node]:
    nodes = []
    for i in range(n):
        out = cli_inproc("add-node", f"agent-{i}", *store_args)
        nodes.append(Node(out["node_uuid"], out["api_key"]))
    return nodes


async def feed(agents: list[Agent], start: int, stop: int) -> None:
    """Seconds start..stop-1 of every agent (RATE a second), heartbeats, an incident update every 5th."""
    for tick in range(start, stop):
        for i, a in enumerate(agents):
            a.second(M0 + tick, 1000 + tick)
            if tick % 5 == 0:
                a.incident(incident(IncidentUpdated, f"attack-{i}", tick // 5 + 1))
            if tick % int(RATE) == 0:
                a.heartbeat(tick / RATE)
        await asyncio.sleep(1 / RATE)


async def kill_under_load(fleet: Replicas, agents: list[Agent], admin: Admin, nodes: list[Node]
                          ) -> tuple[float, dict[str, list[int]]]:
    """Load, commands queued before and after the kill, replica 0 SIGKILLed mid-load (frozen for a second
    before, so requests are surely in flight there); returns the kill's time and each node's commands."""
    commands: dict[str, list[int]] = {n.uuid: [] for n in nodes}
    for i, a in enumerate(agents):
        a.incident(incident(IncidentOpened, f"attack-{i}", 0))
    await feed(agents, 0, 30)
    for n in nodes:
        commands[n.uuid].append(await admin.queue(n.uuid, "iptables -I INPUT -s 198.18.0.7 -j DROP"))
    load = asyncio.ensure_future(feed(agents, 30, 80))
    await asyncio.sleep(0.5)
    fleet.freeze(0)  # what nginx passes to replica 0 now waits there, then dies with it
    await asyncio.sleep(1.0)
    fleet.kill(0)
    killed_at = time.time()
    for n in nodes:  # queued through nginx while a replica is dead: lands on the live one
        commands[n.uuid].append(await admin.queue(n.uuid, "tc qdisc show"))
    await load
    for i, a in enumerate(agents):
        a.incident(incident(IncidentResolved, f"attack-{i}", 99, status="resolved", ended_at=T0 + 99))
    return killed_at, commands


async def check_stored(admin: Admin, agents: list[Agent], commands: dict[str, list[int]]) -> None:
    for i, a in enumerate(agents):
        sent = {r.body["recorded_at"]: r for r in a.delivered("metrics")}
        assert sorted(sent) == [iso(M0 + t) for t in range(80)] and len(a.delivered("metrics")) == 80
        stored = Counter(m["recorded_at"] for m in await admin.get(f"nodes/{a.node_uuid}/metrics",
                                                                    since=iso(M0 - 1), limit=10000))
        assert set(stored) == set(sent), f"agent {i}: lost {sorted(set(sent) - set(stored))[:5]}"
        # Exactly once: a sample the dying replica committed without answering is retried by the agent and
        # recognised by the server (node and recorded_at), not stored again (docs/server.md)
        twice = {t: n for t, n in stored.items() if n != 1}
        assert not twice, f"agent {i}: stored more than once: {twice}"
        (inc,) = await admin.get("incidents", node=a.node_uuid)  # one incident, not one per retry
        assert inc["incident_key"] == f"attack-{i}" and inc["status"] == "resolved"
        peaks = [h["body"].get("peak_pps") for h in (await admin.get(f"incidents/{inc['incident_id']}"))["history"]]
        assert set(peaks) == {100_000 + s for s in (0, *range(1, 17), 99)}, f"agent {i}: updates {peaks}"
        assert peaks == sorted(peaks), f"agent {i}: updates out of order {peaks}"  # open first, resolution last
        rows = {c["id"]: c for c in await admin.get(f"nodes/{a.node_uuid}/commands")}
        for cid in commands[a.node_uuid]:
            assert rows[cid]["status"] == "applied" and rows[cid]["acked_at"], rows[cid]
        acks = Counter(r.body["command_id"] for r in a.delivered("ack"))
        assert acks == Counter(commands[a.node_uuid]), f"agent {i}: each command acked once: {acks}"
        assert a.outbox.dead_letters == 0, a.outbox.dead_letter_rows()
        beats = a.delivered("heartbeat")
        node = await admin.get(f"nodes/{a.node_uuid}")
        assert len(beats) >= 2 and node["uptime"] == beats[-1].body["uptime"] and node["os"] == "replica-test"


def check_failover(fleet: Replicas, agents: list[Agent], killed_at: float) -> None:
    """The agents kept delivering, through the live replica only, once nginx knew the other was gone."""
    live = f"127.0.0.1:{fleet.ports[1]}"
    after = [line for line in fleet.nginx.access() if float(line[0]) > killed_at + 0.5]
    assert len(after) > AGENTS * 40, "the agents kept reporting after the kill"
    served = Counter(line[4].split(", ")[-1] for line in after)
    assert set(served) == {live}, f"after the kill, requests went only to the live replica: {served}"
    late = [line for line in after if line[3].startswith("5")]
    assert not late, f"no error once the dead replica was known: {late[:3]}"
    lost = [line for line in fleet.nginx.access() if line[3] == "502"]
    assert lost and sum(a.deliverer.counters["retries"] for a in agents) >= len(lost), "the kill cost answers"


def test_replica_killed_under_load_loses_and_doubles_nothing(fleet: Replicas, tmp_path: Path) -> None:
    """Eight agents (both dialects) report metrics, heartbeats, an incident with updates and acks through
    nginx; replica 0 is SIGKILLed mid-load. Every sample the agents counted as delivered is stored exactly
    once (also one whose answer was lost in the kill: the agent's retry is recognised), each incident once
    with every update in order, every command delivered and acked once, and the agents went on through
    replica 1."""
    nodes = make_nodes(fleet.store_args, AGENTS)
    token = cli_inproc("admin-token", *fleet.store_args)["admin_token"]

    async def scenario() -> None:
        agents = [Agent(tmp_path / f"agent-{i}", fleet.url, n.uuid, n.key, ("flowtriq", "published")[i % 2])
                  for i, n in enumerate(nodes)]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session, running(agents):
            admin = Admin(session, fleet.nginx.url, token)
            killed_at, commands = await kill_under_load(fleet, agents, admin, nodes)
            await drained(agents, 60)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while any(len(a.executed) < 2 for a in agents) or any(a.pending for a in agents):
                assert loop.time() < deadline, {a.node_uuid[:8]: a.commands for a in agents}
                await asyncio.sleep(0.1)
            await check_stored(admin, agents, commands)
            check_failover(fleet, agents, killed_at)

    asyncio.run(asyncio.wait_for(scenario(), 180))


def test_command_queued_on_one_replica_reaches_an_agent_on_the_other(fleet: Replicas, tmp_path: Path) -> None:
    """No state only one replica knows: an operator queues a command on replica A, the agent polls
    replica B, runs it and acks it there; A shows the ack. An incident opened through A is updated and
    resolved through B (the part-C uuid is the database's, not a replica's)."""
    (node,) = make_nodes(fleet.store_args, 1)
    token = cli_inproc("admin-token", *fleet.store_args)["admin_token"]

    async def scenario() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            on_a = Admin(session, fleet.replica_url(0).rsplit("/api/", 1)[0], token)
            opener = Agent(tmp_path / "via-a", fleet.replica_url(0), node.uuid, node.key, "flowtriq")
            async with running([opener]):
                opener.incident(incident(IncidentOpened, "cross", 0))
                await drained([opener], 20)
                ref = opener.outbox.incident_ref("cross")
            assert ref
            cid = await on_a.queue(node.uuid, "iptables -I INPUT -s 198.18.0.77 -j DROP")
            agent = Agent(tmp_path / "via-b", fleet.replica_url(1), node.uuid, node.key, "flowtriq")
            agent.outbox.set_incident_ref("cross", ref)  # the same agent's state, now talking to replica B
            async with running([agent]):
                agent.incident(incident(IncidentUpdated, "cross", 1))
                agent.incident(incident(IncidentResolved, "cross", 2, status="resolved", ended_at=T0 + 2))
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 20
                while not agent.executed or agent.pending:
                    assert loop.time() < deadline, (agent.commands, agent.pending, agent.health)
                    await asyncio.sleep(0.05)
            assert agent.executed == [cid]
            (cmd,) = await on_a.get(f"nodes/{node.uuid}/commands")
            assert cmd["status"] == "applied" and cmd["acked_at"] and cmd["output"].startswith("ran iptables")
            (inc,) = await on_a.get("incidents", node=node.uuid)
            assert inc["status"] == "resolved" and inc["updates"] >= 2, inc

    asyncio.run(asyncio.wait_for(scenario(), 240))


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def _listens(port: int) -> bool:
    """The replica receives node removals (its credentials cache keeps keys 60 s from now on)."""
    return "floodwatch_server_node_listens_total 1" in _get(port, "/metrics")[1]


def _refused(port: int, node: Node) -> bool:
    return _get(port, "/api/v1/agent/config", node.headers())[0] == 401


def test_a_node_removed_elsewhere_is_refused_by_every_replica_at_once(fleet: Replicas) -> None:
    """Both replicas have the node's key cached (60 s while they listen); `remove-node` (the CLI, as the
    dashboard of any replica would) NOTIFYs the removal and both refuse the key well within that."""
    node, other = make_nodes(fleet.store_args, 2)
    for port in fleet.ports:
        eventually(partial(_listens, port), 20, message=f"replica {port} listening")
        assert _get(port, "/api/v1/agent/config", node.headers())[0] == 200  # now cached
        assert _get(port, "/api/v1/agent/config", other.headers())[0] == 200
    cli_inproc("remove-node", node.uuid, *fleet.store_args)
    for port in fleet.ports:
        eventually(partial(_refused, port, node), 3, message=f"replica {port} refusing the removed node")
        assert _get(port, "/api/v1/agent/config", other.headers())[0] == 200  # the other node's key still works
