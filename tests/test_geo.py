"""One geo path: the lookup [aggregator] geo names is the one whose answers reach the incidents.

The aggregator looks up each window's heaviest sources (TrafficWindow.geo); the detector's profile sums
them and classification reports them as geo_breakdown (addresses of no known country left out)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from floodwatch.aggregate.engine import Engine
from floodwatch.aggregate.geo import IptoccLookup, make_lookup
from floodwatch.detect.classify import classify_profile
from floodwatch.detect.profile import profile_of
from floodwatch.messages import TrafficWindow
from floodwatch.settings.aggregator import AggregatorSettings
from tests.aggregate.agg_factory import batch, records


class Planet:
    """A country lookup of our own: proves whose answers the incident carries."""

    name = "planet"

    def countries(self, ips: Sequence[str]) -> list[str]:
        return ["MARS" if ip.startswith("8.") else "ZZ" for ip in ips]


def windows_of(engine: Engine) -> list[TrafficWindow]:
    srcs = np.array(["8.8.8.8"] * 300 + ["1.1.1.1"] * 200 + ["10.0.0.1"] * 100)
    out = []
    for w in range(3):  # three windows of 600 packets from three sources
        recs = records(600, ts=1000.0 + w * 0.1 + np.arange(600) * 1e-4, proto=17, flags=0, sport=53)
        recs["src"] = [records(1, src=str(s))["src"][0] for s in srcs]
        out += engine.feed_batch(batch(recs))
    return [m for m in out + engine.finish() if isinstance(m, TrafficWindow) and m.sampled]


def test_windows_carry_the_configured_lookup_and_incidents_report_it() -> None:
    ws = windows_of(Engine(AggregatorSettings(), geo=IptoccLookup()))
    assert len(ws) == 3 and all(w.geo == {"US": 300, "AU": 200, "ZZ": 100} for w in ws)
    assert "geo" not in ws[0].extra  # a typed field, not an extra key
    assert classify_profile(profile_of(ws))["geo_breakdown"] == {"US": 900, "AU": 600}

    mine = windows_of(Engine(AggregatorSettings(), geo=Planet()))
    assert classify_profile(profile_of(mine))["geo_breakdown"] == {"MARS": 900}


def test_geo_off_means_no_lookup_and_no_breakdown() -> None:
    assert make_lookup("off") is None
    ws = windows_of(Engine(AggregatorSettings(geo="off"), geo=make_lookup("off")))
    assert ws and all(w.geo == {} for w in ws)
    assert classify_profile(profile_of(ws))["geo_breakdown"] == {}


def test_iptocc_lookup_answers_as_iptocc_with_unknown_as_zz() -> None:
    import iptocc

    from floodwatch.aggregate import geo

    rng = np.random.default_rng(5)
    pool = [f"{a}.{b}.{c}.{d}" for a, b, c, d in rng.integers(1, 224, (3 * geo.CACHE, 4)).tolist()]
    lookup = IptoccLookup()
    for k in range(12):  # windows of 300 heaviest sources, partly the same ones again, past the bound
        ips = pool[k * 700 : k * 700 + 300] + pool[:50] + pool[:3]
        truth = [c or geo.UNKNOWN for c in iptocc.country_code(ips)]
        assert lookup.countries(ips) == truth
        assert lookup.countries(tuple(ips)) == truth
    assert lookup.countries(["10.0.0.1", "192.0.2.1"]) == [geo.UNKNOWN, geo.UNKNOWN]
    assert lookup.countries([]) == []
