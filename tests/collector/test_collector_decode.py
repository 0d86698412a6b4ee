"""The collector's decoders and core on datagrams built to the RFCs: pure logic, milliseconds."""

from __future__ import annotations

import random

import numpy as np
import pytest

from floodwatch.aggregate.engine import Engine
from floodwatch.collector import exportgen as G
from floodwatch.collector.core import Collector
from floodwatch.detect.profile import Profile
from floodwatch.messages import FrameBatch, Message, PacketBatch, TrafficWindow
from floodwatch.records import DIR_IN, RECORD_DTYPE, addr_text
from floodwatch.settings.aggregator import AggregatorSettings
from floodwatch.settings.collector import CollectorSettings


class Sink:
    def __init__(self) -> None:
        self.batches: list[PacketBatch] = []
        self.frames: list[FrameBatch] = []

    def __call__(self, msg: Message, channel: str) -> bool:
        if isinstance(msg, PacketBatch):
            self.batches.append(msg)
        elif isinstance(msg, FrameBatch):
            self.frames.append(msg)
        return True

    def total(self, dst: str | None = None) -> tuple[int, int]:
        """(packets, bytes) scaled by each batch's rate (to one destination if given)."""
        pk = by = 0
        for b in self.batches:
            r = np.frombuffer(b.records, dtype=RECORD_DTYPE)
            if dst is not None:
                r = r[np.array([addr_text(a) == dst for a in r["dst"]], dtype=bool)]
            pk += len(r) * b.sample_rate
            by += int(r["wirelen"].sum()) * b.sample_rate
        return pk, by

    def rows(self) -> np.ndarray:
        return np.concatenate([np.frombuffer(b.records, dtype=RECORD_DTYPE) for b in self.batches])


def make(**kw: object) -> tuple[Collector, Sink]:
    sink = Sink()
    return Collector(CollectorSettings(**kw), sink, lambda: 0.0), sink  # type: ignore[arg-type]


FLOOD = [(f"198.51.100.{i % 250 + 1}", "203.0.113.10", 1024 + i, 53, 17, 0, 3, 3 * 512) for i in range(30)]


def test_netflow_v5_scaled_by_header_sampling() -> None:
    c, sink = make(networks=["203.0.113.0/24"])
    c.feed("flow", G.netflow_v5(FLOOD, sampling=100), "192.0.2.1", 1000.0)
    c.flush_all()
    pk, by = sink.total()
    assert pk == 30 * 3 * 100 and by == 30 * 3 * 100 * 512
    rows = sink.rows()
    assert set(rows["proto"].tolist()) == {17} and set(rows["dport"].tolist()) == {53}
    assert (rows["direction"] == DIR_IN).all() and rows["ts"][0] == 1000.0


def test_v9_and_ipfix_templates_options_sampling_and_late_template() -> None:
    for ipfix in (False, True):
        c, sink = make()
        wrap = G.ipfix if ipfix else G.netflow_v9
        data = G.data_set(300, G.v4_records(FLOOD))
        c.feed("flow", wrap([data]), "192.0.2.7", 1.0)  # before its template: held, not lost
        assert c.counters["malformed"] == 0 and not sink.batches
        opts = G.options_template_set(301, ipfix)
        rate = G.data_set(301, (b"\0\0\0\0" + (64).to_bytes(4, "big")))
        c.feed("flow", wrap([opts, rate]), "192.0.2.7", 1.5)
        c.feed("flow", wrap([G.template_set(300, G.V4_FIELDS, ipfix)]), "192.0.2.7", 2.0)
        c.flush_all()
        # the held set was decoded when its template came (the sampling option came first: 1 in 64)
        assert sink.total("203.0.113.10") == (30 * 3 * 64, 30 * 3 * 64 * 512), ipfix
        assert c.flows.cache.stats["late_sets_decoded"] == 1


