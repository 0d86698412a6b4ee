"""The one safety policy: a command from the network may only narrow traffic (pure: a Match and facts in).

A blocking rule must name its sources, or carry an attack signature (one known reflector source port,
or destination ports no local service listens on); it must never be able to drop a packet of a
protected peer (loopback, the host's own addresses, link-local and multicast ranges, their IPv4-mapped
forms, the default gateways, the DNS resolvers, the API server, SSH session peers, `never_block`).
A per-source rate limit (hashlimit / nft meter) at or above `min_source_pps` is allowed where a drop
is not: it leaves every single source its rate. docs/executor.md states the same as a user reads it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from floodwatch.errors import CommandRejected
from floodwatch.executor.addr import Network, port_text
from floodwatch.executor.hostfacts import HostFacts, IPAddress
from floodwatch.executor.match import ENTRIES, QDISC, RULE, SET, SYSCTL, Match, weight
from floodwatch.settings.executor import BUILTIN_CHAINS, SYSCTL_DIRECTIONS, ExecutorSettings

OUTBOUND_CHAINS = ("output", "postrouting")
_N = ipaddress.ip_network
ALWAYS_PROTECTED: tuple[tuple[str, Network], ...] = (
    ("loopback", _N("127.0.0.0/8")), ("loopback", _N("::1/128")),
    ("the unspecified address (DHCP, duplicate address detection)", _N("0.0.0.0/32")),
    ("the unspecified address (DHCP, duplicate address detection)", _N("::/128")),
    ("link-local (ARP, neighbour discovery, router advertisements)", _N("169.254.0.0/16")),
    ("link-local (ARP, neighbour discovery, router advertisements)", _N("fe80::/10")),
    ("multicast (neighbour discovery, router advertisements)", _N("224.0.0.0/4")),
    ("multicast (neighbour discovery, router advertisements)", _N("ff00::/8")),
    ("broadcast", _N("255.255.255.255/32")),
)


@dataclass(frozen=True)
class Traffic:
    """Packets a protected peer sends us: protocol ("" any), port ranges (None: any), replies only."""

    proto: str = ""
    sport: tuple[int, int] | None = None
    dport: tuple[int, int] | None = None
    replies: bool = False  # never a connection opening: a SYN-only rule cannot match it


def protected_networks(facts: HostFacts, s: ExecutorSettings) -> list[tuple[str, Network]]:
    """Every network no rule may name as a source, with what it is, plus IPv4-mapped forms."""
    out = list(ALWAYS_PROTECTED)
    named: list[tuple[str, Iterable[IPAddress]]] = [
        ("the host's own address", facts.own), ("the default gateway", facts.gateways),
        ("the DNS resolver", facts.resolvers), ("the API server", (a for a, _ in facts.api_servers)),
        ("an SSH session peer", facts.ssh_peers)]
    for what, addrs in named:
        out += [(what, _N(a)) for a in addrs]
    out += [("never_block", _N(n, strict=False)) for n in s.never_block]
    mapped = [(f"{what} (IPv4-mapped)", _N(f"::ffff:{n.network_address}/{96 + n.prefixlen}"))
              for what, n in out if n.version == 4]
    return out + mapped


def peer_traffic(facts: HostFacts, s: ExecutorSettings) -> list[tuple[str, IPAddress, Traffic]]:
    """What the peers a source-less rule could hurt send us: SSH clients, resolvers, the API server."""
    # DHCP answers come from any server: a rule without a source must spare them
    out = [(f"DHCP answers to the host (udp {server} -> {client})", addr,
            Traffic("udp", sport=(server, server), dport=(client, client)))
           for addr, server, client in ((ipaddress.IPv4Address(0), 67, 68), (ipaddress.IPv6Address(0), 547, 546))]
    for peer in facts.ssh_peers:
        out += [(f"the SSH session of {peer} (tcp to port {p})", peer, Traffic("tcp", dport=(p, p)))
                for p in s.protected_ports]
    for r in facts.resolvers:
        out += [(f"replies of the DNS resolver {r} ({proto} source port 53)", r,
                 Traffic(proto, sport=(53, 53), dport=facts.ephemeral, replies=True)) for proto in ("udp", "tcp")]
    for a, port in facts.api_servers:
        out.append((f"replies of the API server {a} (tcp source port {port})", a,
                    Traffic("tcp", sport=(port, port), dport=facts.ephemeral, replies=True)))
    return out


def check(m: Match, s: ExecutorSettings, facts: HostFacts) -> None:
    """CommandRejected, naming the protected traffic, unless the command only narrows."""
    if m.kind == RULE:
        _rule(m, s, facts)
    elif m.kind == ENTRIES:
        for net in m.entries:
            check_source(net, s, facts)
    elif m.kind == SET:
        _own_set(m, s)
    elif m.kind == QDISC:
        _qdisc(m, s)
    elif m.kind == SYSCTL:
        _sysctl(m, facts)


def check_source(net: Network, s: ExecutorSettings, facts: HostFacts) -> None:
    """A source a blocking rule or set entry names: narrow enough, and no protected peer inside it."""
    minimum = s.min_prefix_v4 if net.version == 4 else s.min_prefix_v6
    if net.prefixlen < minimum:
        raise CommandRejected(f"source {net} is wider than /{minimum}: too broad to block")
    for what, protected in protected_networks(facts, s):
        if protected.version == net.version and net.overlaps(protected):  # type: ignore[arg-type]
            raise CommandRejected(f"source {net} would block {what} ({protected})")


def _facing_peer(m: Match) -> Match:
    """In an outbound chain the peer is the destination: judge the rule as if it were inbound."""
    if m.chain.lower() not in OUTBOUND_CHAINS:
        return m
    if m.blocks and m.dst is None and not m.dst_set:
        raise CommandRejected(f"a blocking rule in {m.chain} must name a destination (-d)")
    return dataclasses.replace(m, src=m.dst, dst=m.src, src_set=m.dst_set, dst_set=m.src_set, sport=m.dport,
                               dport=m.sport, syn_only=False)


def _rule(m: Match, s: ExecutorSettings, facts: HostFacts) -> None:
    if m.action in ("accept", "return"):
        _passing(m, s)
        return
    if not m.blocks:
        raise CommandRejected("a rule needs a verdict: DROP, REJECT, ACCEPT or RETURN")
    m = _facing_peer(m)
    if m.src is not None:
        check_source(m.src, s, facts)
        return
    if m.src_set:
        return  # every entry of a set is checked when it is added
    gentle = m.per_source and m.limit_pps >= s.min_source_pps
    if not gentle:
        _signature(m, s, facts)
    for what, peer, traffic in peer_traffic(facts, s):
        if _hits(m, peer, traffic) and not (gentle and m.syn_only):
            raise CommandRejected(f"a rule without a source would drop {what}: name a source (-s)")


def _passing(m: Match, s: ExecutorSettings) -> None:
    verb = m.action.upper()
    if not s.allow_accept:
        raise CommandRejected(f"{verb} from the network is off (allow_accept = false): it would let a source "
                              "past the host's firewall and the agent's own rules")
    if m.program == "nft" or m.chain in s.own_chains:
        raise CommandRejected(f"{verb} in the agent's own chain or table would bypass its rules")
    if m.action == "return" and m.chain in BUILTIN_CHAINS:
        raise CommandRejected(f"RETURN in the built-in chain {m.chain} would apply its policy to everything")
    if m.src is None:
        raise CommandRejected(f"{verb} needs a source (-s): an open {verb} would bypass the host's firewall")
    minimum = s.min_prefix_v4 if m.src.version == 4 else s.min_prefix_v6
    if m.src.prefixlen < minimum:
        raise CommandRejected(f"source {m.src} is wider than /{minimum}")


def _signature(m: Match, s: ExecutorSettings, facts: HostFacts) -> None:
    """A blocking rule with no source must match an attack's signature, never all clients of a service."""
    if m.sport is not None:
        lo, hi = m.sport
        if lo != hi or lo not in s.reflector_ports:
            raise CommandRejected(f"source port {port_text(m.sport)} is not one of the reflector ports "
                                  f"({', '.join(map(str, s.reflector_ports))}): it would match ordinary "
                                  "clients; name a source (-s)")
        return
    if m.dport is None:
        raise CommandRejected("a rule without a source or a reflector source port would drop every client: "
                              "name a source (-s), or use a per-source limit (hashlimit)")
    lo, hi = m.dport
    ports = {("tcp", p) for p in s.protected_ports} | facts.listening
    hit = sorted(p for proto, p in ports if lo <= p <= hi and (not m.proto or m.proto == proto))
    if hit:
        raise CommandRejected(f"destination port {port_text(m.dport)} includes port {hit[0]}, where a local "
                              "service listens: it would drop every client; name a source (-s), or use a "
                              "per-source limit (hashlimit)")


