"""Shares that add up: synthetic floods (mixed vectors, random and fixed ports, IPv4 and IPv6, fragments,
malformed frames) written as captures, run through `floodwatch analyze` (the real actors), and every
number the incident states recomputed from the capture's own packets (tests/detect/truth_oracle.py).

Analysis of a file is unsampled: the allowed error is the windows that fall outside the incident (its
first and last), the rounding of percentages, and what top lists may miss (stated as at most 25 %).
"""

from __future__ import annotations

import ipaddress
import json
import random
import subprocess
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import iptocc
import pytest

from floodwatch.aggregate.features import flag_combo
from floodwatch.capture.pcapwrite import write_pcap
from floodwatch.detect.classify import tcp_vector_of_label
from floodwatch.detect.reflection import REFLECTION_PORTS
from floodwatch.signatures import WEB_PORTS
from floodwatch.trafficgen.pcapw import paced
from floodwatch.trafficgen.vectors import VectorSpec, frames_for
from tests.detect.truth_oracle import HTTP, Truth, truth_of
from tests.helpers import PYTHON, REPO

pytestmark = pytest.mark.slow
PPS, COUNT, T0 = 20_000, 40_000, 1_700_000_000.0  # random ports: a fresh frame for every packet

# (name, [(vector spec, weight)], subtypes that must be named among the vectors)
CASES: list[tuple[str, list[tuple[VectorSpec, int]], set[str]]] = [
    ("udp_random_sport_v4", [(VectorSpec("udp_flood", sport="random", variety=COUNT), 1)], {"udp_flood"}),
    ("udp_v6_slash64_dns_queries", [(VectorSpec("udp_flood", True, sport="random", dport="53", dst_spread=64,
                                                variety=COUNT), 1)], {"dns_query_flood"}),
    ("dns_amp_and_syn_v4", [(VectorSpec("dns_amplification"), 1), (VectorSpec("syn_flood"), 1)],
     {"dns_amplification", "syn_flood"}),
    ("ntp_amp_v6_and_random_udp", [(VectorSpec("ntp_amplification", True), 7),
                                   (VectorSpec("udp_flood", True, sport="random"), 3)],
     {"ntp_amplification", "udp_flood"}),
    ("fragments_v4", [(VectorSpec("fragment_flood"), 1)], {"fragment_flood"}),
    ("fragments_v6_and_icmp", [(VectorSpec("fragment_flood", True), 1), (VectorSpec("icmp_flood", True), 1)],
     {"fragment_flood", "icmp_flood"}),
    ("malformed_and_udp", [(VectorSpec("malformed_flood", variety=4000), 4), (VectorSpec("udp_flood"), 1)],
     {"malformed_flood", "udp_flood"}),
    ("xmas_ack_icmp_v6", [(VectorSpec("xmas_flood", True), 1), (VectorSpec("ack_flood", True), 1),
                          (VectorSpec("icmp_flood", True), 1)], {"xmas_flood", "ack_flood", "icmp_flood"}),
    ("http_and_synack", [(VectorSpec("http_flood"), 1), (VectorSpec("synack_reflection"), 1)],
     {"http_request_flood", "synack_reflection"}),
    ("memcached_chargen", [(VectorSpec("memcached_amplification"), 1), (VectorSpec("chargen_amplification"), 1)],
     {"memcached_amplification", "chargen_amplification"}),
    ("ntp_amp_eight_reflectors_and_syn", [(VectorSpec("ntp_amplification", sources=8), 1),
                                          (VectorSpec("syn_flood"), 1)], {"ntp_amplification", "syn_flood"}),
    ("fixed_port_123_random_payload", [(VectorSpec("udp_flood", sport="123"), 1)], {"ntp_amplification"}),
    ("multi_vector_v6_two_victims", [(VectorSpec("multi_vector", True), 1),
                                     (VectorSpec("rst_flood", True, dst="fd00::7"), 1)],
     {"dns_amplification", "syn_flood", "rst_flood"}),
]


def capture(tmp: Path, name: str, parts: list[tuple[VectorSpec, int]]) -> Path:
    pool: list[bytes] = []
    for i, (spec, weight) in enumerate(parts):
        pool += frames_for(replace(spec, seed=i + 1, variety=spec.variety * weight))
    random.Random(7).shuffle(pool)
    path = tmp / f"{name}.pcap"
    write_pcap(path, paced(pool, PPS, COUNT, T0))
    return path


