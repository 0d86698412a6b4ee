"""What a dissected capture says about the attack: subtype evidence, the verdict, IOC matches.

Subtype names are the detector's (floodwatch.detect.classify): `<protocol>_amplification` for UDP
reflection (a packet counts only when it comes from the protocol's port AND tshark decoded it as that
protocol), the TCP flag floods (`syn_flood`, `synack_reflection`, `ack_flood`, ...) and
`http_request_flood`. IOC patterns (the config's, parsed as the detector parses them) and the built-in
attack-tool markers are searched in the whole captured bytes of each packet, not only a 32-byte head,
and in the decoded names (DNS query names, HTTP hosts, URIs and user agents, SSDP headers).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import ahocorasick

from floodwatch.capture.pcapfile import read_frames
from floodwatch.detect.classify import REFLECTION_PORTS, tcp_vector_of
from floodwatch.signatures import BUILTIN_CONTENT, parse_ioc

# tshark's protocol name where it differs from the detector's protocol name
TSHARK_NAMES = {"memcached": "memcache", "netbios": "nbns", "slp": "srvloc", "bacnet": "bvlc",
                "ws_discovery": "xml", "mssql": "mssqlbrowser", "steam": "steam"}  # fmt: skip
_FLAGS = ((0x01, "FIN"), (0x02, "SYN"), (0x04, "RST"), (0x08, "PSH"), (0x10, "ACK"), (0x20, "URG"),
          (0x40, "ECE"), (0x80, "CWR"))  # fmt: skip
DECODED_TABLES = ("dns_query_names", "http_hosts", "http_uris", "http_user_agents", "ssdp_header_st",
                  "ssdp_header_server", "ssdp_header_user-agent", "ssdp_header_location")  # fmt: skip
MAX_MATCHES = 100


def flag_names(flags: int) -> frozenset[str]:
    return frozenset(name for bit, name in _FLAGS if flags & bit)


def tcp_subtype(names: frozenset[str]) -> str:
    return tcp_vector_of(names)[1]


def udp_subtype(sport: int, protos: list[str]) -> str:
    """`<name>_amplification` when the packet comes from a reflector port and decodes as its protocol."""
    name = REFLECTION_PORTS.get(sport)
    if name is None:
        return ""
    if TSHARK_NAMES.get(name, name) in protos:
        return f"{name}_amplification"
    return ""


def judge(evidence: Mapping[str, int], total: int, incident_subtype: str, min_packets: int,
          min_share: float) -> tuple[str, str]:
    """(subtype, verdict): "confirmed" when every part of the incident's subtype (`a+b` for multi
    vector) has at least min_packets packets of evidence; else "refined" to the best-evidenced subtype
    when it has min_packets and min_share of the file; else ("", "unconfirmed")."""
    parts = [p for p in incident_subtype.split("+") if p]
    if parts and all(evidence.get(p, 0) >= min_packets for p in parts):
        return incident_subtype, "confirmed"
    best = max(evidence.items(), key=lambda kv: (kv[1], kv[0]), default=("", 0))
    if best[0] and best[1] >= min_packets and total and best[1] / total >= min_share:
        return best[0], "refined"
    return "", "unconfirmed"


def _patterns(ioc_patterns: Iterable[Any]) -> list[tuple[str, str, list[bytes], str]]:
    """(name, kind, byte patterns, text) for config IOCs (kind "ioc") and built-in tool markers."""
    out: list[tuple[str, str, list[bytes], str]] = []
    for item in list(ioc_patterns)[:10_000]:
        try:
            name, pats = parse_ioc(item)
        except ValueError:
            continue
        raw = item.get("pattern") if isinstance(item, Mapping) else item
        out.append((name, "ioc", pats, str(raw).strip()))
    for sig in BUILTIN_CONTENT:
        if sig.name.startswith("botnet:"):
            out.append((sig.name.split(":", 1)[1], "botnet", list(sig.patterns), ""))
    return out


def _scan_frames(path: str, pats: list[tuple[str, str, list[bytes], str]]) -> Counter[int]:
    """Packets per pattern index whose captured bytes contain one of its byte strings."""
    auto = ahocorasick.Automaton()
    words: dict[str, set[int]] = {}
    for i, (_, _, byte_pats, _) in enumerate(pats):
        for b in byte_pats:
            words.setdefault(b.decode("latin-1"), set()).add(i)
    for word, ids in words.items():
        auto.add_word(word, tuple(ids))
    counts: Counter[int] = Counter()
    if not words:
        return counts
    auto.make_automaton()
    for frame in read_frames(path):
        hit: set[int] = set()
        for _, ids in auto.iter(frame.decode("latin-1")):
            hit.update(ids)
        counts.update(hit)
    return counts


def _scan_decoded(findings: Mapping[str, Any], pats: list[tuple[str, str, list[bytes], str]]) -> Counter[int]:
    counts: Counter[int] = Counter()
    for i, (_, kind, _, text) in enumerate(pats):
        needle = text.lower()
        if kind != "ioc" or len(needle) < 3:
            continue
        for table in DECODED_TABLES:
            for value, n in findings.get(table, {}).get("top", []):
                if needle in str(value).lower():
                    counts[i] += int(n)
    return counts


def ioc_matches(path: str, ioc_patterns: Iterable[Any], findings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """[{"name", "kind", "count", "where": "pcap"}], biggest first (the detector's ioc_matches shape)."""
    pats = _patterns(ioc_patterns)
    raw = _scan_frames(path, pats)
    decoded = _scan_decoded(findings, pats)
    found = sorted(((max(raw.get(i, 0), decoded.get(i, 0)), pats[i][0], pats[i][1]) for i in set(raw) | set(decoded)),
                   key=lambda t: (-t[0], t[1]))
    return [{"name": name, "kind": kind, "count": n, "where": "pcap"} for n, name, kind in found[:MAX_MATCHES]]
