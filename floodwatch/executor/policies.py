"""Local mitigation policies (off by default): incident events -> command texts for the executor.

syn_block:        the top sources of a SYN flood go into the ipset <prefix>_block (<prefix>_block6 for
                  IPv6), which one iptables rule drops; not when the detector says sources are spoofed.
reflector_limit:  each reflection vector's source port is rate-limited with an nftables rule.
Commands go through the same validator as the API's; each is issued once per incident, and the
rules are undone when the incident resolves (or their TTL passes).
"""

from __future__ import annotations

import ipaddress

from floodwatch.messages import IncidentEvent
from floodwatch.settings.executor import BUILTIN_CHAINS, ExecutorSettings

# reflection protocol name (subtype `<name>_amplification`) -> its source port
REFLECTOR_PORTS = {
    "dns": 53, "ntp": 123, "ssdp": 1900, "memcached": 11211, "cldap": 389, "chargen": 19, "snmp": 161,
    "netbios": 137, "qotd": 17, "mdns": 5353, "ws_discovery": 3702, "portmap": 111, "rip": 520, "tftp": 69,
    "arms": 3283, "openvpn": 1194, "coap": 5683, "slp": 427, "sip": 5060, "isakmp": 500, "ubiquiti": 10001,
    "bacnet": 47808, "dvr": 37810, "mssql": 1434, "steam": 27015,
}
NFT_CHAIN = "input"


def set_names(s: ExecutorSettings) -> tuple[str, str]:
    return s.policy_sets


def setup_commands(s: ExecutorSettings) -> list[list[str]]:
    """The agent's own objects the policies need (idempotent: -exist / nft add)."""
    out: list[list[str]] = []
    if "syn_block" in s.policies:
        v4, v6 = set_names(s)
        out.append(["ipset", "create", v4, "hash:net", "family", "inet", "timeout", "0", "-exist"])
        out.append(["ipset", "create", v6, "hash:net", "family", "inet6", "timeout", "0", "-exist"])
    if "reflector_limit" in s.policies:
        out.append(["nft", "add", "table", s.nft_family, s.nft_table])
        out.append(["nft", "add", "chain", s.nft_family, s.nft_table, NFT_CHAIN, "{", "type", "filter", "hook",
                    "input", "priority", "-5", ";", "policy", "accept", ";", "}"])
    return out


def match_rules(s: ExecutorSettings) -> list[tuple[list[str], list[str]]]:
    """(check argv, create argv) pairs for the iptables side of syn_block: the rule that drops what is in
    the block sets, in the first allowed chain; the agent's own chain is created and jumped to from INPUT."""
    if "syn_block" not in s.policies or not s.iptables_chains:
        return []
    chain = s.iptables_chains[0]
    out = []
    for prog, name in zip(("iptables", "ip6tables"), set_names(s), strict=True):
        head = [prog, "-t", "filter"]
        if chain not in BUILTIN_CHAINS:
            out.append(([*head, "-S", chain], [*head, "-N", chain]))
            out.append(([*head, "-C", "INPUT", "-j", chain], [*head, "-I", "INPUT", "-j", chain]))
        spec = [chain, "-m", "set", "--match-set", name, "src", "-j", "DROP"]
        out.append(([*head, "-C", *spec], [*head, "-I", *spec]))
    return out


def _subtypes(event: IncidentEvent) -> set[str]:
    found = set(event.attack_subtype.split("+"))
    found |= {str(v.get("subtype", "")) for v in event.vectors if isinstance(v, dict)}
    return found


def _is_syn_flood(event: IncidentEvent) -> bool:
    families = {event.attack_family} | {str(v.get("family", "")) for v in event.vectors if isinstance(v, dict)}
    return "syn_flood" in families


def _top_sources(event: IncidentEvent, s: ExecutorSettings) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    rows = [r for r in event.top_src_ips if isinstance(r, dict) and isinstance(r.get("count"), int | float)]
    total = sum(float(r["count"]) for r in rows) or 1.0
    out = []
    for r in sorted(rows, key=lambda r: -float(r["count"]))[: s.policy_top_sources]:
        if float(r["count"]) / total < s.policy_min_share:
            continue
        try:
            out.append(ipaddress.ip_address(str(r.get("ip", ""))))
        except ValueError:
            continue
    return out


def commands_for(event: IncidentEvent, s: ExecutorSettings) -> list[str]:
    """What the enabled policies would do about an open incident (validated later like any command)."""
    if event.status == "resolved" or event.confidence < s.policy_min_confidence:
        return []
    out: list[str] = []
    if "syn_block" in s.policies and _is_syn_flood(event) and not event.spoofing_detected:
        v4, v6 = set_names(s)
        for ip in _top_sources(event, s):
            name = v4 if ip.version == 4 else v6
            out.append(f"ipset add {name} {ip} timeout {int(s.max_ttl)} -exist")
    if "reflector_limit" in s.policies:
        for sub in sorted(_subtypes(event)):
            port = REFLECTOR_PORTS.get(sub.removesuffix("_amplification")) if sub.endswith("_amplification") else None
            if port:
                out.append(f"nft add rule {s.nft_family} {s.nft_table} {NFT_CHAIN} udp sport {port} "
                           f"limit rate over {s.policy_rate_pps}/second drop")
    return out


