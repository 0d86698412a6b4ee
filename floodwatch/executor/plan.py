"""What a validated command will do: the argv to run, how to undo it, and the safety checks on rules."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from floodwatch.errors import CommandRejected
from floodwatch.executor.addr import Network, port_text
from floodwatch.settings.executor import ExecutorSettings

# What a plan does to the agent's state:
ADDS = "adds"  # adds a rule/element/qdisc/setting that stays in force (remembered, undone later)
REMOVES = "removes"  # removes something the agent added (the ledger must hold it for iptables -D)
READS = "reads"  # changes nothing (ipset test)


@dataclass(frozen=True)
class Plan:
    program: str
    argv: list[str]  # the full argv, program first, rendered from the parsed command
    effect: str  # ADDS | REMOVES | READS
    undo: list[str] | None = None  # argv that reverses an ADDS plan (None: computed after the run)
    identity: str = ""  # what is added/removed, the same text for a rule and its removal
    summary: str = ""
    sysctl_key: str = ""  # sysctl: the key, so the executor can read the old value to restore it
    nft_rule: tuple[str, str] = ("", "")  # nft add rule: (table words, chain) to build the delete by handle
    notes: list[str] = field(default_factory=list)


@dataclass
class RuleSpec:
    """A filtering rule, parsed from iptables or nft words, checked by check_rule."""

    family: int  # 4 or 6
    verdict: str = ""  # drop | reject | accept | return
    proto: str = ""
    src: Network | None = None
    dst: Network | None = None
    sport: tuple[int, int] | None = None
    dport: tuple[int, int] | None = None
    src_set: str = ""
    limited: bool = False  # a rate limit: the rule acts only above (or below) a rate
    matches: int = 0  # how many narrowing matches the rule carries


def _nets(texts: list[str]) -> list[Network]:
    return [ipaddress.ip_network(t, strict=False) for t in texts]


def check_source(net: Network, s: ExecutorSettings) -> None:
    """A source a blocking rule names: long enough a prefix, and none of the never_block networks."""
    minimum = s.min_prefix_v4 if net.version == 4 else s.min_prefix_v6
    if net.prefixlen < minimum:
        raise CommandRejected(f"source {net} is wider than /{minimum}: too broad to block")
    for nb in _nets(s.never_block):
        if nb.version == net.version and (net.overlaps(nb)):  # type: ignore[arg-type]
            raise CommandRejected(f"source {net} overlaps never_block network {nb}")


def check_rule(rule: RuleSpec, s: ExecutorSettings) -> None:
    """Refuse rules that could cut the host off: an unnarrowed DROP, a protected port, a wide ACCEPT."""
    if rule.verdict not in ("drop", "reject", "accept", "return"):
        raise CommandRejected("a rule needs a verdict: DROP, REJECT, ACCEPT or RETURN")
    if (rule.sport or rule.dport) and rule.proto not in ("tcp", "udp"):
        raise CommandRejected("ports need -p tcp or -p udp")
    if rule.src is not None and rule.verdict in ("drop", "reject", "accept"):
        check_source(rule.src, s)
    if rule.verdict == "accept" and rule.src is None and not rule.src_set:
        raise CommandRejected("ACCEPT needs a source (-s): an open ACCEPT would bypass the host's firewall")
    if rule.verdict in ("drop", "reject") and rule.src is None and not rule.src_set:
        if rule.sport is None and rule.dport is None:
            raise CommandRejected("a blocking rule needs a source or a port: it would cut off all traffic")
        if rule.dport is not None and any(rule.dport[0] <= p <= rule.dport[1] for p in s.protected_ports):
            raise CommandRejected(f"destination port {port_text(rule.dport)} includes a protected port: name a source")
