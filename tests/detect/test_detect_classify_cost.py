"""The classifier's cost cuts (issue 17) keep its verdicts: an incident's update classifies the whole
profile once a second, and a long flood's profile holds thousands of source ports and sources. Each
shortcut against the computation it replaced, on profiles of many windows."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from floodwatch.detect import classify
from floodwatch.detect.profile import Profile
from floodwatch.detect.reflection import REFLECTION_PORTS, above_chance, confirmed_by
from tests.detect.detect_factory import flood_window


def former_proto_name(label: Any) -> str:
    text = str(label).lower()
    return {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmp"}.get(text, "icmp" if text.startswith("icmp") else text)


def former_port_pool(ports: Counter[tuple[str, int]], proto: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for (pr, port), n in ports.items():
        if former_proto_name(pr) == proto:
            out[int(port)] = out.get(int(port), 0) + int(n)
    return out


def former_udp_vectors(p: Profile, later_frags: int) -> list[classify.Vector]:
    udp_total = p.proto.get("udp", 0)
    pool = max(0, udp_total - later_frags)
    attack, per_record = p.proto_total() or p.packets_in, p.per_record
    by_name: dict[str, classify.Vector] = {}
    for port, n in sorted(former_port_pool(p.src_ports, "udp").items()):
        name = REFLECTION_PORTS.get(port)
        if name is None or not above_chance(n, pool, per_record, attack):
            continue
        family = "dns_flood" if name == "dns" else "udp_flood"
        v = by_name.setdefault(name, classify.Vector(family, f"{name}_amplification", 0, evidence="port"))
        v.packets += n
    for name, v in by_name.items():
        v.confirmed = confirmed_by(name, v.packets, p.signatures)
    vectors = list(by_name.values())
    dns_queries = former_port_pool(p.dst_ports, "udp").get(53, 0)
    dns_queries = max(0, dns_queries - by_name["dns"].packets) if "dns" in by_name else dns_queries
    if above_chance(dns_queries, pool, per_record, attack):
        vectors.append(classify.Vector("dns_flood", "dns_query_flood", dns_queries, evidence="port",
                                       confirmed=confirmed_by("dns_query", dns_queries, p.signatures)))
    rest = udp_total - sum(v.packets for v in vectors) - later_frags
    if rest > 0:
        vectors.append(classify.Vector("udp_flood", "udp_flood", rest))
    return vectors


def former_known_tops(p: Profile, name: str, n: int = classify.TOP_N) -> list[tuple[Any, int]]:
    out: list[tuple[Any, int]] = []
    for key, count in getattr(p, name).most_common():
        if count <= 0 or len(out) >= n:
            break
        if p.error(name, key) <= classify.TOP_MAX_ERROR * count:
            out.append((key, int(count)))
    return out


@pytest.mark.parametrize("kind", ["udp", "reflection", "dns_query", "mixed"])
def test_detect_long_flood_classified_as_by_the_former_computation(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(kind)
    p = Profile()
    for length in (5, 40, 300, 700):  # the profile of a flood of 0.5 s ... 70 s: up to ~4,000 ports and sources
        while p.windows < length:
            p.add(flood_window(rnd, p.windows, kind))
        now = classify.classify_profile(p, 10000, 258000, 150_000_000)
        with monkeypatch.context() as m:
            m.setattr(classify, "_udp_vectors", former_udp_vectors)
            m.setattr(classify, "known_tops", former_known_tops)
            m.setattr(classify, "proto_name", former_proto_name)
            before = classify.classify_profile(p, 10000, 258000, 150_000_000)
        assert now == before
    assert len(p.src_ports) > 2000 and len(p.src_ips) > 2000
    assert now["top_src_ips"] and now["top_src_ips"][0]["ip"] == "11.0.0.0"  # the heavy sources are stated
    assert {"udp": "udp_flood", "reflection": "dns_amplification", "dns_query": "dns_query_flood",
            "mixed": "null_flood"}[kind] in now["attack_subtype"]


def test_detect_protocol_labels_named_as_before() -> None:
    for label in ("udp", "UDP", "tcp", "6", "17", "1", "58", "icmp", "icmp6", "ICMPv6", "other", "", "gre", 6, 17):
        assert classify.proto_name(label) == former_proto_name(label)
