"""Name an attack from a Profile: family, subtype, vectors, spoofing, botnet/IOC, severity, confidence.

Everything is read from the packets (the windows' inbound protocol, flag, port, fragment, TTL and
signature counts), never from kernel protocol counters. See docs/detector.md for the rules.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections import Counter
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from floodwatch.aggregate.geo import UNKNOWN
from floodwatch.detect.profile import Profile, profile_of
from floodwatch.detect.reflection import REFLECTION_PORTS, above_chance, confirmed_by
from floodwatch.detect.spoofing import spoofing_verdict
from floodwatch.messages import TrafficWindow

FAMILIES = ("udp_flood", "syn_flood", "http_flood", "icmp_flood", "dns_flood", "multi_vector", "unknown",
            "tcp_flood", "fragment_flood", "malformed_flood")
__all__ = ["REFLECTION_PORTS", "classify_capture", "classify_profile", "tcp_vector_of"]
ICMP_TYPES = {8: "icmp_echo_flood", 128: "icmp_echo_flood", 0: "icmp_echo_reply_flood",
              129: "icmp_echo_reply_flood", 3: "icmp_unreachable_flood", 1: "icmp_unreachable_flood",
              11: "icmp_time_exceeded_flood", 5: "icmp_redirect_flood"}
BACKGROUND_TOP = 10  # non-SYN TCP from this few source ports and sources is connections, not a flood
BACKGROUND_PORT_SHARE = 0.8
BACKGROUND_SOURCE_SHARE = 0.5
SIGNIFICANT_SHARE = 0.2  # a vector with at least this share of inbound packets counts for multi_vector
TOP_N = 10
TOP_MAX_ERROR = 0.25  # a top source or port is stated only when its count may miss at most this share
_FLAG_NAMES = {"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"}


@dataclass
class Vector:
    family: str
    subtype: str
    packets: int
    confirmed: bool = False  # a payload signature agrees
    detail: str = ""
    # what names it: "payload" (a signature on its packets), "port" (a port far above chance, no
    # payload agreeing), "header" (the packets' own headers: protocol, TCP flags, fragment offset, or
    # an IP header that does not parse)
    evidence: str = "header"

    def as_dict(self, total: int) -> dict[str, Any]:
        share = round(100.0 * self.packets / total, 1) if total else 0.0
        return {"family": self.family, "subtype": self.subtype, "share": share, "packets": self.packets,
                "confirmed": self.confirmed, "evidence": "payload" if self.confirmed else self.evidence}


def flag_set(label: str) -> frozenset[str]:
    """A window's TCP flag label ('SYN-ACK', 'FIN|PSH|URG', 'NULL', ...) -> the set of flag names."""
    up = label.upper()
    if up == "XMAS":
        return frozenset({"FIN", "PSH", "URG"})
    tokens = {t for t in re.split(r"[^A-Za-z]+", up) if t}
    return frozenset(tokens & _FLAG_NAMES)


def tcp_vector_of_label(label: str) -> tuple[str, str]:
    """A window's flag label (the aggregator's names, or any 'SYN-ACK'-like text) -> (family, subtype)."""
    if label.upper() == "OTHER":
        return "tcp_flood", "tcp_flood"
    return tcp_vector_of(flag_set(label))


def tcp_vector_of(flags: frozenset[str]) -> tuple[str, str]:
    """A TCP flag combination -> (family, subtype) of the flood it would make."""
    if "SYN" in flags:
        if "ACK" in flags:
            return "tcp_flood", "synack_reflection"
        if flags & {"ECE", "CWR"}:
            return "syn_flood", "syn_ece_flood"
        return "syn_flood", "syn_flood"
    core = flags - {"ECE", "CWR"}
    if "RST" in core:
        return "tcp_flood", "rst_flood"
    if {"FIN", "PSH", "URG"} <= core:
        return "tcp_flood", "xmas_flood"
    if not core:
        return "tcp_flood", "null_flood"
    if "FIN" in core:
        return "tcp_flood", "fin_flood"
    if "PSH" in core:
        return "tcp_flood", "psh_ack_flood"
    if core == {"ACK"}:
        return "tcp_flood", "ack_flood"
    return "tcp_flood", "tcp_flood"


_PROTO_NUMBERS = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmp"}


def proto_name(label: Any) -> str:
    return _proto_name(label if isinstance(label, str) else str(label))


@functools.lru_cache(maxsize=256)  # a profile's labels are a few: asked for each of its thousands of ports
def _proto_name(label: str) -> str:
    text = label.lower()
    return _PROTO_NUMBERS.get(text, "icmp" if text.startswith("icmp") else text)


