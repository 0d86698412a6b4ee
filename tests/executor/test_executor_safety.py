"""The safety policy, pure: every class of command from issue 12 is rejected with a reason that names the
protected traffic; the plain mitigations stay accepted. Facts are injected (exec_helpers.FACTS)."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from pathlib import Path

import pytest

from floodwatch.errors import CommandRejected
from floodwatch.executor.core import Executor
from floodwatch.executor.hostfacts import FactsSource, api_endpoint, parse_ip_route, parse_resolv_conf
from floodwatch.executor.ledger import Ledger
from floodwatch.executor.runner import Runner, RunResult
from floodwatch.executor.validate import validate_command
from floodwatch.settings.executor import ExecutorSettings
from tests.executor.exec_helpers import FACTS

S = dataclasses.replace(ExecutorSettings(), tc_interfaces=["eth0"])


class Recorder(Runner):
    """Runs `true` (a real process) instead of each argv, and records the argv."""

    def __init__(self, timeout: float, max_output: int) -> None:
        super().__init__(timeout, max_output)
        self.ran: list[list[str]] = []

    def run(self, argv: list[str]) -> RunResult:
        self.ran.append(argv)
        return super().run(["true"])

# (command, a regex the reason must match: it names what the command would hit)
ISSUE_CLASSES = [
    # source-port ranges that match every client
    ("iptables -I INPUT -p tcp --sport 0:65535 -j DROP", "source port 0:65535 is not one of the reflector"),
    ("iptables -I INPUT -p tcp --sport 1024:65535 -j DROP", "source port 1024:65535"),
    ("iptables -I INPUT -p tcp --sport 1024:65535 -j REJECT", "source port 1024:65535"),
    ("iptables -I INPUT -p tcp --syn --sport 0:65535 -j DROP", "source port 0:65535"),
    ("iptables -I INPUT -p udp --sport 0:65535 -j DROP", "source port 0:65535"),
    ("ip6tables -I INPUT -p tcp --sport 0:65535 -j DROP", "source port 0:65535"),
    ("nft add rule inet floodwatch input tcp sport 0-65535 drop", "source port 0:65535"),
    ("iptables -I INPUT -p udp --sport 40000 -j DROP", "source port 40000 is not one of the reflector"),
    # destination ranges that cover every service but SSH, and SSH itself
    ("iptables -I INPUT -p tcp --dport 23:65535 -j DROP", "port 443, where a local service listens"),
    ("iptables -I INPUT -p tcp --dport 22 -j DROP", "port 22, where a local service listens"),
    ("iptables -I INPUT -p tcp --syn --dport 1:65535 -j DROP", "port 22, where a local service listens"),
    ("nft add rule inet floodwatch input tcp dport 8080 drop", "port 8080, where a local service listens"),
    ("iptables -I INPUT -p udp --dport 5353 -j DROP", "port 5353, where a local service listens"),
    ("iptables -I INPUT -p tcp -j DROP", "would drop every client"),
    ("iptables -I INPUT -p icmp -j DROP", "would drop every client"),
    ("iptables -I INPUT -d 10.20.0.5 -j DROP", "would drop every client"),
    ("nft add rule inet floodwatch input limit rate over 10/second drop", "would drop every client"),
    # ACCEPT from the network (off by default), up to a /16
    ("iptables -I INPUT -s 203.0.113.7 -j ACCEPT", "allow_accept = false"),
    ("iptables -I INPUT -s 203.0.0.0/16 -j ACCEPT", "allow_accept = false"),
    ("ip6tables -I INPUT -s 2001:db8::/32 -j ACCEPT", "allow_accept = false"),
    ("nft add rule inet floodwatch input ip saddr 203.0.113.7 accept", "allow_accept = false"),
    # link-local, multicast, loopback and their IPv4-mapped forms
    ("ip6tables -I INPUT -s fe80::/64 -j DROP", "link-local"),
    ("ip6tables -I INPUT -s fe80::1 -j DROP", "link-local"),
    ("ip6tables -I INPUT -s ff02::1 -j DROP", "multicast"),
    ("ip6tables -I INPUT -p ipv6-icmp -j DROP", "would drop every client"),
    ("nft add rule inet floodwatch input meta l4proto icmpv6 drop", "would drop every client"),
    ("ip6tables -I INPUT -s ::ffff:127.0.0.1 -j DROP", r"loopback \(IPv4-mapped\)"),
    ("ip6tables -I INPUT -s ::ffff:169.254.0.0/112 -j DROP", r"link-local.*IPv4-mapped"),
    ("ip6tables -I INPUT -s ::ffff:10.20.0.5 -j DROP", r"own address \(IPv4-mapped\)"),
    ("iptables -I INPUT -s 224.0.0.0/24 -j DROP", "multicast"),
    ("iptables -I INPUT -s 169.254.1.1 -j DROP", "link-local"),
    ("iptables -I INPUT -s 127.0.0.0/16 -j DROP", "loopback"),
    ("nft add rule inet floodwatch input ip6 saddr ::1 drop", "loopback"),
    # the host's own peers: own address, gateway, resolver, API server, SSH session, never_block
    ("iptables -I INPUT -s 10.20.0.5 -j DROP", "the host's own address"),
    ("iptables -I INPUT -s 10.20.0.0/24 -j DROP", "own address|default gateway"),
    ("iptables -I INPUT -s 10.20.0.1 -p tcp --dport 80 -j DROP", "default gateway"),
    ("iptables -I INPUT -s 10.20.0.53 -p udp -j DROP", "DNS resolver"),
    ("iptables -I INPUT -s 10.30.0.0/16 -j DROP", "API server"),
    ("ipset add floodwatch_block 10.40.0.22", "SSH session peer"),
    ("nft add element inet floodwatch blk 10.40.0.0/24", "SSH session peer"),
    ("ip6tables -I INPUT -s fd00:20::5 -j DROP", "own address"),
    ("iptables -I INPUT -p udp --sport 53 -j DROP", "DNS resolver 10.20.0.53"),
    ("nft add rule inet floodwatch input udp sport 53 limit rate over 1000/second drop", "DNS resolver"),
    ("iptables -I INPUT -p tcp --sport 443 -j DROP", "source port 443 is not one of the reflector"),
    # tc rate floor, sysctl directions
    ("tc qdisc add dev eth0 root handle fa00: tbf rate 1bit burst 10k latency 50ms", "floor tc_min_rate"),
    ("tc qdisc add dev eth0 root handle fa00: tbf rate 999kbit burst 10k latency 50ms", "floor tc_min_rate"),
    ("tc qdisc add dev eth0 root handle fa00: tbf rate 100mbit burst 1k latency 50ms", "full-size packets"),
    ("sysctl -w net.ipv4.tcp_syncookies=0", "would weaken"),
    ("sysctl -w net.ipv4.icmp_ratelimit=0", "would weaken"),
    ("sysctl -w net.ipv4.icmp_ratelimit=10", "only make it stricter"),
    ("sysctl -w net.ipv4.tcp_synack_retries=9", "only make it stricter"),
    ("sysctl -w net.ipv4.tcp_max_syn_backlog=128", "only make it stricter"),
    # the agent's own chains, tables and sets
    ("iptables -I FLOODWATCH 1 -j RETURN", "allow_accept = false"),
    ("nft insert rule inet floodwatch input return", "allow_accept = false"),
    ("ipset create floodwatch_block hash:net", "agent's own policy"),
    ("ipset create floodwatch_block6 hash:net family inet6 -exist", "agent's own policy"),
    # per-source limits too slow to be a limit, and hashlimit forms that drop below the rate
    ("iptables -I INPUT -p tcp --syn -m hashlimit --hashlimit-above 1/minute --hashlimit-mode srcip -j DROP",
     "would drop every client"),
    ("iptables -I INPUT -p tcp -m hashlimit --hashlimit-above 20/second --hashlimit-mode srcip -j DROP",
     "SSH session of 10.40.0.22"),
    ("iptables -I INPUT -p tcp -m hashlimit --hashlimit-upto 20/second --hashlimit-mode srcip -j DROP",
     "hashlimit-upto"),
    ("iptables -I INPUT -p tcp --syn -m hashlimit --hashlimit-above 20/second --hashlimit-mode dstip -j DROP",
     "per-source"),
]

PLAIN_MITIGATIONS = [
    "iptables -I INPUT -s 198.51.100.7 -j DROP",
    "iptables -I INPUT -s 203.0.113.0/24 -j DROP",
    "ip6tables -I INPUT -s 2001:db8:5::/48 -j DROP",
    "iptables -I INPUT -p udp --sport 123 -j DROP",
    "iptables -I INPUT -p udp --sport 11211 -j DROP",
    "ip6tables -I INPUT -p udp --sport 1900 -j DROP",
    "nft add rule inet floodwatch input udp sport 389 drop",
    "iptables -I INPUT -p tcp --syn -m hashlimit --hashlimit-above 20/second --hashlimit-burst 40 "
    "--hashlimit-mode srcip --hashlimit-name synflood -j DROP",
    "iptables -I INPUT -p tcp --syn --dport 443 -m hashlimit --hashlimit-above 50/second --hashlimit-mode srcip "
    "-j DROP",
    "nft add rule inet floodwatch input tcp flags syn meter synflood ip saddr limit rate over 20/second drop",
    "nft add rule inet floodwatch input ip saddr 198.51.100.7 drop",
    "nft add rule inet floodwatch input ip saddr 198.51.100.0/24 tcp dport 443 counter drop",
    "nft add element inet floodwatch blk 198.51.100.0/24",
    "ipset add floodwatch_block 198.51.100.9 timeout 600",
    "sysctl -w net.ipv4.tcp_syncookies=1",
    "sysctl -w net.ipv4.tcp_syncookies=2",
    "sysctl -w net.ipv4.icmp_ratelimit=2000",
    "sysctl -w net.ipv4.tcp_synack_retries=2",
    "tc qdisc add dev eth0 root handle fa00: tbf rate 1mbit burst 10k latency 50ms",
    "iptables -I INPUT -p tcp --dport 3306 -j DROP",  # nothing listens there
    "iptables -I FLOODWATCH -p tcp --syn -s 192.0.2.0/24 -j REJECT --reject-with tcp-reset",
]


@pytest.mark.parametrize(("command", "reason"), ISSUE_CLASSES)
def test_each_class_of_the_issue_is_rejected_naming_what_it_would_hit(command: str, reason: str) -> None:
    with pytest.raises(CommandRejected, match=reason):
        validate_command(command, S, FACTS)


@pytest.mark.parametrize("command", PLAIN_MITIGATIONS)
def test_plain_mitigations_are_accepted(command: str) -> None:
    validate_command(command, S, FACTS)


def test_outbound_chains_judge_the_destination_and_dhcp_is_spared() -> None:
    out = dataclasses.replace(S, iptables_chains=["FLOODWATCH", "INPUT", "OUTPUT"])
    for command, reason in (("iptables -I OUTPUT -d 10.20.0.53 -j DROP", "DNS resolver"),
                            ("iptables -I OUTPUT -p tcp --sport 22 -j DROP", "must name a destination"),
                            ("iptables -I OUTPUT -d 10.30.0.80 -p tcp --dport 443 -j DROP", "API server"),
                            ("iptables -I INPUT -p udp --dport 68 -j DROP", "DHCP answers"),
                            ("ip6tables -I INPUT -p udp --dport 546 -j DROP", "DHCP answers")):
        with pytest.raises(CommandRejected, match=reason):
            validate_command(command, out, FACTS)
    validate_command("iptables -I OUTPUT -d 198.51.100.7 -j DROP", out, FACTS)
    validate_command("iptables -I INPUT -p udp --dport 67 -j DROP", out, FACTS)  # no DHCP server here


def test_hashlimit_and_meter_render_what_the_kernel_takes() -> None:
    plan = validate_command("iptables -I INPUT -p tcp --syn -m hashlimit --hashlimit-above 20/s --hashlimit-mode "
                            "srcip -j DROP", S, FACTS)
    name = plan.argv[-3]
    assert plan.argv[-10:] == ["-m", "hashlimit", "--hashlimit-above", "20/second", "--hashlimit-mode", "srcip",
                               "--hashlimit-name", name, "-j", "DROP"]
    assert name.startswith("fw") and len(name) <= 15
    delete = validate_command("iptables -D INPUT -p tcp --syn -m hashlimit --hashlimit-above 20/s --hashlimit-mode "
                              "srcip -j DROP", S, FACTS)
    assert delete.identity == plan.identity, "the generated name is the same for the rule and its deletion"
    nft = validate_command("nft add rule inet floodwatch input tcp flags syn meter m1 ip saddr limit rate over "
                           "20/second drop", S, FACTS)
    assert nft.argv[8:] == ["tcp", "flags", "&", "(syn", "|", "ack)", "==", "syn", "meter", "m1", "{", "ip",
                            "saddr", "limit", "rate", "over", "20/second", "}", "drop"]


def test_widening_the_policy_through_config() -> None:
    wide = dataclasses.replace(S, allow_accept=True, reflector_ports=[123, 40000], tc_min_rate="100kbit",
                               never_block=["198.51.100.0/24"])
    validate_command("iptables -I INPUT -s 203.0.113.7 -j ACCEPT", wide, FACTS)
    validate_command("iptables -I INPUT -p udp --sport 40000 -j DROP", wide, FACTS)
    validate_command("tc qdisc add dev eth0 root handle fa00: tbf rate 500kbit burst 10k latency 50ms", wide, FACTS)
    with pytest.raises(CommandRejected, match="never_block"):
        validate_command("iptables -I INPUT -s 198.51.100.7 -j DROP", wide, FACTS)
    with pytest.raises(CommandRejected, match="SSH session"):
        validate_command("iptables -I INPUT -s 10.40.0.0/16 -j DROP", wide, FACTS)


def test_an_ipset_prefix_counts_its_addresses_against_the_cap(tmp_path: Path) -> None:
    s = dataclasses.replace(S, max_rules=1000)
    ex = Executor(s, Ledger(tmp_path / "l.sqlite3"), Recorder(1.0, 1000), facts=lambda: FACTS)
    out = ex.handle("api", 1, "ipset add floodwatch_block 1.2.0.0/16")
    assert out.status == "rejected" and "adds 65536" in out.error
    assert ex.handle("api", 2, "ipset add floodwatch_block 1.2.3.0/24").status == "applied"
    assert ex.ledger.count_entries() == 256
    out = ex.handle("api", 3, "ipset add floodwatch_block 1.2.0.0/22")  # 1024 more: over 1000
    assert out.status == "rejected" and "256 entries in force" in out.error


@pytest.mark.parametrize("command_id", [2**63, 2**64 - 1, 2**70, -1, "5", True, 1.5, None])
def test_an_out_of_range_or_ill_typed_id_is_rejected_cleanly(tmp_path: Path, command_id: object) -> None:
    ex = Executor(S, Ledger(tmp_path / "l.sqlite3"), Runner(1.0, 1000), facts=lambda: FACTS)
    for _ in range(2):  # re-sent at the next poll: rejected again, never a crash
        out = ex.handle("api", command_id, "iptables -I INPUT -s 198.51.100.7 -j DROP")  # type: ignore[arg-type]
        assert out.status == "rejected" and "command id" in out.error
    assert ex.counters["bad_id"] == 2 and ex.ledger.count_rules() == 0
    assert ex.handle("api", 2**63 - 1, "iptables -I INPUT -s 198.51.100.7 -j BOGUS").status == "rejected"


def test_a_policy_set_is_never_destroyed_by_a_command_ttl(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    ledger.add_rule("ipset set floodwatch_block", ["ipset", "create", "floodwatch_block", "hash:net"],
                    ["ipset", "destroy", "floodwatch_block"], "api", 1, "", 0.0, 1.0)  # from an old ledger
    runner = Recorder(1.0, 1000)
    ex = Executor(S, ledger, runner, clock=lambda: 10.0, facts=lambda: FACTS)
    assert ex.expire() == 0
    assert runner.ran == [] and ledger.count_rules() == 0


def test_facts_are_read_from_the_real_proc_net(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.7", 0)):
            conn, _ = server.accept()
            with conn:
                facts = FactsSource(Runner(5.0, 1 << 20), [port], ["net.ipv4.tcp_syncookies"],
                                    api_url="https://198.51.100.80:8443/api", resolv_files=[]).gather()
    assert ("tcp", port) in facts.listening
    assert ipaddress.ip_address("127.0.0.7") in facts.ssh_peers
    assert ipaddress.ip_address("127.0.0.1") in facts.own
    assert facts.api_servers == ((ipaddress.ip_address("198.51.100.80"), 8443),)
    assert facts.sysctl["net.ipv4.tcp_syncookies"] in (0, 1, 2)
    assert facts.ephemeral[0] <= facts.ephemeral[1]


def test_fact_parsers() -> None:
    assert parse_resolv_conf("# x\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nsearch a\n") == (
        ipaddress.ip_address("10.0.0.2"), ipaddress.ip_address("fe80::1"))
    assert parse_ip_route('[{"dst":"default","gateway":"192.0.2.1","dev":"eth0"}]') == (
        ipaddress.ip_address("192.0.2.1"),)
    assert api_endpoint("http://api.example:8787/v1", lambda h, p: [ipaddress.ip_address("192.0.2.9")]) == (
        (ipaddress.ip_address("192.0.2.9"), 8787),)


@pytest.mark.parametrize(("key", "value", "error"), [
    ("tc_min_rate", "fast", "not a tc rate"), ("reflector_ports", [0], "reflector_ports"),
    ("sysctl_keys", ["net.ipv4.ip_forward"], "no known protective direction"), ("min_source_pps", 0, "positive"),
    ("protected_ports", [70000], "protected_ports"),
])
def test_bad_policy_settings_are_refused_with_the_key(key: str, value: object, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        dataclasses.replace(ExecutorSettings(), **{key: value}).validate()  # type: ignore[arg-type]