def analyze(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run([PYTHON, "-m", "floodwatch.cli", "analyze", "--json", "--pps-threshold", "2000", str(path)],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    last: dict[str, dict[str, Any]] = {}
    for line in out.stdout.splitlines():
        ev = json.loads(line)
        if "incident_key" in ev and "attack_family" in ev:
            last[ev["incident_key"]] = ev
    return list(last.values())


def vector_packets(t: Truth, subtype: str, fragmented: bool) -> int:
    """The capture's packets that fit a vector's definition (docs/detector.md)."""
    if subtype.endswith("_amplification"):
        ports = {p for p, n in REFLECTION_PORTS.items() if n == subtype.removesuffix("_amplification")}
        return t.count(lambda p: (p.kind == "udp" and p.sport in ports) or (fragmented and p.frag == "later"))
    preds = {
        "dns_query_flood": lambda p: p.kind == "udp" and p.dport == 53,
        "udp_flood": lambda p: p.kind == "udp",
        "fragment_flood": lambda p: p.frag != "none",
        "malformed_flood": lambda p: p.kind == "malformed",
        "ip_protocol_flood": lambda p: p.kind == "other",
        "http_request_flood": lambda p: p.kind == "tcp" and p.dport in WEB_PORTS and p.payload.startswith(HTTP),
        "tcp_connections": lambda p: p.kind == "tcp",
    }
    if subtype in preds:
        return t.count(preds[subtype])
    if subtype.startswith("icmp"):
        return t.count(lambda p: p.kind == "icmp")
    rst_too = subtype == "synack_reflection"
    return t.count(lambda p: p.kind == "tcp" and p.flags >= 0 and (
        tcp_vector_of_label(flag_combo(p.flags))[1] == subtype or (rst_too and bool(p.flags & 4))))


def check_shares(inc: dict[str, Any], t: Truth, stated_packets: int) -> None:
    total = len(t.pkts)
    kinds = {k: 100.0 * n / total for k, n in t.by("kind").items()}
    for k in set(kinds) | set(inc["protocol_breakdown"]):
        assert abs(inc["protocol_breakdown"].get(k, 0.0) - kinds.get(k, 0.0)) <= 1.5, (k, inc["protocol_breakdown"],
                                                                                       kinds)
    tcp = [p for p in t.pkts if p.kind == "tcp" and p.flags >= 0]
    flags = Counter(flag_combo(p.flags) for p in tcp)
    for label, n in inc["tcp_flag_breakdown"].items():
        assert n <= flags.get(label, 0), (label, n, flags)
        assert n >= 0.9 * flags.get(label, 0) * stated_packets / total, (label, n, flags)
    assert sum(v["share"] for v in inc["vectors"]) <= 100.5


def check_vectors(inc: dict[str, Any], t: Truth, expected: set[str]) -> None:
    fragmented = bool(inc["extra"].get("fragmented"))
    named = {v["subtype"] for v in inc["vectors"]}
    assert expected <= named, (expected, inc["vectors"])
    for v in inc["vectors"]:
        there = vector_packets(t, v["subtype"], fragmented)
        assert v["packets"] <= there + 1 and there > 0, (v, there)  # no vector whose packets are not there
        assert v["evidence"] in ("payload", "port", "header")
        if v["subtype"].endswith("_amplification") or v["subtype"] == "dns_query_flood":
            assert v["share"] >= 1.0, v  # a port names a vector only with a real share of the flood


def check_tops(inc: dict[str, Any], t: Truth) -> None:
    sources: Counter[str] = Counter({str(ip): n for ip, n in t.by("src").items()})
    for row in inc["top_src_ips"]:
        true = sources[row["ip"]]
        assert row["count"] <= true + 1 and true <= 1.3 * row["count"] + 1, (row, true)
    dports = Counter((("tcp" if p.kind == "tcp" else "udp"), p.dport) for p in t.pkts
                        if p.kind in ("tcp", "udp") and p.dport >= 0)
    for row in inc["top_dst_ports"]:
        true = dports[(row["proto"], row["port"])]
        assert row["count"] <= true + 1 and true <= 1.3 * row["count"] + 1, (row, true)
    total = len(t.pkts)
    heavy = {ip for ip, n in sources.items() if n >= 0.05 * total}
    assert heavy <= {row["ip"] for row in inc["top_src_ips"]}, (heavy, inc["top_src_ips"])
    busy = {key for key, n in dports.items() if n >= 0.05 * total}
    assert busy <= {(row["proto"], row["port"]) for row in inc["top_dst_ports"]}, (busy, inc["top_dst_ports"])
    countries = Counter(iptocc.country_code(ip) for ip in sources.elements())
    for cc, n in inc["geo_breakdown"].items():  # the sources whose counts are known: a floor
        assert n <= countries[cc] + 1, (cc, n, countries[cc])
    distinct = len(sources)
    assert abs(inc["source_ip_count"] - distinct) <= max(3, 0.05 * distinct), (inc["source_ip_count"], distinct)
    dst = t.by("dst")
    for target in inc["target_ips"]:
        if "/" in target:
            net = ipaddress.ip_network(target)
            n = sum(c for ip, c in dst.items() if ipaddress.ip_address(str(ip)) in net)
        else:
            n = dst[target]
        assert n >= 0.05 * len(t.pkts), (target, n)


@pytest.mark.parametrize("name,parts,expected", CASES, ids=[c[0] for c in CASES])
def test_every_number_of_an_incident_is_in_its_capture(tmp_path: Path, name: str,
                                                       parts: list[tuple[VectorSpec, int]], expected: set[str]) -> None:
    path = capture(tmp_path, name, parts)
    t = truth_of(path)
    incidents = analyze(path)
    assert len(incidents) == 1, [(i["attack_subtype"], i["started_at"]) for i in incidents]
    inc = incidents[0]
    stated = int(inc["extra"]["packets"])
    assert 0.9 * len(t.pkts) <= stated <= len(t.pkts)
    assert 0.9 * t.peak_pps() <= inc["peak_pps"] <= t.peak_pps() + 10
    check_shares(inc, t, stated)
    check_vectors(inc, t, expected)
    check_tops(inc, t)