def _tcp_vectors(p: Profile, http_requests: int) -> list[Vector]:
    by_sub: dict[str, Vector] = {}
    for label, n in p.tcp_flags.items():
        family, sub = tcp_vector_of_label(str(label))
        v = by_sub.setdefault(sub, Vector(family, sub, 0))
        v.packets += int(n)
    if http_requests:
        # HTTP request lines ride on PSH-ACK (or ACK) segments: they are the http flood, not a flag flood
        left = http_requests
        for sub in ("psh_ack_flood", "ack_flood"):
            if sub in by_sub and left:
                take = min(left, by_sub[sub].packets)
                by_sub[sub].packets -= take
                left -= take
        by_sub["http_flood"] = Vector("http_flood", "http_request_flood", http_requests, confirmed=True,
                                      evidence="payload")
    _single_flow(p, by_sub)
    total_tcp = sum(v.packets for v in by_sub.values())
    refl = by_sub.get("synack_reflection")
    if refl and total_tcp and refl.packets >= SIGNIFICANT_SHARE * total_tcp:
        # reflectors answer spoofed SYNs with SYN-ACK, and with RST where the port is closed
        rst = by_sub.pop("rst_flood", None)
        if rst:
            refl.packets += rst.packets
            refl.detail = "with RST from closed reflector ports"
    return [v for v in by_sub.values() if v.packets > 0]


def _single_flow(p: Profile, by_sub: dict[str, Vector]) -> None:
    """A few TCP connections are not a flood: when the non-SYN TCP packets come from a handful of source
    ports and most inbound packets from a handful of sources, they are background connections."""
    keys = [k for k in by_sub if k in ("ack_flood", "psh_ack_flood", "fin_flood", "rst_flood")]
    non_syn = sum(by_sub[k].packets for k in keys)
    total = p.proto_total() or p.packets_in
    if not non_syn or not total:
        return
    ports = sorted((n for (proto, _), n in p.src_ports.items() if proto_name(proto) == "tcp"), reverse=True)
    few_ports = sum(ports[:BACKGROUND_TOP]) >= BACKGROUND_PORT_SHARE * non_syn
    few_sources = sum(n for _, n in p.src_ips.most_common(BACKGROUND_TOP)) >= BACKGROUND_SOURCE_SHARE * total
    if few_ports and few_sources:
        merged = Vector("background", "tcp_connections", sum(by_sub.pop(k).packets for k in keys),
                        detail=f"{BACKGROUND_TOP} source ports carry them")
        by_sub["tcp_connections"] = merged


def _port_pool(ports: Counter[tuple[str, int]], proto: str, only: Container[int] | None = None) -> dict[int, int]:
    """Packets by port of one protocol (of the ports in `only` if given: a profile holds thousands)."""
    out: dict[int, int] = {}
    for (pr, port), n in ports.items():
        port = int(port)
        if (only is None or port in only) and proto_name(pr) == proto:
            out[port] = out.get(port, 0) + int(n)
    return out


def _udp_vectors(p: Profile, later_frags: int) -> list[Vector]:
    """Reflection by source port and DNS queries by destination port, each only when its port stands far
    above chance (floodwatch.detect.reflection); every other UDP packet is a plain UDP flood."""
    udp_total = p.proto.get("udp", 0)
    pool = max(0, udp_total - later_frags)  # UDP packets that carry ports
    attack, per_record = p.proto_total() or p.packets_in, p.per_record
    by_name: dict[str, Vector] = {}
    src_pool = _port_pool(p.src_ports, "udp", REFLECTION_PORTS)
    for port in sorted(REFLECTION_PORTS):  # the pool's reflection ports, by port (not all its thousands)
        n = src_pool.get(port)
        if n is None or not above_chance(n, pool, per_record, attack):
            continue
        name = REFLECTION_PORTS[port]
        family = "dns_flood" if name == "dns" else "udp_flood"
        v = by_name.setdefault(name, Vector(family, f"{name}_amplification", 0, evidence="port"))
        v.packets += n
    for name, v in by_name.items():
        v.confirmed = confirmed_by(name, v.packets, p.signatures)
    vectors = list(by_name.values())
    dns_queries = _port_pool(p.dst_ports, "udp", (53,)).get(53, 0)
    dns_queries = max(0, dns_queries - by_name["dns"].packets) if "dns" in by_name else dns_queries
    if above_chance(dns_queries, pool, per_record, attack):
        vectors.append(Vector("dns_flood", "dns_query_flood", dns_queries, evidence="port",
                              confirmed=confirmed_by("dns_query", dns_queries, p.signatures)))
    explained = sum(v.packets for v in vectors)
    rest = udp_total - explained - later_frags
    if rest > 0:
        vectors.append(Vector("udp_flood", "udp_flood", rest))
    return vectors