def test_sampling_per_sampler_id_from_options_data() -> None:
    """Options data announce a rate per sampler id (v9 fields 48/50, IPFIX selectorId 302 with
    samplingPacketInterval/Space 305/306); a flow naming a sampler id is scaled by that sampler's rate, one
    naming an unknown sampler by the exporter's own rate, else by the configured one."""
    flows = {sid: [(f"198.51.100.{sid}", f"203.0.113.{sid}", 1000, 53, 17, 0, 3, 3 * 512)] for sid in (1, 2, 3)}
    for ipfix in (False, True):
        wrap = G.ipfix if ipfix else G.netflow_v9
        sid_len = 8 if ipfix else 1
        fields = [*G.V4_FIELDS, (302 if ipfix else 48, sid_len)]
        recs = b"".join(G.v4_records(flows[sid]) + sid.to_bytes(sid_len, "big") for sid in (1, 2, 3))
        if ipfix:  # selector id -> interval 1, space 99 (1 in 100) / 1023 (1 in 1024)
            opts = G.options_template(310, [(302, 8)], [(305, 4), (306, 4)], True)
            rates = b"".join(sid.to_bytes(8, "big") + (1).to_bytes(4, "big") + (r - 1).to_bytes(4, "big")
                             for sid, r in ((1, 100), (2, 1024)))
        else:  # scope system, then sampler id, mode, random interval
            opts = G.options_template(310, [(1, 4)], [(48, 1), (49, 1), (50, 4)], False)
            rates = b"".join(b"\0\0\0\0" + bytes([sid, 2]) + r.to_bytes(4, "big") for sid, r in ((1, 100), (2, 1024)))
        c, sink = make(sampling={"default": 7})
        c.feed("flow", wrap([opts, G.data_set(310, rates), G.template_set(300, fields, ipfix),
                             G.data_set(300, recs)]), "192.0.2.7", 1.0)
        c.flush_all()
        assert [sink.total(f"203.0.113.{sid}")[0] for sid in (1, 2, 3)] == [300, 3 * 1024, 21], ipfix
        # an options record without a sampler id sets the exporter's own rate: the unknown sampler's flows
        dom = G.options_template_set(311, ipfix)
        c.feed("flow", wrap([dom, G.data_set(311, b"\0\0\0\0" + (64).to_bytes(4, "big")),
                             G.data_set(300, recs)]), "192.0.2.7", 2.0)
        c.flush_all()
        assert [sink.total(f"203.0.113.{sid}")[0] for sid in (1, 2, 3)] == [600, 6 * 1024, 21 + 3 * 64], ipfix
        assert c.flows.stats["sampler_rates"] == 2


def test_enterprise_and_variable_length_fields_are_skipped() -> None:
    fields = [(8, 4), (0x8000 | 5, 4), (12, 4), (7, 2), (11, 2), (4, 1), (2, 4), (1, 4), (82, 65535)]
    tset = G.template_set(400, [(ie, n) for ie, n in fields], True)
    # the enterprise field carries its enterprise number after it in the template
    body = bytearray(tset[:8])
    for ie, n in fields:
        body += ie.to_bytes(2, "big") + n.to_bytes(2, "big")
        if ie & 0x8000:
            body += (9).to_bytes(4, "big")
    body[2:4] = len(body).to_bytes(2, "big")
    recs = b""
    for i in range(5):
        recs += (bytes([198, 51, 100, i + 1]) + b"ENTR" + bytes([203, 0, 113, 10]) + (1000 + i).to_bytes(2, "big")
                 + (80).to_bytes(2, "big") + b"\x06" + (2).to_bytes(4, "big") + (120).to_bytes(4, "big")
                 + b"\x03eth")
    c, sink = make()
    c.feed("flow", G.ipfix([bytes(body), G.data_set(400, recs)]), "192.0.2.9", 1.0)
    c.flush_all()
    assert sink.total() == (10, 600)
    assert set(sink.rows()["dport"].tolist()) == {80}


