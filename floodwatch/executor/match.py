"""What a validated command would do to traffic: one small typed value, produced by every program's parser.

The parsers (iptables.py, nft.py, ipset.py, tcsys.py) fill a Match; the one safety policy (safety.py)
reads only this value and the host's facts. Nothing here looks at argv words.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from floodwatch.executor.addr import Network

# What the command adds or changes:
RULE = "rule"  # a filtering rule (iptables/ip6tables/nft)
ENTRIES = "entries"  # addresses added to a set that a blocking rule matches (ipset add, nft add element)
SET = "set"  # a new set (ipset create)
QDISC = "qdisc"  # a shaping qdisc (tc)
SYSCTL = "sysctl"  # one kernel setting
OTHER = "other"  # removes or reads something: nothing new can drop traffic

BLOCKING = ("drop", "reject")
PASSING = ("accept", "return")
GLOBAL, PER_SOURCE = "global", "per_source"  # kinds of rate limit


@dataclass
class Match:
    """A command's effect: which packets a rule matches and what it does to them (or what else it sets)."""

    kind: str
    program: str
    family: int = 0  # 4, 6, or 0 (an nft inet rule without an address: both)
    action: str = ""  # drop | reject | accept | return
    limit: str = ""  # "" (every matched packet), "global" (one bucket), "per_source" (one bucket per source)
    limit_pps: float = 0.0  # the limit's rate in packets per second
    limit_over: bool = True  # the action applies above the rate (False: to the first N/s, i.e. below it)
    src: Network | None = None
    dst: Network | None = None
    src_set: str = ""  # a set the rule matches sources against (its entries are checked when added)
    dst_set: str = ""  # a set the rule matches destinations against
    proto: str = ""  # tcp | udp | icmp | ipv6-icmp | "" (any)
    sport: tuple[int, int] | None = None
    dport: tuple[int, int] | None = None
    syn_only: bool = False  # matches only connection openings (SYN without ACK): never replies
    table: str = ""
    chain: str = ""
    set_name: str = ""  # ENTRIES / SET: the set touched
    entries: tuple[Network, ...] = ()
    rate_bits: int = 0  # QDISC: the shaping rate in bit/s
    burst_bytes: int = 0
    sysctl_key: str = ""
    sysctl_value: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def blocks(self) -> bool:
        return self.kind == RULE and self.action in BLOCKING

    @property
    def per_source(self) -> bool:
        return self.limit == PER_SOURCE and self.limit_over


def weight(net: Network) -> int:
    """How many kernel entries an ipset entry can stand for: IPv4 addresses, IPv6 /64s (at least 1)."""
    bits = (32 - net.prefixlen) if net.version == 4 else max(0, 64 - net.prefixlen)
    return 1 << min(bits, 62)


PER_UNIT = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


def pps(count: int, unit: str) -> float:
    return count / PER_UNIT[unit]
