"""The real executor actor process on real ZeroMQ sockets (a fake supervisor/bus), commands run for real
inside a namespace the test creates (argv_prefix = ip netns exec NS)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from floodwatch.messages import (
    CommandFinished,
    CommandReceived,
    IncidentOpened,
    IncidentResolved,
    IncidentUpdated,
)
from tests.executor.exec_helpers import Netns, netns
from tests.helpers import BusHarness, Subscriber, base_config, eventually, start_actor, stop_process, write_config

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@pytest.fixture
def ns() -> Iterator[Netns]:
    with netns() as n:
        yield n


@pytest.fixture
def bare_ns() -> Iterator[Netns]:
    with netns(objects=False) as n:
        yield n


class Running:
    def __init__(self, harness: BusHarness, tmp_path: Path, ns: Netns, **executor: Any) -> None:
        self.harness = harness
        tmp_path.mkdir(parents=True, exist_ok=True)
        settings = {"argv_prefix": ns.prefix, "expire_interval": 0.2, "tc_interfaces": [ns.iface], **executor}
        self.config = write_config(tmp_path / "fw.toml", base_config(tmp_path, harness.endpoints,
                                                                      executor=settings))
        self.log = tmp_path / "executor.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.harness.ready.discard("executor")
        self.harness.subscriptions.discard(b"command.received")
        self.proc = start_actor("executor", self.config, self.log)
        self.harness.wait_ready("executor")
        self.harness.wait_subscribed("command.received")

    def stop(self) -> int:
        assert self.proc is not None
        return stop_process(self.proc)


@pytest.fixture
def running(harness: BusHarness) -> Iterator[list[Running]]:
    made: list[Running] = []
    yield made
    for r in made:
        if r.proc is not None:
            stop_process(r.proc)


@pytest.fixture
def sub(harness: BusHarness) -> Iterator[Subscriber]:
    """Listens for command.finished; closed even when the test fails (else the harness cannot stop)."""
    s = harness.subscriber(CommandFinished)
    yield s
    s.close()


def command(cid: int, text: Any) -> CommandReceived:
    return CommandReceived(command_id=cid, command=text, received_at=time.time(), source="api")


def finished(sub: Subscriber, cid: int) -> CommandFinished:
    while True:
        msg = sub.get(CommandFinished, timeout=20)
        if msg.command_id == cid:
            return msg


def incident(cls: type, key: str, **kw: Any) -> Any:
    fields: dict[str, Any] = dict(
        incident_key=key, status="active", attack_family="syn_flood", attack_subtype="syn_flood",
        severity="high", confidence=90, started_at=time.time(), ended_at=None, updated_at=time.time(), seq=0,
        peak_pps=100000, peak_bps=10**8, protocol_breakdown={"tcp": 100.0}, tcp_flag_breakdown={"SYN": 100000},
        geo_breakdown={}, source_ip_count=3, top_src_ips=[], top_dst_ports=[], target_ips=["198.18.0.1"],
        ioc_matches=[], spoofing_detected=False, botnet_detected=False)
    fields.update(kw)
    return cls(**fields)


def test_a_command_id_runs_once_when_delivered_twice_and_after_a_restart(
        harness: BusHarness, ns: Netns, tmp_path: Path, running: list[Running], sub: Subscriber) -> None:
    r = Running(harness, tmp_path, ns)
    running.append(r)
    r.start()
    rule = "iptables -A FLOODWATCH -s 198.51.100.5 -j DROP"  # run twice, -A would make two copies
    harness.publish(command(7, rule))
    harness.publish(command(7, rule))
    first, second = finished(sub, 7), finished(sub, 7)
    assert first.status == second.status == "applied", (first, second)
    harness.publish(command(8, ["iptables", "-F"]))
    bad = finished(sub, 8)
    assert bad.status == "rejected" and "must be a string" in bad.error
    harness.publish(command(9, "iptables -F; rm -rf /"))
    assert finished(sub, 9).status == "rejected"
    assert ns.iptables().count("198.51.100.5") == 1
    for huge in (2**63, 2**64 - 1, 2**63):  # once more, as the next poll would re-send it
        harness.publish(command(huge, "iptables -A FLOODWATCH -s 198.51.100.6 -j DROP"))
        out = finished(sub, huge)
        assert out.status == "rejected" and "command id" in out.error, out
    eventually(lambda: harness.counters("executor").get("bad_id") == 3, 10)
    assert r.proc is not None and r.proc.poll() is None, "the actor is still alive"
    assert "198.51.100.6" not in ns.iptables()

    assert r.stop() == 0
    r.start()
    harness.publish(command(7, rule))
    again = finished(sub, 7)
    assert again.status == "applied" and again.executed_at == first.executed_at
    assert ns.iptables().count("198.51.100.5") == 1
    eventually(lambda: harness.counters("executor").get("replayed") == 1, 10)
    assert harness.counters("executor")["rules_in_force"] == 1


def test_a_disabled_executor_rejects_commands_and_runs_nothing(
        harness: BusHarness, ns: Netns, tmp_path: Path, running: list[Running], sub: Subscriber) -> None:
    r = Running(harness, tmp_path, ns, enabled=False)
    running.append(r)
    r.start()
    harness.publish(command(1, "iptables -A FLOODWATCH -s 198.51.100.5 -j DROP"))
    out = finished(sub, 1)
    assert out.status == "rejected" and "disabled" in out.error
    assert "198.51.100.5" not in ns.iptables()
    eventually(lambda: harness.counters("executor").get("rejected") == 1, 10)  # counted like any refusal


def test_rules_expire_by_ttl_and_are_removed_at_shutdown(
        harness: BusHarness, ns: Netns, tmp_path: Path, running: list[Running], sub: Subscriber) -> None:
    r = Running(harness, tmp_path, ns, default_ttl=1.0, remove_on_shutdown=True)
    running.append(r)
    r.start()
    harness.publish(command(1, "ipset add floodwatch_block 198.51.100.1"))
    assert finished(sub, 1).status == "applied"
    eventually(lambda: "198.51.100.1" in ns.ipset("floodwatch_block"), 5)
    eventually(lambda: "198.51.100.1" not in ns.ipset("floodwatch_block"), 10, message="ttl removal")

    r2 = Running(harness, tmp_path / "b", ns, remove_on_shutdown=True)
    running.append(r2)
    assert r.stop() == 0
    r2.start()
    harness.publish(command(2, "iptables -I INPUT -p udp --sport 19 -j DROP"))
    assert finished(sub, 2).status == "applied"
    assert "--sport 19" in ns.iptables()
    assert r2.stop() == 0
    assert "--sport 19" not in ns.iptables()


def test_policies_block_syn_sources_and_limit_reflectors_for_the_incident(
        harness: BusHarness, bare_ns: Netns, tmp_path: Path, running: list[Running],
        sub: Subscriber) -> None:
    ns = bare_ns
    r = Running(harness, tmp_path, ns, policies=["syn_block", "reflector_limit"], policy_rate_pps=500)
    running.append(r)
    r.start()
    assert "--match-set floodwatch_block src -j DROP" in ns.iptables(), "setup: the set's drop rule"
    assert "-A INPUT -j FLOODWATCH" in ns.iptables()
    sources = [{"ip": "198.51.100.10", "count": 500}, {"ip": "198.51.100.11", "count": 400},
               {"ip": "2001:db8::11", "count": 300}, {"ip": "127.0.0.1", "count": 200}]
    harness.wait_subscribed("incident.opened")
    harness.publish(incident(IncidentOpened, "syn-1", top_src_ips=sources))
    statuses = sorted(finished_any(sub, 4))
    assert statuses == ["applied", "applied", "applied", "rejected"], statuses  # 127.0.0.1 is never blocked
    harness.publish(incident(IncidentUpdated, "syn-1", top_src_ips=sources, seq=1))
    assert sub.drain(0.5) == [], "an update issues nothing twice"
    assert "198.51.100.10" in ns.ipset("floodwatch_block")
    assert "2001:db8::11" in ns.ipset("floodwatch_block6")

    harness.publish(incident(IncidentOpened, "ntp-1", attack_family="udp_flood",
                             attack_subtype="ntp_amplification"))
    assert finished_any(sub, 1) == ["applied"]
    assert "udp sport 123 limit rate over 500/second drop" in ns.nft()

    harness.publish(incident(IncidentResolved, "syn-1", status="resolved", top_src_ips=sources))
    eventually(lambda: "198.51.100.10" not in ns.ipset("floodwatch_block"), 10)
    assert "sport 123" in ns.nft()
    harness.publish(incident(IncidentResolved, "ntp-1", status="resolved", attack_family="udp_flood",
                             attack_subtype="ntp_amplification"))
    eventually(lambda: "sport 123" not in ns.nft(), 10)


def finished_any(sub: Subscriber, n: int) -> list[str]:
    return [sub.get(CommandFinished, timeout=20).status for _ in range(n)]