@pytest.mark.parametrize("expanded", [False, True])
def test_sflow_headers_parsed_by_our_parser_and_frames_to_recorder(expanded: bool) -> None:
    c, sink = make(networks=["203.0.113.0/24"])
    heads = [(G.eth_ipv4_udp(f"198.51.100.{i}", "203.0.113.5", 4000 + i, 123, 440), 482) for i in range(1, 9)]
    other = [(G.eth_ipv4_udp("198.51.100.1", "192.0.2.200", 1, 2, 10), 52)]  # not a protected network
    c.feed("sflow", G.sflow_v5(heads + other, rate=512, counters=2, expanded=expanded), "192.0.2.1", 5.0)
    c.flush_all()
    assert sink.total() == (8 * 512, 8 * 512 * 482)
    rows = sink.rows()
    assert set(rows["dport"].tolist()) == {123} and set(rows["paylen"].tolist()) == {440}
    assert c.counters["ignored"] == 1 and c.counters["counter_samples"] == 2
    assert sink.frames and sink.frames[0].sample_rate == 512 and len(sink.frames[0].frames) == 8


def test_sflow_counter_samples_give_each_exporters_interfaces() -> None:
    c, sink = make(networks=["203.0.113.0/24"])
    head = [(G.eth_ipv4_udp("198.51.100.1", "203.0.113.5", 4000, 123, 440), 482)]
    gig = 10**9
    first = [G.if_counters_sample(3, gig, (5000, 7000), (50, 70), errors=(1, 2), discards=(3, 4)),
             G.if_counters_sample(4, 10 * gig, (1, 2), (3, 4), expanded=True)]
    c.feed("sflow", G.sflow_v5(head, rate=512, extra=first), "192.0.2.1", 5.0)
    # a later sample of interface 3 replaces the first; another exporter's interface 3 is its own
    c.feed("sflow", G.sflow_v5([], rate=512, extra=[G.if_counters_sample(3, gig, (9000, 9500), (90, 95))]),
           "192.0.2.1", 6.0)
    c.feed("sflow", G.sflow_v5([], rate=512, extra=[G.if_counters_sample(3, gig, (1, 1), (1, 1), expanded=True)]),
           "192.0.2.2", 6.0)
    short = G.if_counters_sample(8, gig, (1, 1), (1, 1))
    short = short[:4] + (len(short) - 8 - 8).to_bytes(4, "big") + short[8:16] + (80).to_bytes(4, "big") + short[20:-8]
    c.feed("sflow", G.sflow_v5([], rate=512, extra=[short]), "192.0.2.3", 6.0)  # a record of 80 bytes: bad
    c.flush_all()
    assert sink.total() == (512, 512 * 482)  # the flow sample beside them still counts
    assert c.counters["counter_samples"] == 5 and c.counters["counter_records_bad"] == 1
    assert c.counters["malformed"] == 0
    shown = c.interfaces.snapshot(c.exporter_names)
    assert shown["192.0.2.1"]["3"] == {"speed": gig, "in_octets": 9000, "out_octets": 9500, "in_packets": 90,
                                       "out_packets": 95, "in_errors": 0, "out_errors": 0, "in_discards": 0,
                                       "out_discards": 0, "status": 3}
    assert shown["192.0.2.1"]["4"]["speed"] == 10 * gig and shown["192.0.2.2"]["3"]["in_octets"] == 1
    assert list(shown) == ["192.0.2.1", "192.0.2.2"]  # the busiest first; nothing of the bad record
    assert c.interfaces.per_exporter(c.exporter_names) == {"192.0.2.1": 3, "192.0.2.2": 1}


def test_exporters_allow_list_absurd_rates_and_lengths_counted() -> None:
    c, sink = make(exporters=["192.0.2.0/28"])
    c.feed("flow", G.netflow_v5(FLOOD), "192.0.2.200", 1.0)
    assert c.counters["not_allowed"] == 1
    c.feed("sflow", G.sflow_v5([(G.eth_ipv4_udp("1.1.1.1", "2.2.2.2", 1, 2, 3), 60)], rate=10**9), "192.0.2.1", 1.0)
    c.flush_all()
    assert c.counters["bad_sampling"] == 1
    bad = [("1.1.1.1", "2.2.2.2", 1, 2, 17, 0, 10, 10)]  # 1-byte packets
    c.feed("flow", G.netflow_v5(bad), "192.0.2.1", 1.0)
    c.flush_all()
    assert c.counters["bad_lengths"] == 1 and not sink.batches


