"""tls_handshake_flood (floodwatch/detect/tls.py): ClientHellos/s over a learnt baseline with a floor."""

from __future__ import annotations

from dataclasses import replace

from floodwatch.detect.tls import TlsDetector
from floodwatch.messages import IncidentEvent, IncidentOpened, IncidentResolved, TrafficWindow
from floodwatch.settings.detector import DetectorSettings
from tests.detect.detect_factory import window

T0 = 1_800_000_000.0


def tls_window(t: float, hellos_per_s: float, src: str = "198.18.0.7") -> TrafficWindow:
    n = int(hellos_per_s * 0.1)
    return replace(window(t, 50.0, proto="tcp", flags="PSH-ACK", dport=443), tls_hellos=n,
                   top_tls_src=[[src, n]] if n else [])


def feed(det: TlsDetector, t: float, seconds: float, hellos_per_s: float, src: str = "198.18.0.7"
         ) -> tuple[float, list[IncidentEvent]]:
    out: list[IncidentEvent] = []
    for i in range(round(seconds * 10)):
        out += det.step(tls_window(t + i * 0.1, hellos_per_s, src))
    return t + seconds, out


def test_detect_tls_flood_opens_fast_names_the_source_and_resolves() -> None:
    det = TlsDetector(DetectorSettings(min_learn_seconds=30), (443, 8443))
    t, out = feed(det, T0, 60, 20)  # a quiet minute: 20 new TLS connections/s, learnt
    assert out == [] and det.baseline.thresholds(t).source.startswith("dynamic")
    t, out = feed(det, t, 3, 3000)  # 10x the 300/s floor
    opened = [e for e in out if isinstance(e, IncidentOpened)]
    assert len(opened) == 1
    inc = opened[0]
    assert (inc.attack_family, inc.attack_subtype) == ("http_flood", "tls_handshake_flood")
    assert inc.top_src_ips[0]["ip"] == "198.18.0.7" and inc.peak_pps >= 1500
    assert "iptables -I INPUT -s 198.18.0.7 -j DROP" in inc.extra["mitigation"]
    assert any("--dport 8443 --syn -m hashlimit" in m for m in inc.extra["mitigation"])
    assert opened[0].started_at - T0 == 60  # the run's first window
    t, out = feed(det, t, 8, 20)
    assert [type(e) for e in out][-1] is IncidentResolved and det.incident is None


def test_detect_tls_bursts_and_a_learnt_busy_site_open_nothing() -> None:
    det = TlsDetector(DetectorSettings(min_learn_seconds=30), (443,))
    t, out = feed(det, T0, 0.8, 600)  # 2x the floor for under sustain_seconds (1.2 s): a burst
    t, out2 = feed(det, t, 3, 20)
    assert out + out2 == [] and det.counters["tls_bursts_ignored"] == 1
    t, out = feed(det, t, 2, 600)  # held over the floor: opens by the sustain rule
    assert [e.attack_subtype for e in out if isinstance(e, IncidentOpened)] == ["tls_handshake_flood"]

    busy = TlsDetector(DetectorSettings(min_learn_seconds=30), (443,))
    t, _ = feed(busy, T0, 60, 250)  # a site with 250 new connections/s every second: learnt
    assert busy.baseline.thresholds(t).pps >= 750
    t, out = feed(busy, t, 3, 600)  # over the floor, but ordinary here
    assert out == []
    t, out = feed(busy, t + 30, 3, 6000)
    assert len([e for e in out if isinstance(e, IncidentOpened)]) == 1
