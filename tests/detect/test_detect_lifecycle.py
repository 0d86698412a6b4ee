"""The detector's state machine on hand-made windows: speed, restraint, hysteresis, updates, end of stream."""

from __future__ import annotations

import itertools
from dataclasses import replace

from floodwatch.detect.evaluate import Detector
from floodwatch.messages import IncidentEvent, IncidentOpened, IncidentResolved, IncidentUpdated, TrafficWindow
from floodwatch.settings.detector import DetectorSettings
from tests.detect.detect_factory import window

T0 = 1_700_000_000.0
THRESHOLD = 10_000
STATIC = DetectorSettings(pps_threshold=THRESHOLD, bps_threshold=10**12, dynamic=False, hold_down=2.0,
                          cooldown=1.0)


def feed(d: Detector, start: float, seconds: float, **kw: object) -> list[IncidentEvent]:
    """Feed `seconds` of 100 ms windows starting at `start`; all events."""
    out: list[IncidentEvent] = []
    for i in range(round(seconds * 10)):
        out += d.step(window(start + i * 0.1, **kw))  # type: ignore[arg-type]
    return out


def opened(events: list[IncidentEvent]) -> list[IncidentEvent]:
    return [e for e in events if isinstance(e, IncidentOpened)]


def test_detect_flood_far_above_threshold_opens_within_two_windows() -> None:
    d = Detector(STATIC)
    feed(d, T0, 2, pps=1000)
    events = []
    for i in range(5):
        events += d.step(window(T0 + 2 + i * 0.1, pps=8 * THRESHOLD, proto="tcp", flags="SYN"))
        if events:
            break
    assert len(events) == 1 and isinstance(events[0], IncidentOpened)
    ev = events[0]
    assert ev.updated_at - ev.started_at <= 0.2 + 1e-9
    assert ev.attack_family == "syn_flood" and ev.status == "active" and ev.seq == 0
    assert ev.peak_pps == 8 * THRESHOLD and ev.target_ips == ["198.18.0.1"]


def test_detect_moderate_flood_confirmed_after_sustain_period() -> None:
    d = Detector(STATIC)
    events = feed(d, T0, 3, pps=2 * THRESHOLD, proto="udp", sport=40000)
    first = opened(events)
    assert len(first) == 1
    delay = first[0].updated_at - first[0].started_at
    assert STATIC.sustain_seconds <= delay <= 1.5
    assert first[0].attack_family == "udp_flood" and first[0].attack_subtype == "udp_flood"


def test_detect_one_second_micro_burst_never_opens() -> None:
    d = Detector(STATIC)
    events = feed(d, T0, 2, pps=1000)
    for k in range(3):  # three bursts of 1 s at 3x, 4 s apart
        events += feed(d, T0 + 2 + 5 * k, 1.0, pps=3 * THRESHOLD)
        events += feed(d, T0 + 3 + 5 * k, 4.0, pps=1000)
    # a 1 s burst starting mid-window touches 11 windows, half full at each end
    t = T0 + 20
    events += d.step(window(t, pps=1.5 * THRESHOLD))
    events += feed(d, t + 0.1, 0.9, pps=3 * THRESHOLD)
    events += d.step(window(t + 1.0, pps=1.5 * THRESHOLD))
    events += feed(d, t + 1.1, 3.0, pps=1000)
    assert events == []
    assert d.counters["bursts_ignored"] == 4


def test_detect_hysteresis_hold_down_and_cooldown() -> None:
    d = Detector(STATIC)
    events = feed(d, T0, 2, pps=6 * THRESHOLD)
    assert len(opened(events)) == 1
    # dips to 0.8x (above the 0.7 resolve ratio) keep it open
    events = feed(d, T0 + 2, 3, pps=0.8 * THRESHOLD)
    assert not [e for e in events if isinstance(e, IncidentResolved)]
    # quiet: resolved once hold_down (2 s) has passed, ended_at = start of the quiet
    events = feed(d, T0 + 5, 2.5, pps=100)
    resolved = [e for e in events if isinstance(e, IncidentResolved)]
    assert len(resolved) == 1
    assert resolved[0].ended_at is not None and abs(resolved[0].ended_at - (T0 + 5)) < 1e-6
    assert resolved[0].status == "resolved"
    # a flood right after resolution waits for the cooldown, then opens a new incident
    events = feed(d, T0 + 7.5, 3, pps=6 * THRESHOLD)
    again = opened(events)
    assert len(again) == 1 and again[0].incident_key != resolved[0].incident_key
    assert again[0].updated_at >= T0 + 7.1 + STATIC.cooldown - 0.11


