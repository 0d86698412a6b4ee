"""Dynamic baselines: they learn, persist across a restart, pick hour profiles, and never learn attacks."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from floodwatch.detect.baseline import Baseline, BaselineError
from floodwatch.detect.evaluate import Detector
from floodwatch.messages import IncidentOpened
from floodwatch.settings.detector import DetectorSettings
from tests.detect.detect_factory import window

MONDAY = 1_700_438_400.0  # 2023-11-20 00:00 UTC, a Monday
LEARN = DetectorSettings(floor_pps=3_000, floor_bps=10**9, min_learn_seconds=20.0, hold_down=1.0, cooldown=1.0)


def learn_quiet(d: Detector, start: float, seconds: float, pps: float = 2_000) -> float:
    for i in range(round(seconds * 10)):
        d.step(window(start + i * 0.1, pps=pps + (i % 7) * 50, size=200))
    return start + seconds


def test_detect_baseline_learns_from_quiet_traffic() -> None:
    d = Detector(LEARN)
    assert d.thresholds(MONDAY).source == "floor"
    learn_quiet(d, MONDAY, 30)
    thr = d.thresholds(MONDAY + 30)
    assert thr.source.startswith("dynamic:")
    # p99 of ~2,000-2,300 pps times 3, or 4x the mean: well above normal, well below a flood
    assert 6_000 <= thr.pps <= 12_000


def test_detect_baseline_does_not_learn_from_attacks_or_bursts() -> None:
    d = Detector(LEARN)
    t = learn_quiet(d, MONDAY, 30)
    before = d.thresholds(t)
    learnt = d.counters["learnt_windows"]
    events = []
    for i in range(100):  # a 10 s flood at 20x
        events += d.step(window(t + i * 0.1, pps=20 * before.pps))
    t += 10
    for i in range(12):  # its hold-down and cooldown
        events += d.step(window(t + i * 0.1, pps=100))
    assert any(isinstance(e, IncidentOpened) for e in events)
    assert d.counters["learnt_windows"] == learnt
    # a 1 s micro-burst being confirmed is not learnt either
    t += 5
    d.step(window(t, pps=100))
    learnt = d.counters["learnt_windows"]
    for i in range(10):
        d.step(window(t + 0.1 + i * 0.1, pps=2 * before.pps))
    assert d.counters["learnt_windows"] == learnt
    assert d.thresholds(t).pps == pytest.approx(before.pps, rel=0.05)


def test_detect_baseline_persists_across_restart(tmp_path: Path) -> None:
    d = Detector(LEARN)
    t = learn_quiet(d, MONDAY, 30)
    path = tmp_path / "state" / "detector" / "baseline.json"
    d.baseline.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = Detector(LEARN)
    assert again.baseline.load(path) is True
    assert again.thresholds(t) == d.thresholds(t)


def test_detect_baseline_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    assert Baseline().load(path) is False
    path.write_text("{not json")
    with pytest.raises(BaselineError, match="not JSON"):
        Baseline().load(path)
    path.write_text(json.dumps({"version": 99}))
    with pytest.raises(BaselineError, match="version"):
        Baseline().load(path)


def test_detect_baseline_hour_of_day_until_a_week_then_hour_of_week() -> None:
    b = Baseline(floor_pps=1, floor_bps=1, min_learn_seconds=100)
    # Monday 10:00 and Tuesday 10:00: busy (50k); other hours quiet (1k)
    for day in range(2):
        for hour in range(24):
            pps = 50_000 if hour == 10 and day == 0 else 1_000
            b.learn(MONDAY + day * 86400 + hour * 3600, pps, pps * 800, 600)
    tuesday_10 = MONDAY + 86400 + 10 * 3600
    assert b.thresholds(tuesday_10).source == "dynamic:hod:10"  # not a week yet: hour of day
    assert b.thresholds(tuesday_10).pps > 50_000  # Monday's busy hour shapes Tuesday 10:00
    for day in range(2, 8):
        for hour in range(24):
            b.learn(MONDAY + day * 86400 + hour * 3600, 1_000, 800_000, 600)
    assert b.thresholds(MONDAY + 7 * 86400 + 10 * 3600).source == "dynamic:how:10"  # Monday 10:00 again
    assert b.thresholds(MONDAY + 8 * 86400 + 10 * 3600).pps < 10_000  # Tuesday 10:00: quiet in its profile


def test_detect_static_and_api_thresholds_win_over_the_baseline() -> None:
    d = Detector(DetectorSettings(pps_threshold=5_000))
    assert d.thresholds(MONDAY).pps == 5_000 and d.thresholds(MONDAY).source.startswith("static")
    d.set_api_config(7_000, None, {"p99_pps": 12_000, "mean_pps": 3_400})
    assert d.thresholds(MONDAY).pps == 7_000 and d.thresholds(MONDAY).source.startswith("api")
    d2 = Detector(DetectorSettings(floor_pps=100))
    d2.set_api_config(None, None, {"p99_pps": 12_000, "mean_pps": 3_400, "p99_bps": "junk"})
    thr = d2.thresholds(MONDAY)
    assert thr.source == "api" and thr.pps == 36_000


def test_detect_config_section_refuses_bad_values() -> None:
    from floodwatch.config import config_from_dict
    from floodwatch.errors import ConfigError

    assert config_from_dict({"detector": {"pps_threshold": 50_000}}).detector.pps_threshold == 50_000
    for bad, key in (({"resolve_ratio": 2.0}, "resolve_ratio"), ({"baseline_file": "/etc/x"}, "baseline_file"),
                     ({"pps_threshold": -1}, "pps_threshold"), ({"fast_windows": 0}, "fast_windows")):
        with pytest.raises(ConfigError, match=f"detector.{key}"):
            config_from_dict({"detector": bad}, "test.toml")
