"""Which exporter saw which victim: the collector's ExporterTraffic pairs and the detector's ExporterMap."""

from __future__ import annotations

import numpy as np

from floodwatch.collector import exportgen as G
from floodwatch.collector.core import Collector
from floodwatch.collector.seenby import MAX_PAIRS, SeenBy
from floodwatch.detect.exporters import MAX_INCIDENTS, MAX_PER_VICTIM, ExporterMap
from floodwatch.messages import ExporterTraffic, Message
from floodwatch.records import DIR_IN, DIR_OUT, RECORD_DTYPE, addr_bytes
from floodwatch.settings.collector import CollectorSettings

FLOOD = [(f"198.51.100.{i + 1}", "203.0.113.10", 1024 + i, 53, 17, 0, 3, 3 * 512) for i in range(30)]


def collector() -> tuple[Collector, list[ExporterTraffic]]:
    out: list[ExporterTraffic] = []

    def send(msg: Message, channel: str) -> bool:
        if isinstance(msg, ExporterTraffic):
            assert channel == "events"
            out.append(msg)
        return True

    return Collector(CollectorSettings(networks=["203.0.113.0/24"]), send, lambda: 0.0), out


def test_pairs_name_each_exporter_with_its_victims_scaled_by_sampling() -> None:
    c, out = collector()
    c.feed("flow", G.netflow_v5(FLOOD, sampling=100), "192.0.2.1", 1.0)
    v9 = [(f"198.51.100.{i + 1}", "203.0.113.20", 1, 2, 6, 2, 1, 60) for i in range(10)]
    c.feed("flow", G.netflow_v9([G.template_set(300, G.V4_FIELDS, False), G.data_set(300, G.v4_records(v9))]),
           "192.0.2.3", 1.0)
    heads = [(G.eth_ipv4_udp(f"198.51.100.{i}", "203.0.113.5", 4000 + i, 123, 440), 482) for i in range(1, 9)]
    outside = [(G.eth_ipv4_udp("198.51.100.1", "192.0.2.200", 1, 2, 10), 52)]  # not protected: no pair
    c.feed("sflow", G.sflow_v5(heads + outside, rate=512, counters=2), "192.0.2.2", 1.0)
    c.tick(2.0)
    assert len(out) == 1 and out[0].ts == 2.0
    assert sorted(map(tuple, out[0].pairs)) == [("192.0.2.1", "203.0.113.10", 30 * 3 * 100),
                                                 ("192.0.2.2", "203.0.113.5", 8 * 512),
                                                 ("192.0.2.3", "203.0.113.20", 10)]
    c.tick(3.0)  # nothing new: no message
    assert len(out) == 1


def test_pairs_are_bounded() -> None:
    c, out = collector()
    for e in range(40):  # 40 exporters x 30 victims = 1 200 pairs, more than the table holds
        flows = [(f"198.51.100.{i + 1}", f"203.0.113.{i + 1}", 1, 53, 17, 0, 1, 100) for i in range(30)]
        c.feed("flow", G.netflow_v5(flows), f"192.0.2.{e + 1}", 1.0)
        c.decode_flows()
    c.tick(2.0)
    assert len(out[0].pairs) == MAX_PAIRS and c.seen.dropped == 40 * 30 - MAX_PAIRS


def test_exporter_map_names_exporters_of_addresses_and_prefixes() -> None:
    m = ExporterMap(ttl=60)
    m.note([["192.0.2.1", "203.0.113.10", 900], ["192.0.2.2", "203.0.113.10", 5],
            ["192.0.2.3", "203.0.113.77", 10], ["bad"], [1, 2, 3]], 100.0)
    assert m.bad == 2
    assert m.for_targets(["203.0.113.10"], 110.0) == ["192.0.2.1", "192.0.2.2"]
    assert m.for_targets(["203.0.113.0/24"], 110.0) == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert m.for_targets(["198.18.0.1", "not an address/x"], 110.0) == []
    m.note([[f"10.0.0.{i}", "203.0.113.10", 1] for i in range(100)], 120.0)
    assert len(m.victims["203.0.113.10"]) == MAX_PER_VICTIM
    assert m.for_targets(["203.0.113.77"], 170.0) == []  # not seen for over ttl: forgotten
    assert "203.0.113.10" in m.victims


def test_ipv6_and_ipv4_destinations_in_one_batch() -> None:
    rows = np.zeros(5, dtype=RECORD_DTYPE)
    dsts = ["2001:db8::1", "2001:db8::1", "203.0.113.9", "2001:db8::2", "2001:db8::1"]
    rows["dst"] = [addr_bytes(d) for d in dsts]
    rows["direction"] = [DIR_IN, DIR_IN, DIR_IN, DIR_IN, DIR_OUT]  # the outbound row is no victim
    seen = SeenBy()
    seen.add(np.array([0, 0, 1, 1, 0]), rows, np.array([10, 5, 7, 1, 1000], dtype=np.uint64))
    assert sorted(map(tuple, seen.take(["192.0.2.1", "192.0.2.2"]))) == [
        ("192.0.2.1", "2001:db8::1", 15), ("192.0.2.2", "2001:db8::2", 1), ("192.0.2.2", "203.0.113.9", 7)]


def test_exporter_map_names_incidents_whose_exporters_grew() -> None:
    m = ExporterMap(ttl=60)
    assert m.name("k1", ["203.0.113.10"], True, 100.0) == []  # opened before any pair arrived
    assert m.name("k2", ["203.0.113.0/24"], True, 100.0) == []
    m.note([["192.0.2.1", "203.0.113.10", 10]], 101.0)
    assert m.grown(101.0) == ["k1", "k2"]
    assert m.name("k1", ["203.0.113.10"], True, 101.0) == ["192.0.2.1"]  # the update published
    assert m.grown(101.0) == ["k2"]
    assert m.name("k2", ["203.0.113.0/24"], False, 102.0) == ["192.0.2.1"]  # resolved: forgotten
    assert m.grown(102.0) == [] and list(m.published) == ["k1"]
    for i in range(MAX_INCIDENTS + 10):  # bounded
        m.name(f"x{i}", ["198.18.0.1"], True, 103.0)
    assert len(m.published) == MAX_INCIDENTS