def test_detect_updates_every_second_with_peaks_and_seq() -> None:
    d = Detector(STATIC)
    events = feed(d, T0, 1, pps=6 * THRESHOLD)
    events += feed(d, T0 + 1, 2, pps=9 * THRESHOLD)
    events += feed(d, T0 + 3, 2, pps=7 * THRESHOLD)
    updates = [e for e in events if isinstance(e, IncidentUpdated)]
    assert len(updates) >= 4
    times = [u.updated_at for u in updates]
    assert all(0.95 <= b - a <= 1.05 for a, b in itertools.pairwise(times))
    assert [e.seq for e in events] == list(range(len(events)))
    assert updates[-1].peak_pps == 9 * THRESHOLD
    assert len({e.incident_key for e in events}) == 1


def test_detect_protocol_breakdown_and_family_stay_right_through_updates() -> None:
    """A pure UDP flood stays udp_flood with udp 100% in every update, whatever the kernel counters say."""
    d = Detector(STATIC)
    events = feed(d, T0, 6, pps=20 * THRESHOLD, proto="udp", sport=40000, dport=9)
    assert events and all(e.attack_family == "udp_flood" for e in events)
    assert all(e.protocol_breakdown == {"udp": 100.0} for e in events)
    assert len([e for e in events if isinstance(e, IncidentUpdated)]) >= 5


def test_detect_family_refined_as_evidence_grows() -> None:
    """Opened as a SYN flood; when a DNS amplification joins with a big share, it becomes multi_vector."""
    d = Detector(STATIC)
    events = feed(d, T0, 1, pps=6 * THRESHOLD, proto="tcp", flags="SYN")
    assert opened(events)[0].attack_family == "syn_flood"
    mix = [dict(pps=6 * THRESHOLD, proto="tcp", flags="SYN"),
           dict(pps=12 * THRESHOLD, proto="udp", sport=53, size=1200, signatures={"dns_response": 12 * THRESHOLD})]
    events = feed(d, T0 + 1, 4, mix=mix)
    last = [e for e in events if isinstance(e, IncidentUpdated)][-1]
    assert last.attack_family == "multi_vector"
    assert set(last.attack_subtype.split("+")) == {"syn_flood", "dns_amplification"}
    assert {v["subtype"] for v in last.vectors} >= {"syn_flood", "dns_amplification"}


def test_detect_bulk_transfer_both_ways_is_exempt() -> None:
    """A download at 30x the threshold over one established connection opens nothing."""
    d = Detector(STATIC)
    events = feed(d, T0, 10, pps=30 * THRESHOLD, proto="tcp", flags="ACK", size=1500, sources=1,
                  bidir=30 * THRESHOLD, out_pps=15 * THRESHOLD)
    assert events == []
    assert d.counters["exempt_packets"] > 0


def test_detect_ack_flood_answered_by_resets_is_not_exempt() -> None:
    """Small ACKs in, small RSTs out: not transfer-shaped, so the exemption does not hide the flood."""
    d = Detector(STATIC)
    events = feed(d, T0, 3, pps=8 * THRESHOLD, proto="tcp", flags="ACK", size=60, sources=5000,
                  bidir=8 * THRESHOLD, out_pps=8 * THRESHOLD, out_size=54)
    first = opened(events)
    assert first and first[0].attack_subtype == "ack_flood"


def test_detect_syn_flood_answered_by_synacks_is_not_exempt() -> None:
    d = Detector(STATIC)
    events = feed(d, T0, 1, pps=8 * THRESHOLD, proto="tcp", flags="SYN", size=1500, bidir=8 * THRESHOLD,
                  out_pps=8 * THRESHOLD, out_size=3000)
    assert opened(events) and opened(events)[0].attack_family == "syn_flood"


def test_detect_victim_threshold_sees_one_address_of_many() -> None:
    """The host total is under its threshold, but one address gets more than its own threshold."""
    s = replace(STATIC, pps_threshold=100_000, victim_pps_threshold=THRESHOLD)
    d = Detector(s)
    mix = [dict(pps=5_000, proto="tcp", flags="ACK", victim=f"198.18.{i}.1", sources=50) for i in range(12)]
    mix += [dict(pps=4 * THRESHOLD, proto="udp", sport=123, victim="198.18.0.9")]
    events = feed(d, T0, 2, mix=mix)
    first = opened(events)
    assert first and first[0].extra["trigger"] == "victim 198.18.0.9"
    # named from that victim's own packets: the busy web traffic to the others is not part of it
    assert first[0].target_ips == ["198.18.0.9"]
    assert (first[0].attack_family, first[0].attack_subtype) == ("udp_flood", "ntp_amplification")
    assert first[0].protocol_breakdown == {"udp": 100.0}


def test_detect_carpet_bombing_over_a_prefix() -> None:
    s = replace(STATIC, pps_threshold=1_000_000, victim_pps_threshold=THRESHOLD)
    d = Detector(s)
    mix = [dict(pps=0.2 * THRESHOLD, proto="udp", sport=53, victim=f"198.18.7.{i}", sources=300)
           for i in range(1, 11)]
    events = feed(d, T0, 2, mix=mix)
    first = opened(events)
    assert first, "a spread of 10 x 0.2x per address is 2x over the /24"
    assert first[0].extra["trigger"] == "prefix 198.18.7.0/24"
    assert first[0].target_ips == ["198.18.7.0/24"] and first[0].extra["carpet_bombing"] is True