def test_sflow_absurd_counts_cost_nothing() -> None:
    """A datagram claiming more samples than an agent sends is malformed at once (not walked sample by
    sample); a flow sample claiming too many records is counted and dropped, its neighbours kept."""
    c, sink = make()
    head = G.sflow_v5([], 1)[:24]
    c.feed("sflow", head + (100_000).to_bytes(4, "big") + b"\0" * 60_000, "192.0.2.1", 1.0)
    good = G.sflow_v5([(G.eth_ipv4_udp("198.51.100.1", "203.0.113.5", 1, 2, 30), 72)] * 2, 10)
    sample = good[28 : len(good) - (len(good) - 28) // 2]  # the first of the two flow samples
    liar = bytearray(sample)
    liar[8 + 28 : 8 + 32] = (1000).to_bytes(4, "big")  # its record count
    c.feed("sflow", good[:24] + (3).to_bytes(4, "big") + sample + bytes(liar) + sample, "192.0.2.1", 1.0)
    c.flush_all()
    assert c.counters["malformed"] == 1 and c.counters["bad_samples"] == 1
    assert sink.total() == (2 * 10, 2 * 10 * 72)


def test_fuzz_random_and_mutated_datagrams() -> None:
    rnd = random.Random(16)
    c, sink = make(max_templates=64, pending_sets=32)
    seeds = [G.netflow_v5(FLOOD, 10), G.netflow_v9([G.template_set(300, G.V4_FIELDS, False),
                                                    G.data_set(300, G.v4_records(FLOOD))]),
             G.ipfix([G.template_set(300, G.V4_FIELDS, True), G.data_set(300, G.v4_records(FLOOD))]),
             G.sflow_v5([(G.eth_ipv4_udp("1.1.1.1", "2.2.2.2", 1, 2, 30), 72)] * 5, 100)]
    for i in range(6000):
        seed = bytearray(rnd.choice(seeds))
        if i % 3 == 0:
            data = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 300)))
            data = bytes(seed[:2]) + data if i % 2 else data
        else:
            for _ in range(rnd.randrange(1, 6)):
                seed[rnd.randrange(len(seed))] = rnd.getrandbits(8)
            data = bytes(seed[: rnd.randrange(len(seed) + 1)]) if i % 5 == 0 else bytes(seed)
        c.feed(rnd.choice(["flow", "sflow"]) if i % 7 == 0 else ("sflow" if data[:4] == b"\0\0\0\5" else "flow"),
               data, f"192.0.2.{i % 200}", float(i))
    c.flush_all()
    assert c.counters["datagrams"] == 6000 and c.counters["malformed"] > 500
    assert len(c.flows.cache.templates) <= 64 and len(c.flows.cache.pending) <= 32
    # still decodes a good datagram afterwards
    before = len(sink.batches)
    c.feed("flow", G.netflow_v5(FLOOD, 1), "192.0.2.1", 7000.0)
    c.flush_all()
    assert len(sink.batches) > before


def test_flow_records_count_their_sources_unscaled() -> None:
    """Flow records are not a sample of packets: 600 sources, one 64-packet flow each (one record each),
    count as 600 sources in the incident's profile, not as the 38,400 packets a packet sample of 600
    distinct records would suggest (the windows say no sample size: sampled_src 0)."""
    c, sink = make(networks=["203.0.113.0/24"])
    flows = [(f"10.{i // 250}.{i % 250}.1", "203.0.113.10", 1024 + i, 53, 17, 0, 64, 64 * 512) for i in range(600)]
    for k in range(0, 600, 30):
        c.feed("flow", G.netflow_v5(flows[k : k + 30], seq=k), "192.0.2.1", 1000.0)
    c.flush_all()
    assert len(sink.rows()) == 600 and all(b.source == "collector" for b in sink.batches)
    engine = Engine(AggregatorSettings(geo="off"))
    out = [m for b in sink.batches for m in engine.feed_batch(b)] + engine.finish()
    windows = [m for m in out if isinstance(m, TrafficWindow) and m.packets_in]
    assert windows and all(w.sampled_src == 0 for w in windows)
    profile = Profile()
    for w in windows:
        profile.add(w)
    assert profile.packets_in == 600 * 64 and abs(profile.sources - 600) <= 0.05 * 600