def _overlaps(r: tuple[int, int] | None, t: tuple[int, int] | None) -> bool:
    return r is None or t is None or (r[0] <= t[1] and t[0] <= r[1])


def _hits(m: Match, peer: IPAddress, t: Traffic) -> bool:
    if m.family and m.family != peer.version:
        return False
    if m.proto and t.proto and m.proto != t.proto:
        return False
    if m.syn_only and t.replies:
        return False
    return _overlaps(m.sport, t.sport) and _overlaps(m.dport, t.dport)


def _own_set(m: Match, s: ExecutorSettings) -> None:
    if m.set_name in s.policy_sets:
        raise CommandRejected(f"ipset {m.set_name} belongs to the agent's own policy: a command may not "
                              "create it (its expiry would destroy the policy's set)")


def _qdisc(m: Match, s: ExecutorSettings) -> None:
    if m.rate_bits < s.tc_min_rate_bits:
        raise CommandRejected(f"tc rate {m.rate_bits} bit/s is under the floor tc_min_rate = {s.tc_min_rate}: "
                              "the host would go dark")
    if m.burst_bytes < s.tc_min_burst_bytes:
        raise CommandRejected(f"tc burst {m.burst_bytes} bytes is under {s.tc_min_burst_bytes}: full-size "
                              "packets would all be dropped")


def _sysctl(m: Match, facts: HostFacts) -> None:
    rule = SYSCTL_DIRECTIONS.get(m.sysctl_key)
    if rule is None:
        raise CommandRejected(f"sysctl: {m.sysctl_key} has no known protective direction")
    direction, default, floor = rule
    now = facts.sysctl.get(m.sysctl_key, default)
    if m.sysctl_value < floor:
        raise CommandRejected(f"sysctl: {m.sysctl_key}={m.sysctl_value} would weaken the host "
                              f"(the lowest protective value is {floor})")
    weaker = m.sysctl_value < now if direction == "up" else m.sysctl_value > now
    if weaker:
        word = "lower" if direction == "up" else "higher"
        raise CommandRejected(f"sysctl: {m.sysctl_key}={m.sysctl_value} is {word} than {now}, the host's "
                              "value: a command may only make it stricter")


def entry_weight(m: Match) -> int:
    """How many entries the command adds against max_rules (a prefix in an ipset: its addresses)."""
    if m.kind == ENTRIES and m.program == "ipset":
        return sum(weight(n) for n in m.entries)
    return 1