def test_detect_stream_end_resolves_at_last_packet_time() -> None:
    d = Detector(STATIC)
    feed(d, T0, 2, pps=6 * THRESHOLD)
    events = d.finish(T0 + 2.05)
    assert len(events) == 1 and isinstance(events[0], IncidentResolved)
    assert events[0].ended_at == T0 + 2.05


def test_detect_stream_end_opens_a_short_flood_far_above_threshold() -> None:
    d = Detector(replace(STATIC, fast_windows=2))
    assert d.step(window(T0, pps=50 * THRESHOLD)) == []
    events = d.finish(T0 + 0.05)
    assert [type(e) for e in events] == [IncidentOpened, IncidentResolved]


def test_detect_enrichment_merges_findings_also_after_resolution() -> None:
    d = Detector(STATIC)
    events = feed(d, T0, 2, pps=6 * THRESHOLD, proto="udp", sport=123)
    key = opened(events)[0].incident_key
    d.finish(T0 + 2)
    ev = d.enrich(key, "ntp_amplification", [{"name": "monlist", "count": 3}], "/var/lib/x/findings.json")
    assert isinstance(ev, IncidentUpdated)
    assert ev.status == "resolved" and ev.attack_subtype == "ntp_amplification"
    assert {"name": "monlist", "count": 3} in ev.ioc_matches and ev.botnet_detected
    assert d.enrich("no-such-key", "x", [], "") is None


def test_detect_every_incident_field_is_filled() -> None:
    d = Detector(STATIC)
    events = feed(d, T0, 2, pps=6 * THRESHOLD, proto="tcp", flags="SYN", ttl=242, sources=5000)
    ev = events[0]
    for name in ("attack_family", "attack_subtype", "severity", "incident_key"):
        assert getattr(ev, name)
    assert ev.severity in ("low", "medium", "high", "critical") and 0 <= ev.confidence <= 100
    assert ev.tcp_flag_breakdown["SYN"] > 0 and ev.top_src_ips and ev.top_dst_ports
    assert ev.source_ip_count >= 5000 and ev.spoofing_detected is True
    assert isinstance(ev.geo_breakdown, dict) and ev.ioc_matches == [] and ev.botnet_detected is False


def test_detect_waits_for_packets_when_counters_run_ahead() -> None:
    """Kernel counters show the flood a window before any record does: open once packets can name it."""
    d = Detector(STATIC)
    ahead = replace(window(T0, pps=50 * THRESHOLD, proto="udp", sport=123), proto_in={}, tcp_flags={},
                    top_src_ports=[], victims=[], exact=True)
    assert d.step(ahead) == []
    events = d.step(window(T0 + 0.1, pps=50 * THRESHOLD, proto="udp", sport=123))
    assert len(events) == 1 and events[0].attack_subtype == "ntp_amplification"
    assert events[0].started_at == T0 and events[0].protocol_breakdown == {"udp": 100.0}


def test_detect_flood_that_began_mid_window_opens_at_that_windows_end() -> None:
    """The fast rule reads the window's second half too: a 6x flood that began at 40 % of a window
    (3.6x over the whole window) opens at that window's end, not one window later."""
    def begun_mid_window(t: float, share_in_tail: float) -> TrafficWindow:
        w = window(t, pps=0.6 * 6 * THRESHOLD, proto="udp", sport=40000)
        tail = round(w.packets_in * share_in_tail)
        return replace(w, tail_packets_in=tail, tail_bytes_in=tail * 100,
                       records_packets_in=w.packets_in, records_bytes_in=w.bytes_in)

    d = Detector(STATIC)
    feed(d, T0, 2, pps=1000)
    first = d.step(begun_mid_window(T0 + 2, share_in_tail=5 / 6))  # 10 of 12 tenths of the flood: tail at 6x
    assert len(opened(first)) == 1 and first[0].updated_at == T0 + 2.1

    d = Detector(STATIC)  # the same packets spread evenly over the window: 3.6x, the tail too: not yet
    feed(d, T0, 2, pps=1000)
    assert d.step(begun_mid_window(T0 + 2, share_in_tail=0.5)) == []


def test_detect_a_short_spike_in_the_second_half_below_5x_does_not_open() -> None:
    d = Detector(STATIC)
    feed(d, T0, 2, pps=1000)
    w = window(T0 + 2, pps=2 * THRESHOLD, proto="udp", sport=40000)  # all of it in the last 50 ms: 4x there
    events = d.step(replace(w, tail_packets_in=w.packets_in, tail_bytes_in=w.bytes_in,
                            records_packets_in=w.packets_in, records_bytes_in=w.bytes_in))
    events += feed(d, T0 + 2.1, 2, pps=1000)
    assert events == []
