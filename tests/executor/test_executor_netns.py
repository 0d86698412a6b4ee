"""Real iptables, ip6tables, nft, ipset, tc and sysctl inside a namespace the test creates.

Commands go through the Executor (validation, runner with the `ip netns exec NS` prefix, SQLite ledger);
effects are proven by listing the namespace's rules; undo on resolution, TTL expiry and shutdown.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from floodwatch.executor.core import Executor
from floodwatch.executor.ledger import Ledger
from floodwatch.executor.runner import Runner
from floodwatch.settings.executor import ExecutorSettings
from tests.executor.exec_helpers import Netns, netns

pytestmark = pytest.mark.netns


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ns() -> Iterator[Netns]:
    with netns() as n:
        yield n


def make(ns: Netns, tmp_path: Path, **overrides: object) -> tuple[Executor, Clock]:
    values: dict[str, object] = {"tc_interfaces": [ns.iface], "default_ttl": 600.0, **overrides}
    s = dataclasses.replace(ExecutorSettings(), **values)  # type: ignore[arg-type]
    ledger = Ledger(tmp_path / "ledger.sqlite3", tmp_path / "audit.jsonl")
    clock = Clock()
    return Executor(s, ledger, Runner(s.timeout, s.max_output_bytes, ns.prefix), clock=clock), clock


def test_iptables_rules_take_effect_and_are_undone_when_the_incident_resolves(ns: Netns, tmp_path: Path) -> None:
    ex, _ = make(ns, tmp_path)
    out = ex.handle("policy", 1, "iptables -I INPUT -s 198.51.100.7 -j DROP", incident_key="inc-1")
    assert out.status == "applied", out
    out = ex.handle("policy", 2, "ip6tables -A FLOODWATCH -p udp --sport 53 -s 2001:db8::/48 -j DROP",
                    incident_key="inc-1")
    assert out.status == "applied", out
    ex.handle("api", 3, "iptables -A FLOODWATCH -p tcp --syn -s 203.0.113.0/24 -j REJECT", incident_key="inc-2")
    assert "-A INPUT -s 198.51.100.7/32 -j DROP" in ns.iptables()
    assert "-A FLOODWATCH -s 2001:db8::/48 -p udp -m udp --sport 53 -j DROP" in ns.iptables("ip6tables")
    assert ex.ledger.count_rules() == 3

    assert ex.resolve("inc-1") == 2
    assert "198.51.100.7" not in ns.iptables()
    assert "2001:db8" not in ns.iptables("ip6tables")
    assert "203.0.113.0/24" in ns.iptables(), "another incident's rule stays"
    assert ex.ledger.count_rules() == 1


def test_rules_are_removed_when_their_ttl_passes(ns: Netns, tmp_path: Path) -> None:
    ex, clock = make(ns, tmp_path, default_ttl=60.0)
    assert ex.handle("api", 1, "ipset add floodwatch_block 198.51.100.9").status == "applied"
    assert ex.handle("api", 2, "nft add element inet floodwatch blk 198.51.100.0/24").status == "applied"
    assert ex.handle("api", 3, "nft add rule inet floodwatch input udp sport 123 limit rate over 100/second drop"
                     ).status == "applied"
    assert "198.51.100.9" in ns.ipset("floodwatch_block")
    ruleset = ns.nft()
    assert "198.51.100.0/24" in ruleset and "udp sport 123 limit rate over 100/second drop" in ruleset
    clock.now += 30
    assert ex.expire() == 0
    clock.now += 31
    assert ex.expire() == 3
    assert "198.51.100.9" not in ns.ipset("floodwatch_block")
    ruleset = ns.nft()
    assert "198.51.100.0/24" not in ruleset and "sport 123" not in ruleset
    assert ex.ledger.count_rules() == 0


def test_delete_commands_remove_only_what_the_agent_added(ns: Netns, tmp_path: Path) -> None:
    ns.run("iptables", "-A", "INPUT", "-s", "192.0.2.1", "-j", "DROP")  # the admin's own rule
    ex, _ = make(ns, tmp_path)
    out = ex.handle("api", 1, "iptables -D INPUT -s 192.0.2.1 -j DROP")
    assert out.status == "rejected" and "only rules the agent added" in out.error
    assert "192.0.2.1" in ns.iptables()
    assert ex.handle("api", 2, "iptables -A INPUT -s 192.0.2.9 -j DROP").status == "applied"
    assert ex.handle("api", 3, "iptables -D INPUT -s 192.0.2.9 -j DROP").status == "applied"
    assert "192.0.2.9" not in ns.iptables() and ex.ledger.count_rules() == 0


def test_sysctl_changes_a_namespace_key_and_restores_it(ns: Netns, tmp_path: Path) -> None:
    key = "net.ipv4.tcp_synack_retries"
    before = ns.sysctl(key)
    ex, _ = make(ns, tmp_path)
    assert ex.handle("policy", 1, f"sysctl -w {key}=2", incident_key="k").status == "applied"
    assert ex.handle("policy", 2, f"sysctl -w {key}=3", incident_key="k").status == "applied"
    assert ns.sysctl(key) == "3"
    assert ex.resolve("k") == 1
    assert ns.sysctl(key) == before, "the value from before the agent's first change is back"


def test_tc_qdisc_on_the_monitored_interface_and_removal_at_shutdown(ns: Netns, tmp_path: Path) -> None:
    ex, _ = make(ns, tmp_path)
    cmd = f"tc qdisc add dev {ns.iface} root handle fa00: tbf rate 100mbit burst 32kb latency 400ms"
    assert ex.handle("api", 1, cmd).status == "applied"
    assert "tbf fa00: root" in ns.run("tc", "qdisc", "show", "dev", ns.iface)
    assert ex.remove_all() == 1
    assert "tbf" not in ns.run("tc", "qdisc", "show", "dev", ns.iface)


def test_a_failing_command_is_reported_failed_with_the_error(ns: Netns, tmp_path: Path) -> None:
    ex, _ = make(ns, tmp_path)
    out = ex.handle("api", 1, "ipset add floodwatch_missing 198.51.100.1")
    assert out.status == "failed" and "exit status" in out.error
    assert ex.ledger.count_rules() == 0


def test_cap_dry_run_and_audit(ns: Netns, tmp_path: Path) -> None:
    ex, _ = make(ns, tmp_path, max_rules=2)
    for i in range(2):
        assert ex.handle("api", i, f"iptables -A FLOODWATCH -s 198.51.100.{i} -j DROP").status == "applied"
    out = ex.handle("api", 9, "iptables -A FLOODWATCH -s 198.51.100.9 -j DROP")
    assert out.status == "rejected" and "rule cap" in out.error
    assert "198.51.100.9" not in ns.iptables()

    dry, _ = make(ns, tmp_path / "dry", dry_run=True)
    out = dry.handle("api", 1, "iptables -A FLOODWATCH -s 198.51.100.77 -j DROP")
    assert out.status == "applied" and "dry-run" in out.output
    assert "198.51.100.77" not in ns.iptables()

    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [x["status"] for x in lines if x["event"] == "command"] == ["applied", "applied", "rejected"]
    assert (tmp_path / "audit.jsonl").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "ledger.sqlite3").stat().st_mode & 0o777 == 0o600


def test_a_command_id_runs_once_even_after_a_restart(ns: Netns, tmp_path: Path) -> None:
    cmd = "iptables -A FLOODWATCH -s 198.51.100.5 -j DROP"  # -A twice would add a second copy
    ex, _ = make(ns, tmp_path)
    first = ex.handle("api", 42, cmd)
    again = ex.handle("api", 42, cmd)
    assert first.status == again.status == "applied" and again.replayed
    ex.ledger.close()
    ex2, _ = make(ns, tmp_path)  # a new process would open the same ledger
    third = ex2.handle("api", 42, cmd)
    assert third.replayed and third.status == "applied"
    assert ns.iptables().count("198.51.100.5") == 1
    assert ex2.handle("policy", 42, cmd).status == "applied", "ids are per source"
    assert ns.iptables().count("198.51.100.5") == 2
