"""Live: generator in namespace A -> veth -> capture -> aggregator -> detector (real processes in B).

A real full-speed TCP transfer both ways opens nothing; spoofed SYN (IPv4) and DNS amplification (IPv6)
floods are detected and named. Needs root and network namespaces.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from floodwatch.messages import IncidentOpened
from tests.conftest import require_netns
from tests.detect.detect_live import bulk_tcp_both_ways, live_pipeline, sender_report
from tests.helpers import eventually, netns_pair

pytestmark = [pytest.mark.netns, pytest.mark.slow]
THRESHOLD = 2_000
SETTINGS = {"pps_threshold": THRESHOLD, "dynamic": False, "hold_down": 1.0, "cooldown": 0.5}


def test_detect_live_floods_named_and_bulk_transfer_quiet(tmp_path: Path) -> None:
    require_netns()
    with netns_pair("fwdet") as pair, live_pipeline(pair, tmp_path, SETTINGS) as live:
        bulk_tcp_both_ways(pair, 3.0)
        bulk_tcp_both_ways(pair, 2.0, v6=True)
        assert not [m for m in live.sub.drain(0.5) if isinstance(m, IncidentOpened)]
        assert live.harness.counters("detector").get("exempt_packets", 0) > 0

        sender = live.send("syn_flood", 10 * THRESHOLD, 2.5)
        opened, _ = live.opened(timeout=20)
        sender_report(sender)
        assert (opened.attack_family, opened.attack_subtype) == ("syn_flood", "syn_flood")
        assert opened.target_ips == [pair.ip4_b]
        resolved = live.resolved()
        assert resolved.incident_key == opened.incident_key and resolved.protocol_breakdown == {"tcp": 100.0}
        assert resolved.spoofing_detected is True  # 2,000 sources, one TTL: seen once evidence has grown

        sender = live.send("dns_amplification", 10 * THRESHOLD, 2.5, v6=True)
        opened, _ = live.opened(timeout=20)
        report = sender_report(sender)
        assert report["sent"] == 5 * THRESHOLD * 5
        assert (opened.attack_family, opened.attack_subtype) == ("dns_flood", "dns_amplification")
        assert opened.target_ips == [pair.ip6_b]
        assert live.resolved().spoofing_detected is False  # reflectors at real distances


LIVE_VECTORS = [  # (vector, IPv6?, family, subtype)
    ("udp_flood", True, "udp_flood", "udp_flood"),
    ("ntp_amplification", False, "udp_flood", "ntp_amplification"),
    ("memcached_amplification", True, "udp_flood", "memcached_amplification"),
    ("icmp_flood", True, "icmp_flood", "icmp_flood"),
    ("xmas_flood", False, "tcp_flood", "xmas_flood"),
    ("synack_reflection", True, "tcp_flood", "synack_reflection"),
    ("fragment_flood", False, "fragment_flood", "fragment_flood"),
    ("http_flood", False, "http_flood", "http_request_flood"),
]


def test_detect_live_more_vectors_named(tmp_path: Path) -> None:
    require_netns()
    settings = dict(SETTINGS, hold_down=0.5, cooldown=0.3)
    wrong = []
    with netns_pair("fwdet") as pair, live_pipeline(pair, tmp_path, settings) as live:
        for vector, v6, family, subtype in LIVE_VECTORS:
            sender = live.send(vector, 10 * THRESHOLD, 1.5, v6=v6)
            opened, _ = live.opened(timeout=20)
            sender_report(sender)
            resolved = live.resolved()
            got = (resolved.attack_family, resolved.attack_subtype)
            if got != (family, subtype) or opened.attack_subtype != subtype:
                wrong.append((vector, v6, opened.attack_subtype, got))
    assert wrong == []


def test_detect_live_flood_after_a_silent_link_learnt_as_zeros(tmp_path: Path) -> None:
    """An idle link's windows (sent compactly: no records, zero registers) still teach the baseline, and
    a flood after the silence opens an incident that ends when the link is quiet again."""
    require_netns()
    settings = {"dynamic": True, "floor_pps": THRESHOLD, "min_learn_seconds": 3.0, "hold_down": 1.0,
                "cooldown": 0.5}
    with netns_pair("fwsil") as pair, live_pipeline(pair, tmp_path, settings) as live:
        eventually(lambda: live.harness.counters("detector").get("learnt_windows", 0) >= 50, timeout=30,
                   message="five seconds of silence learnt")
        assert not [m for m in live.sub.drain(0.2) if isinstance(m, IncidentOpened)]
        sender = live.send("udp_flood", 10 * THRESHOLD, 2.5)
        opened, _ = live.opened(timeout=20)
        sender_report(sender)
        assert opened.attack_family == "udp_flood" and opened.target_ips == [pair.ip4_b]
        assert opened.extra["threshold_source"].startswith("dynamic")
        assert live.resolved().incident_key == opened.incident_key


def test_detect_live_flood_after_a_long_silence_read_every_idle_interval(tmp_path: Path) -> None:
    """Past idle_after seconds of silence the capture reads the counters every idle_interval (here the
    most, 10 s): a flood after such a silence still opens an incident at once (well before the next idle
    reading), and the incident still ends when the link falls silent again."""
    require_netns()
    settings = {"dynamic": True, "floor_pps": THRESHOLD, "min_learn_seconds": 3.0, "hold_down": 1.0,
                "cooldown": 0.5}
    capture = {"quiet_interval": 0.5, "idle_after": 1.0, "idle_interval": 10.0}
    with netns_pair("fwidle") as pair, live_pipeline(pair, tmp_path, settings, capture=capture) as live:
        seen = {"last": 0, "jump": 0}

        def idle_reading() -> bool:
            """A reading that brought 5+ s of windows at once (quiet_interval readings bring 0.5 s each)."""
            n = live.harness.counters("detector").get("learnt_windows", 0)
            seen["jump"], seen["last"] = max(seen["jump"], n - seen["last"]), n
            return seen["jump"] >= 50 and n >= 100

        eventually(idle_reading, timeout=60, interval=0.05, message="an idle reading's windows learnt at once")
        assert not [m for m in live.sub.drain(0.2) if isinstance(m, IncidentOpened)]
        started = time.time()
        sender = live.send("udp_flood", 10 * THRESHOLD, 2.5)
        opened, at = live.opened(timeout=20)
        sender_report(sender)
        assert opened.attack_family == "udp_flood" and opened.target_ips == [pair.ip4_b]
        assert at - started < 8.0, f"opened {at - started:.1f} s after the flood started: it waited for a reading"
        assert live.resolved().incident_key == opened.incident_key
