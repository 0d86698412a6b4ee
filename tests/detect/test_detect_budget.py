"""The shipped `[capture] budget_pps` keeps every verdict: each generated vector, as a flood the kernel
samples at that budget (the records 1 in N from the first packet on, the counters exact), is named as
it is unsampled, and the windows' packet counts are the file's exactly.

The packets go through the real capture parser and aggregator engine (tests/detect/detect_pipeline.py)
and the detector's pure logic. The live suites (test_detect_live.py, test_detect_truth_live.py) run
with the same shipped default; benchmarks/budget_accuracy.py measures the breakdowns and latency.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from floodwatch.aggregate.engine import Engine
from floodwatch.aggregate.hll import estimate_regs
from floodwatch.aggregate.sigsample import SignatureSampler
from floodwatch.capture.pcapwrite import write_pcap
from floodwatch.capture.sampling import UP_HEADROOM, pow2_at_least
from floodwatch.detect.evaluate import Detector
from floodwatch.detect.profile import Profile
from floodwatch.messages import IncidentEvent, IncidentOpened, TrafficWindow
from floodwatch.settings.aggregator import AggregatorSettings
from floodwatch.settings.capture import CaptureSettings
from floodwatch.settings.detector import DetectorSettings
from floodwatch.signatures import SignatureMatcher
from floodwatch.trafficgen.pcapw import paced
from floodwatch.trafficgen.vectors import VectorSpec, frames_for
from tests.detect.detect_pipeline import read_rows, sampled_windows
from tests.detect.test_detect_classify import GENERATED, NAMED_AS, family_of, named

FLOOD_PPS = 100_000
PACKETS = 60_000  # 0.6 s of flood from SOURCES sources: enough of them among the records to call it spoofed
SOURCES = 2_000
THRESHOLD = 10_000


def events_of(windows: list[TrafficWindow]) -> list[IncidentEvent]:
    d = Detector(DetectorSettings(pps_threshold=THRESHOLD, dynamic=False))
    events = [e for w in windows for e in d.step(w)]
    return events + d.finish(windows[-1].t_end)


def verdict(events: list[IncidentEvent]) -> tuple[str, str, str, bool]:
    opened = [e for e in events if isinstance(e, IncidentOpened)]
    assert len(opened) == 1, f"{len(opened)} incidents"
    last = events[-1]
    return named(opened[0].attack_subtype), last.attack_family, named(last.attack_subtype), last.spoofing_detected


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_detect_default_budget_keeps_every_vector_named(tmp_path: Path, v6: bool) -> None:
    budget = CaptureSettings().budget_pps  # the shipped default, whatever it is
    rate = pow2_at_least(FLOOD_PPS / (budget * UP_HEADROOM))  # what the controller settles on
    assert rate > 1, "the flood is above the budget: sampled"
    wrong: list[tuple[str, object, object]] = []
    for vector in GENERATED:
        path = tmp_path / f"{vector}.pcap"
        write_pcap(path, paced(frames_for(VectorSpec(vector, v6, variety=SOURCES, sources=SOURCES)), FLOOD_PPS, PACKETS,
                               1_700_000_000.0))
        rows, wires = read_rows(path)
        runs = []
        for sample in (0, rate):  # unsampled, then 1 in `rate` throughout
            engine = Engine(AggregatorSettings(), SignatureSampler(SignatureMatcher.default()))
            windows = sampled_windows(engine, rows, wires, None if sample == 0 else budget, fixed=sample)
            assert sum(w.packets_in for w in windows) == PACKETS  # pps from the counters: exact
            assert engine.stats["records"] == PACKETS if sample == 0 else engine.stats["records"] < PACKETS / 4
            runs.append(verdict(events_of(windows)))
        sub = named(NAMED_AS.get(vector, vector))
        if runs[1] != runs[0] or runs[1][:3] != (sub, family_of(vector), sub):
            wrong.append((vector, runs[0], runs[1]))
    assert wrong == []


def test_sampled_flood_counts_the_sources_of_every_packet(tmp_path: Path) -> None:
    """A spoofed SYN flood from 2,000 sources for 2.5 s at 20,000/s, sampled 1 in 64 (where the controller
    settles when the host's replies double the rate at the default budget): its ~800 records show only a
    third of the sources, yet the incident counts about 2,000 and calls them spoofed, as it does with
    every packet."""
    path = tmp_path / "syn.pcap"
    write_pcap(path, paced(frames_for(VectorSpec("syn_flood", sources=SOURCES, variety=SOURCES)), 20_000, 50_000,
                           1_700_000_000.0))
    rows, wires = read_rows(path)
    for sample in (0, 64):
        engine = Engine(AggregatorSettings(), SignatureSampler(SignatureMatcher.default()))
        windows = sampled_windows(engine, rows, wires, None if sample == 0 else 2_000, fixed=sample)
        events = events_of(windows)
        resolved = events[-1]
        assert 0.85 * SOURCES <= resolved.source_ip_count <= 1.15 * SOURCES, (sample, resolved.source_ip_count)
        assert resolved.spoofing_detected is True, (sample, resolved.extra["spoofing_reason"])
        if sample:
            profile = Profile()
            for w in windows:
                profile.add(w)
            assert profile.hll is not None and estimate_regs(profile.hll) < SOURCES / 2  # what the records show