def _frag_vectors(p: Profile, vectors: list[Vector]) -> tuple[list[Vector], bool]:
    """Later fragments (no ports) join the biggest UDP reflection vector, else make a fragment flood."""
    later = int(p.fragments.get("later", 0))
    if not later:
        return vectors, False
    total = p.proto_total() or p.packets_in
    refl = [v for v in vectors if v.subtype.endswith("_amplification")
            and v.packets + later >= SIGNIFICANT_SHARE * total]
    if refl:
        biggest = max(refl, key=lambda v: v.packets)
        biggest.packets += later
        biggest.detail = "fragmented"
        return vectors, True
    first = int(p.fragments.get("first", 0))
    for v in vectors:  # first fragments carry a UDP/TCP header: take them back from a plain flood
        if v.subtype in ("udp_flood", "tcp_flood") and first:
            take = min(first, v.packets)
            v.packets -= take
            later += take
            first -= take
    kept = [v for v in vectors if v.packets > 0]
    return [*kept, Vector("fragment_flood", "fragment_flood", later)], True


def _icmp_vectors(p: Profile) -> list[Vector]:
    total = p.proto.get("icmp", 0)
    if not total:
        return []
    types: Counter[str] = Counter()
    for (proto, port), n in p.src_ports.items():
        if proto_name(proto) == "icmp":
            types[ICMP_TYPES.get(int(port), "icmp_flood")] += int(n)
    sub = types.most_common(1)[0][0] if types else "icmp_flood"
    return [Vector("icmp_flood", sub, total)]


def vectors_of(p: Profile) -> tuple[list[Vector], bool]:
    """Every vector in the profile, biggest first, and whether fragments were seen."""
    http = int(p.signatures.get("http_request", 0))
    later = int(p.fragments.get("later", 0))
    vectors = _tcp_vectors(p, http) + _udp_vectors(p, later) + _icmp_vectors(p)
    vectors, fragmented = _frag_vectors(p, vectors)
    malformed = min(int(p.malformed), int(p.proto.get("other", 0)))
    other = int(p.proto.get("other", 0)) - malformed
    if malformed:
        vectors.append(Vector("malformed_flood", "malformed_flood", malformed))
    if other:
        vectors.append(Vector("unknown", "ip_protocol_flood", other))
    vectors.sort(key=lambda v: v.packets, reverse=True)
    return vectors, fragmented


def name_attack(vectors: list[Vector], total: int) -> tuple[str, str, list[Vector]]:
    """(family, subtype, significant vectors): multi_vector when two or more carry a significant share
    of the attack's packets (background connections left out)."""
    if not vectors or total <= 0:
        return "unknown", "unknown", []
    attack = [v for v in vectors if v.family != "background"] or vectors
    attack_total = sum(v.packets for v in attack) or total
    significant = [v for v in attack if v.packets >= SIGNIFICANT_SHARE * attack_total] or attack[:1]
    if len(significant) >= 2:
        return "multi_vector", "+".join(v.subtype for v in significant), significant
    top = significant[0]
    return top.family, top.subtype, significant


def severity_of(peak_pps: int, peak_bps: int, threshold_pps: float) -> str:
    """low/medium/high/critical from the peak against the threshold and from its absolute size."""
    ratio = peak_pps / threshold_pps if threshold_pps > 0 else 0.0
    if ratio >= 20 or peak_pps >= 1_000_000 or peak_bps >= 10_000_000_000:
        return "critical"
    if ratio >= 5 or peak_pps >= 200_000 or peak_bps >= 1_000_000_000:
        return "high"
    if ratio >= 2 or peak_pps >= 50_000 or peak_bps >= 100_000_000:
        return "medium"
    return "low"


def confidence_of(top: Vector | None, share: float, ratio: float, duration: float, family: str) -> int:
    """0-100: how sure the name is (see docs/detector.md)."""
    score = 40
    if top is not None:
        score += 25 if share >= 0.8 else 15 if share >= 0.5 else 5
        score += 15 if top.confirmed else 0
    score += 10 if ratio >= 5 else 5 if ratio >= 1.5 else 0
    score += 5 if duration >= 3 else 0
    score -= 25 if family == "unknown" else 0
    return max(0, min(100, score))


def known_tops(p: Profile, name: str, n: int = TOP_N) -> list[tuple[Any, int]]:
    """The biggest entries of a top list whose counts are known within TOP_MAX_ERROR (an entry the
    windows often left out is not stated: with many equal sources or random ports, none is)."""
    out: list[tuple[Any, int]] = []
    floors = p.floors[name]
    total = p.floor_total[name]
    least_error = total - max(floors.values(), default=0)  # no key may miss less (Profile.error)
    for key, count in getattr(p, name).most_common():
        if count <= 0 or len(out) >= n or TOP_MAX_ERROR * count < least_error:
            break  # by count descending: once even the least error is too much, it is for every key after
        if total - floors[key] <= TOP_MAX_ERROR * count:
            out.append((key, int(count)))
    return out


