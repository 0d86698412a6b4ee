"""The collector's decoders and core on datagrams built to the RFCs: pure logic, milliseconds."""

from __future__ import annotations

import random

import numpy as np

from floodwatch.collector import exportgen as G
from floodwatch.collector.core import Collector
from floodwatch.messages import FrameBatch, Message, PacketBatch
from floodwatch.records import DIR_IN, RECORD_DTYPE, addr_text
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


def test_sflow_headers_parsed_by_our_parser_and_frames_to_recorder() -> None:
    c, sink = make(networks=["203.0.113.0/24"])
    heads = [(G.eth_ipv4_udp(f"198.51.100.{i}", "203.0.113.5", 4000 + i, 123, 440), 482) for i in range(1, 9)]
    other = [(G.eth_ipv4_udp("198.51.100.1", "192.0.2.200", 1, 2, 10), 52)]  # not a protected network
    c.feed("sflow", G.sflow_v5(heads + other, rate=512, counters=2), "192.0.2.1", 5.0)
    c.flush_all()
    assert sink.total() == (8 * 512, 8 * 512 * 482)
    rows = sink.rows()
    assert set(rows["dport"].tolist()) == {123} and set(rows["paylen"].tolist()) == {440}
    assert c.counters["ignored"] == 1
    assert sink.frames and sink.frames[0].sample_rate == 512 and len(sink.frames[0].frames) == 8


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
