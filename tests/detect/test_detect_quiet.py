"""A run of quiet windows (`traffic.quiet`) stepped in bulk (Detector.step_quiet, TlsDetector.step_quiet)
gives what stepping each window gives: the same events, counters, learnt baseline and state, through
learning, a flood and its end on silence, a TLS flood and its end, cooldowns, and an hour's boundary."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from floodwatch.detect.evaluate import Detector, quiet
from floodwatch.detect.tls import TlsDetector
from floodwatch.messages import IncidentEvent, QuietWindows, TrafficWindow
from floodwatch.settings.detector import DetectorSettings
from tests.detect.detect_factory import window

T0 = 1_800_003_000.0  # ten minutes before an hour's boundary: the runs cross it
S = DetectorSettings(min_learn_seconds=20, floor_pps=2000, hold_down=3.0, cooldown=4.0, tls_floor=50)


def silent(t: float, count: int) -> list[TrafficWindow]:
    first = replace(window(t, 0.0, sources=0), victims=[], top_dst_ips=[], top_src_ips=[], sampled=0)
    assert quiet(first)
    return QuietWindows(first=first, count=count).windows()


def busy(t: float, seconds: float, pps: float, hellos: int = 0) -> list[TrafficWindow]:
    return [replace(window(t + i / 10, pps, proto="tcp", flags="PSH-ACK", dport=443), tls_hellos=hellos)
            for i in range(round(seconds * 10))]


def script() -> list[tuple[str, list[TrafficWindow]]]:
    """Traffic to learn, silences, a flood that a silence ends, a TLS flood that a silence ends."""
    t, out = round(T0 * 10) / 10, []
    for kind, seconds, pps, hellos in [("busy", 30, 300, 1), ("quiet", 12, 0, 0), ("busy", 3, 50_000, 0),
                                       ("quiet", 9, 0, 0), ("quiet", 5, 0, 0), ("busy", 2, 300, 30),
                                       ("quiet", 1, 0, 0), ("busy", 4, 300, 0), ("quiet", 30, 0, 0),
                                       ("quiet", 600, 0, 0), ("busy", 1, 300, 0), ("quiet", 50, 0, 0)]:
        ws = silent(t, round(seconds * 10)) if kind == "quiet" else busy(t, seconds, pps, hellos)
        out.append((kind, ws))
        t = round((t + seconds) * 10) / 10
    return out


def brief(x: Any) -> Any:
    """An open incident or run by its plain fields (their evidence objects compare by identity), without
    its random key."""
    return None if x is None else {k: v for k, v in vars(x).items()
                                   if isinstance(v, int | float | str | None) and k != "key"}


def plain(events: list[IncidentEvent]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.to_dict().items() if k != "incident_key"} | {"topic": e.TOPIC} for e in events]


def state(det: Detector, tls: TlsDetector) -> dict[str, Any]:
    return {"counters": dict(det.counters), "baseline": det.baseline.to_json(), "last_end": det.last_end,
            "incident": brief(det.incident), "run": brief(det.run), "cooldown": det.cooldown_until,
            "quiet_since": det.quiet_since, "tls_baseline": tls.baseline.to_json(), "tls_recent": list(tls.recent),
            "tls_counters": tls.counters, "tls_incident": brief(tls.incident), "tls_run": brief(tls.run)}


def test_quiet_runs_stepped_in_bulk_are_what_stepping_each_window_gives() -> None:
    one, one_tls = Detector(S), TlsDetector(S, (443,))
    bulk, bulk_tls = Detector(S), TlsDetector(S, (443,))
    events: dict[str, list[IncidentEvent]] = {"one": [], "one_tls": [], "bulk": [], "bulk_tls": []}
    for kind, ws in script():
        for w in ws:
            events["one"] += one.step(w)
            events["one_tls"] += one_tls.step(w)
        if kind == "quiet":
            events["bulk"] += bulk.step_quiet(ws)
            events["bulk_tls"] += bulk_tls.step_quiet(ws)
        else:
            for w in ws:
                events["bulk"] += bulk.step(w)
                events["bulk_tls"] += bulk_tls.step(w)
        assert state(bulk, bulk_tls) == state(one, one_tls)
    # the script exercises what it says: learnt thresholds, both floods opened and ended on silence
    for name in ("one", "one_tls"):
        assert events[name][0].TOPIC == "incident.opened" and events[name][-1].status == "resolved"
    assert one.baseline.thresholds(T0 + 700).source.startswith("dynamic")
    assert plain(events["bulk"]) == plain(events["one"]) and plain(events["bulk_tls"]) == plain(events["one_tls"])
