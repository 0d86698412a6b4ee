"""The detector actor as a real process on real ZeroMQ sockets, fed TrafficWindows by a fake peer."""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest

from floodwatch.messages import (
    SCHEMA_VERSION,
    AnalysisFinished,
    ConfigReceived,
    ExporterTraffic,
    IncidentEnriched,
    IncidentOpened,
    IncidentResolved,
    IncidentUpdated,
    QuietWindows,
    StreamEnded,
    TrafficWindow,
)
from tests.detect.detect_factory import window
from tests.helpers import BusHarness, base_config, eventually, start_actor, stop_process, write_config

pytestmark = pytest.mark.slow
T0 = 1_700_438_400.0  # a Monday 00:00 UTC


@contextmanager
def detector(tmp_path: Path, harness: BusHarness, **settings: Any) -> Iterator[subprocess.Popen[bytes]]:
    cfg = base_config(tmp_path, harness.endpoints, detector=settings)
    path = write_config(tmp_path / "detector.toml", cfg)
    harness.ready.discard("detector")  # a restarted actor must say ready again
    harness.heartbeats.pop("detector", None)
    proc = start_actor("detector", path, tmp_path / "detector.log")
    try:
        harness.wait_ready("detector")
        harness.wait_subscribed(TrafficWindow.TOPIC)
        yield proc
    finally:
        stop_process(proc)


def publish_run(harness: BusHarness, start: float, seconds: float, **kw: Any) -> float:
    for i in range(round(seconds * 10)):
        harness.publish(window(start + i * 0.1, **kw))
    return start + seconds


def test_detect_actor_lifecycle_on_the_bus(tmp_path: Path, harness: BusHarness) -> None:
    sub = harness.subscriber(IncidentOpened, IncidentUpdated, IncidentResolved, AnalysisFinished)
    with closing(sub), detector(tmp_path, harness, pps_threshold=10_000, dynamic=False, hold_down=1.0) as proc:
        t = publish_run(harness, T0, 1, pps=1_000)
        t = publish_run(harness, t, 3, pps=80_000, proto="udp", sport=123,
                        signatures={"ntp_monlist": 80_000})
        opened = sub.get(IncidentOpened)
        assert opened.attack_family == "udp_flood" and opened.attack_subtype == "ntp_amplification"
        assert opened.started_at == pytest.approx(T0 + 1)
        update = sub.get(IncidentUpdated)
        assert update.incident_key == opened.incident_key and update.seq == 1
        # the recorder's findings are merged and re-published
        harness.publish(IncidentEnriched(incident_key=opened.incident_key, attack_subtype="",
                                         ioc_matches=[{"name": "monlist-botnet", "count": 9}],
                                         findings={}, findings_path=""))
        enriched = eventually(lambda: next((m for m in sub.drain(0.2) if isinstance(m, IncidentUpdated)
                                            and m.ioc_matches), None), 10)
        assert enriched.botnet_detected and {"name": "monlist-botnet", "count": 9} in enriched.ioc_matches
        harness.publish(StreamEnded(source="test", packets=123, ts=t + 0.05))
        resolved = sub.get(IncidentResolved)
        assert resolved.incident_key == opened.incident_key and resolved.ended_at == pytest.approx(t + 0.05)
        done = sub.get(AnalysisFinished)
        assert done.incidents == 1 and done.packets == 123
        counters = eventually(lambda: harness.counters("detector").get("windows", 0) >= 40 and
                              harness.counters("detector"), 10)
        assert counters["incidents"] == 1
        assert proc.poll() is None


def test_exporters_seen_after_the_incident_opened_are_sent_as_an_update(tmp_path: Path, harness: BusHarness) -> None:
    """Network mode: the collector's exporter pairs can reach the detector after the incident opened; the
    incident is then updated with the routers that saw its victim, not left without them."""
    sub = harness.subscriber(IncidentOpened, IncidentUpdated)
    with closing(sub), detector(tmp_path, harness, pps_threshold=10_000, dynamic=False, update_interval=3600.0):
        harness.wait_subscribed(ExporterTraffic.TOPIC)
        t = publish_run(harness, T0, 3, pps=80_000, proto="udp", sport=123, victim="203.0.113.10")
        opened = sub.get(IncidentOpened)
        assert opened.exporters == [] and "203.0.113.10" in opened.target_ips
        harness.publish(ExporterTraffic(ts=t, pairs=[["192.0.2.1", "203.0.113.10", 90_000],
                                                     ["192.0.2.9", "198.51.100.1", 5]]))  # another victim
        update = sub.get(IncidentUpdated)
        assert update.incident_key == opened.incident_key and update.exporters == ["192.0.2.1"]
        assert update.seq == opened.seq + 1
        # the same pairs again name nobody new: no further update; a second router does
        harness.publish(ExporterTraffic(ts=t + 0.1, pairs=[["192.0.2.1", "203.0.113.10", 1000]]))
        harness.publish(ExporterTraffic(ts=t + 0.2, pairs=[["192.0.2.2", "203.0.113.10", 1000]]))
        update = sub.get(IncidentUpdated)
        assert update.exporters == ["192.0.2.1", "192.0.2.2"] and update.seq == opened.seq + 2


