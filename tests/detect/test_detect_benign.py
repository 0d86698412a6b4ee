"""The benign set: busy but legitimate traffic opens no incident after warm-up.

Real packets (pcap files from the generator) through the real capture parser and aggregator engine.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from floodwatch.capture.pcapwrite import write_pcap
from floodwatch.detect.evaluate import Detector
from floodwatch.messages import IncidentEvent, IncidentOpened, TrafficWindow
from floodwatch.settings.detector import DetectorSettings
from floodwatch.trafficgen.benign import bulk_transfer, merge
from floodwatch.trafficgen.pcapw import paced
from floodwatch.trafficgen.vectors import VectorSpec, frames_for
from tests.detect.detect_pipeline import windows_of

T0 = 1_700_000_000.0
LOCAL = ["198.18.0.1/32", "fd00::1/128"]
STATIC = DetectorSettings(pps_threshold=5_000, dynamic=False)


def run(windows: list[TrafficWindow], settings: DetectorSettings) -> tuple[list[IncidentEvent], Detector]:
    d = Detector(settings)
    events: list[IncidentEvent] = []
    for w in windows:
        events += d.step(w)
    return events, d


def test_detect_bulk_transfer_at_full_speed_opens_nothing(tmp_path: Path) -> None:
    """Download, upload, and both at once, at 8x the packet threshold: no incident."""
    for direction, local, peer in (("down", "198.18.0.1", "198.18.0.2"), ("up", "198.18.0.1", "198.18.0.2"),
                                   ("both", "fd00::1", "fd00::2")):
        path = tmp_path / f"bulk-{direction}.pcap"
        write_pcap(path, bulk_transfer(local, peer, 40_000, 3.0, T0, direction), snaplen=96)
        windows = windows_of(path, local_nets=LOCAL)
        assert max(w.packets_in for w in windows) * 10 >= 20_000 or direction == "up"
        events, d = run(windows, STATIC)
        assert events == [], f"{direction}: {events[:1]}"
        assert d.counters["exempt_packets"] > 0


def test_detect_flood_during_a_bulk_transfer_is_still_seen(tmp_path: Path) -> None:
    path = tmp_path / "bulk-and-flood.pcap"
    flood = paced(frames_for(VectorSpec("syn_flood", variety=500)), 40_000, 60_000, T0 + 1)
    write_pcap(path, merge([bulk_transfer("198.18.0.1", "198.18.0.2", 40_000, 3.0, T0, "down"), flood]),
               snaplen=96)
    events, _ = run(windows_of(path, local_nets=LOCAL), STATIC)
    opened = [e for e in events if isinstance(e, IncidentOpened)]
    assert len(opened) == 1 and opened[0].attack_family == "syn_flood"


def test_detect_web_dns_mix_and_micro_burst_after_warm_up_open_nothing(tmp_path: Path) -> None:
    """Dynamic thresholds: learn a normal web + DNS mix, then the same mix with a 1 s UDP burst at 3x."""
    normal = frames_for(VectorSpec("web_dns_mix", sources=300, variety=3000))
    path = tmp_path / "mix.pcap"
    burst = paced(frames_for(VectorSpec("udp_flood", variety=500)), 30_000, 30_000, T0 + 40.35)
    write_pcap(path, merge([paced(normal, 4_000, 4_000 * 60, T0), burst]), snaplen=96)
    settings = replace(DetectorSettings(), floor_pps=6_000, min_learn_seconds=20.0)
    events, d = run(windows_of(path, local_nets=LOCAL), settings)
    thr = d.thresholds(T0 + 60)
    assert thr.source.startswith("dynamic:") and thr.pps < 30_000  # the burst is above the learnt threshold
    assert events == []
    assert d.counters["bursts_ignored"] >= 1
