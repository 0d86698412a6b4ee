"""Classification from real packets: the shared attack captures and every generated vector (IPv4 and IPv6).

Windows come from the real capture parser and the real aggregator engine (tests/detect/detect_pipeline.py);
the detector logic opens and names the incident.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from floodwatch.capture.pcapwrite import write_pcap
from floodwatch.detect.classify import classify_capture, flag_set, tcp_vector_of_label
from floodwatch.detect.evaluate import Detector
from floodwatch.messages import IncidentEvent, IncidentOpened, TrafficWindow
from floodwatch.settings.detector import DetectorSettings
from floodwatch.trafficgen.pcapw import paced
from floodwatch.trafficgen.vectors import REFLECTION, TCP_VECTORS, VectorSpec, frames_for
from tests.detect.detect_pipeline import SHARED_PCAPS, windows_of

needs_pcaps = pytest.mark.skipif(not SHARED_PCAPS.is_dir(), reason=f"shared captures not found at {SHARED_PCAPS}")


def run_detector(windows: list[TrafficWindow], threshold: int) -> list[IncidentEvent]:
    d = Detector(DetectorSettings(pps_threshold=threshold, dynamic=False))
    events: list[IncidentEvent] = []
    for w in windows:
        events += d.step(w)
    return events + d.finish(windows[-1].t_end)


@needs_pcaps
@pytest.mark.parametrize(("name", "family", "subtype"), [
    ("pkt.TCP.synflood.spoofed.pcap", "syn_flood", "syn_flood"),
    ("amp.UDP.snmp.src161.pcapng", "udp_flood", "snmp_amplification"),
    ("amp.dns.RRSIG.fragmented.pcap", "dns_flood", "dns_amplification"),
    ("amp.TCP.reflection.SYNACK.pcap", "tcp_flood", "synack_reflection"),
])
def test_detect_shared_captures_classified(name: str, family: str, subtype: str) -> None:
    windows = windows_of(SHARED_PCAPS / name)
    c = classify_capture(windows)
    assert (c["attack_family"], c["attack_subtype"]) == (family, subtype)
    assert c["target_ips"] == ["10.10.10.10"]
    assert c["status"] == "resolved" and c["started_at"] <= c["ended_at"]
    if name.startswith("pkt.TCP.synflood"):
        assert c["spoofing_detected"] is True
        assert c["source_ip_count"] > 30_000  # ~37,600 distinct sources in the file
        assert c["protocol_breakdown"] == {"tcp": 100.0}
    else:
        assert c["spoofing_detected"] is False  # real reflectors at real distances
    if "dns" in name:
        assert c["extra"]["fragmented"] is True
    if "snmp" in name:
        assert next(v for v in c["vectors"] if v["subtype"] == "snmp_amplification")["confirmed"]


@needs_pcaps
@pytest.mark.parametrize(("name", "threshold", "subtype"), [
    ("pkt.TCP.synflood.spoofed.pcap", 2_000, "syn_flood"),
    ("amp.UDP.snmp.src161.pcapng", 5_000, "snmp_amplification"),
    ("amp.dns.RRSIG.fragmented.pcap", 20, "dns_amplification"),
    ("amp.TCP.reflection.SYNACK.pcap", 5_000, "synack_reflection"),
])
def test_detect_shared_captures_open_incidents_with_thresholds(name: str, threshold: int, subtype: str) -> None:
    events = run_detector(windows_of(SHARED_PCAPS / name), threshold)
    first = [e for e in events if isinstance(e, IncidentOpened)]
    assert first, f"no incident at {threshold} pps"
    assert subtype in events[-1].attack_subtype
    assert events[-1].status == "resolved"


GENERATED = [*(f"{n}_amplification" for n in REFLECTION), *TCP_VECTORS, "udp_flood", "icmp_flood",
             "fragment_flood", "dns_query_flood", "http_flood", "multi_vector"]
EXPECTED_FAMILY = {"dns_amplification": "dns_flood", "dns_query_flood": "dns_flood", "syn_flood": "syn_flood",
                   "syn_ece_flood": "syn_flood", "icmp_flood": "icmp_flood", "http_flood": "http_flood",
                   "fragment_flood": "fragment_flood", "multi_vector": "multi_vector", "udp_flood": "udp_flood"}
NAMED_AS = {"http_flood": "http_request_flood", "multi_vector": "syn_flood+dns_amplification"}  # else the vector
SPOOFED = {*TCP_VECTORS} - {"synack_reflection"} | {"udp_flood", "icmp_flood", "fragment_flood", "multi_vector"}


def named(subtype: str) -> str:
    """A subtype with its parts in a fixed order: a mix of near-equal shares (multi_vector: SYN and DNS
    half each) is named in the order of its shares, which sampling may swap; the vectors are the verdict."""
    return "+".join(sorted(subtype.split("+")))


def family_of(vector: str) -> str:
    if vector in EXPECTED_FAMILY:
        return EXPECTED_FAMILY[vector]
    return "udp_flood" if vector.endswith("_amplification") else "tcp_flood"


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_detect_every_generated_vector_detected_and_named(tmp_path: Path, v6: bool) -> None:
    wrong: list[tuple[str, object]] = []
    for vector in GENERATED:
        path = tmp_path / f"{vector}.pcap"
        write_pcap(path, paced(frames_for(VectorSpec(vector, v6, variety=600, sources=600)), 10_000, 4_000,
                               1_700_000_000.0))
        events = run_detector(windows_of(path), 1_000)
        opened = [e for e in events if isinstance(e, IncidentOpened)]
        if len(opened) != 1:
            wrong.append((vector, f"{len(opened)} incidents"))
            continue
        last = events[-1]
        want_sub = NAMED_AS.get(vector, vector)
        got = (last.attack_family, last.attack_subtype)
        if got != (family_of(vector), want_sub) or opened[0].attack_subtype != want_sub:
            wrong.append((vector, got))
        if last.spoofing_detected != (vector in SPOOFED):
            wrong.append((vector, f"spoofing_detected={last.spoofing_detected}"))
    assert wrong == []


def test_detect_flag_labels() -> None:
    assert tcp_vector_of_label("XMAS") == ("tcp_flood", "xmas_flood")
    assert tcp_vector_of_label("NULL") == ("tcp_flood", "null_flood")
    assert tcp_vector_of_label("SYN-ECE") == ("syn_flood", "syn_ece_flood")
    assert tcp_vector_of_label("RST-ACK") == ("tcp_flood", "rst_flood")
    assert tcp_vector_of_label("OTHER") == ("tcp_flood", "tcp_flood")
    assert flag_set("syn|ack") == {"SYN", "ACK"}