def test_detect_actor_takes_the_api_threshold(tmp_path: Path, harness: BusHarness) -> None:
    sub = harness.subscriber(IncidentOpened)
    with closing(sub), detector(tmp_path, harness, pps_threshold=100_000, dynamic=False):
        harness.publish(ConfigReceived(fetched_at=T0, node_id=1, pps_threshold=5_000, bps_threshold=None,
                                       baseline={}, ioc_patterns=[]))
        publish_run(harness, T0, 3, pps=40_000, proto="tcp", flags="SYN")
        opened = sub.get(IncidentOpened)
        assert opened.extra["threshold_pps"] == 5_000 and opened.extra["threshold_source"].startswith("api")


def test_detect_actor_baseline_persists_across_restart(tmp_path: Path, harness: BusHarness) -> None:
    settings = {"floor_pps": 3_000, "min_learn_seconds": 5.0, "baseline_save_interval": 0.5}
    baseline = tmp_path / "state" / "detector" / "baseline.json"
    with detector(tmp_path, harness, **settings):
        publish_run(harness, T0, 8, pps=2_000)
        eventually(lambda: harness.counters("detector").get("learnt_windows", 0) >= 80, 15)
        eventually(baseline.exists, 10)
    assert stat.S_IMODE(baseline.stat().st_mode) == 0o600
    saved = json.loads(baseline.read_text())
    assert saved["buckets"]["all"]["pps"]["weight"] == pytest.approx(8.0, abs=0.2)
    # a new process: an 18 kpps flood is 6x the floor, but only ~2x what it learnt before the restart
    sub = harness.subscriber(IncidentOpened)
    with closing(sub), detector(tmp_path, harness, **settings):
        publish_run(harness, T0 + 10, 3, pps=18_000, proto="tcp", flags="SYN")
        opened = sub.get(IncidentOpened)
        assert opened.extra["threshold_source"].startswith("dynamic:")
        assert opened.extra["threshold_pps"] >= 7_000
        assert opened.updated_at - opened.started_at >= 1.2  # moderate: confirmed over the sustain period


def test_detect_actor_steps_every_window_of_a_quiet_run(tmp_path: Path, harness: BusHarness) -> None:
    """A silent link's windows come as one QuietWindows a second: the baseline learns each of them as a
    zero, an open flood's incident ends on them, and a bad run is counted and dropped."""
    settings = {"floor_pps": 3_000, "min_learn_seconds": 2.0, "hold_down": 1.0, "cooldown": 0.5}
    sub = harness.subscriber(IncidentOpened, IncidentResolved)
    with closing(sub), detector(tmp_path, harness, **settings) as proc:
        harness.wait_subscribed(QuietWindows.TOPIC)
        for second in range(3):  # 3 s of silence: 30 windows learnt, in three messages
            harness.publish(QuietWindows(first=window(T0 + second), count=10))
        eventually(lambda: harness.counters("detector").get("learnt_windows", 0) == 30, 10,
                   message="every window of the quiet runs learnt")
        t = publish_run(harness, T0 + 3, 2, pps=60_000, proto="udp", sport=123)
        opened = sub.get(IncidentOpened)
        assert opened.started_at == pytest.approx(T0 + 3)
        for second in range(3):  # quiet again: the incident ends at the first silent window
            harness.publish(QuietWindows(first=window(t + second), count=10))
        resolved = sub.get(IncidentResolved)
        assert resolved.incident_key == opened.incident_key and t <= (resolved.ended_at or 0) <= t + 1
        eventually(lambda: harness.counters("detector").get("windows") == 30 + 20 + 30, 10)
        bad = msgpack.packb([SCHEMA_VERSION, QuietWindows.TOPIC, {"first": {"t_start": t}, "count": 10}])
        harness.publish_raw([QuietWindows.TOPIC.encode(), bad])  # a window without its fields
        eventually(lambda: harness.counters("detector").get("bad_messages", 0) >= 1, 10)
        assert proc.poll() is None


def test_detect_actor_survives_bad_messages_and_a_corrupt_baseline(tmp_path: Path, harness: BusHarness) -> None:
    baseline = tmp_path / "state" / "detector" / "baseline.json"
    baseline.parent.mkdir(parents=True)
    baseline.write_text("{corrupt")
    with detector(tmp_path, harness, pps_threshold=10_000) as proc:
        harness.publish_raw([TrafficWindow.TOPIC.encode(), b"\x93\x01garbage"])
        eventually(lambda: harness.counters("detector").get("bad_messages", 0) >= 1, 10)
        assert harness.counters("detector").get("baseline_errors") == 1
        assert proc.poll() is None