def geo_of(countries: Counter[str]) -> dict[str, int]:
    """Country -> packets, from the windows' country counts (their heaviest sources, looked up by the
    aggregator with the configured [aggregator] geo source); addresses of no known country are left out."""
    known = [(cc, int(n)) for cc, n in countries.most_common() if cc != UNKNOWN and n > 0]
    return dict(known[: TOP_N * 2])


def indicators_of(p: Profile) -> tuple[list[dict[str, Any]], bool]:
    """(ioc_matches, botnet_detected) from the config IOC and built-in botnet signature counts."""
    matches = [{"name": name.split(":", 1)[1], "kind": name.split(":", 1)[0], "count": int(n)}
               for name, n in sorted(p.signatures.items())
               if (name.startswith("ioc:") or name.startswith("botnet:")) and n > 0]
    return matches, bool(matches)


def target_ips_of(p: Profile) -> tuple[list[str], bool]:
    """The victims and whether it is a spread over a prefix (victims.share_targets over the whole
    profile); none when no destination holds a share (frames that name no address)."""
    from floodwatch.detect.victims import share_targets

    found = share_targets(p.dst_ips, p.proto_total() or p.packets_in, *p.prefix_lens)
    ranked = sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_N]
    return [t for t, _ in ranked], any("/" in t for t in found)


def protocol_shares(p: Profile) -> dict[str, float]:
    """Percent of inbound packets by protocol; frames whose IP header does not parse are `malformed`,
    apart from `other` (other IP protocols and non-IP frames)."""
    counts = Counter(p.proto)
    malformed = min(int(p.malformed), counts["other"])
    if malformed:
        counts["other"] -= malformed
        counts["malformed"] = malformed
    total = sum(counts.values())
    if not total:
        return {}
    return {k: round(100.0 * v / total, 1) for k, v in sorted(counts.items()) if round(100.0 * v / total, 1) > 0}


def classify_profile(p: Profile, threshold_pps: float = 0.0, peak_pps: int = 0, peak_bps: int = 0) -> dict[str, Any]:
    """The incident fields that describe the attack in `p` (no identity or lifecycle fields)."""
    total = p.proto_total() or p.packets_in
    vectors, fragmented = vectors_of(p)
    family, subtype, significant = name_attack(vectors, total)
    top = significant[0] if significant else None
    attack_total = sum(v.packets for v in vectors if v.family != "background") or total
    share = top.packets / attack_total if top else 0.0
    spoofed, spoof_reason = spoofing_verdict(p.ttl, p.sources, p.packets_in)
    iocs, botnet = indicators_of(p)
    targets, carpet = target_ips_of(p)
    ratio = peak_pps / threshold_pps if threshold_pps > 0 else 0.0
    return {
        "attack_family": family,
        "attack_subtype": subtype,
        "severity": severity_of(peak_pps, peak_bps, threshold_pps),
        "confidence": confidence_of(top, share, ratio, p.duration, family),
        "peak_pps": int(peak_pps),
        "peak_bps": int(peak_bps),
        "protocol_breakdown": protocol_shares(p),
        "tcp_flag_breakdown": {str(k): int(v) for k, v in p.tcp_flags.most_common() if v},
        "geo_breakdown": geo_of(p.countries),
        "source_ip_count": int(max(p.sources, min(len(p.src_ips), p.packets_in))),
        "top_src_ips": [{"ip": ip, "count": n} for ip, n in known_tops(p, "src_ips")],
        "top_dst_ports": [{"port": int(port), "proto": proto_name(proto), "count": n}
                          for (proto, port), n in known_tops(p, "dst_ports")],
        "target_ips": targets,
        "ioc_matches": iocs,
        "spoofing_detected": spoofed,
        "botnet_detected": botnet,
        "vectors": [v.as_dict(total) for v in vectors[:8]],
        "extra": {"fragmented": fragmented, "carpet_bombing": carpet, "spoofing_reason": spoof_reason,
                  "packets": int(p.packets_in), "windows": p.windows},
    }


def classify_capture(windows: list[TrafficWindow] | Profile) -> dict[str, Any]:
    """`floodwatch analyze --classify`: the whole capture fingerprinted as one attack, no thresholds.

    Takes every TrafficWindow of the run (or a Profile already summed) and returns a dict with every
    IncidentEvent field: a fresh incident_key, status "resolved", started_at/ended_at from the file.
    """
    p = windows if isinstance(windows, Profile) else profile_of(list(windows))
    fields = classify_profile(p, 0.0, p.peak_pps, p.peak_bps)
    return {
        "incident_key": str(uuid.uuid4()),
        "status": "resolved",
        "started_at": p.t_first,
        "ended_at": p.t_last,
        "updated_at": p.t_last,
        "seq": 0,
        **fields,
    }
