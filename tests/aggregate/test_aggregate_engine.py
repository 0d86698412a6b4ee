"""The aggregator core on synthetic batches: windows by stream time, rollups, scaling, features."""

from __future__ import annotations

import numpy as np
import pytest

from floodwatch.aggregate.engine import BadBatch, Engine
from floodwatch.aggregate.features import flag_combo
from floodwatch.messages import Message, PacketBatch, TrafficSecond, TrafficSummary, TrafficWindow
from floodwatch.records import (
    DIR_IN,
    DIR_OUT,
    FRAG_FIRST,
    FRAG_LATER,
    TCP_ACK,
    TCP_CWR,
    TCP_ECE,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    TCP_URG,
)
from floodwatch.settings.aggregator import AggregatorSettings
from tests.aggregate.agg_factory import batch, records, v4_addrs


def engine(**kw: object) -> Engine:
    return Engine(AggregatorSettings(**kw))  # type: ignore[arg-type]


def of(out: list[Message], cls: type) -> list:
    return [m for m in out if isinstance(m, cls)]


def summary_of(out: list[Message]) -> TrafficSummary:
    """The last message of a finished run: its summary."""
    assert isinstance(out[-1], TrafficSummary)
    return out[-1]


def run(e: Engine, *batches: PacketBatch) -> list[Message]:
    out: list[Message] = []
    for b in batches:
        out += e.feed_batch(b)
    return out + e.finish()


def test_aggregate_windows_follow_stream_time_and_roll_into_seconds() -> None:
    ts = 1000.0 + np.arange(2500) * 0.001  # 2.5 s of stream time, 1000 pps
    out = run(engine(), *(batch(records(500, ts=ts[i:i + 500])) for i in range(0, 2500, 500)))
    windows, seconds = of(out, TrafficWindow), of(out, TrafficSecond)
    assert [round(w.t_start, 3) for w in windows] == [round(1000 + i / 10, 3) for i in range(25)]
    assert all(w.packets_in == 100 and w.proto_in["tcp"] == 100 for w in windows)
    assert [s.pps for s in seconds] == [1000, 1000, 1000]
    assert [round(s.t_end - s.t_start, 3) for s in seconds] == [1.0, 1.0, 0.5]
    summary = out[-1]
    assert isinstance(summary, TrafficSummary) and summary.packets == 2500
    order = [type(m).__name__ for m in out]
    assert order.index("TrafficSecond") == 10  # the first second follows its ten windows


def test_aggregate_gap_publishes_bounded_empty_windows_and_late_records_count() -> None:
    e = engine(max_gap=1.0)
    out = e.feed_batch(batch(records(10, ts=1000.05)))
    out += e.feed_batch(batch(records(10, ts=1100.05)))  # 100 s later
    out += e.feed_batch(batch(records(5, ts=1000.0)))  # far too late: goes to the oldest open window
    out += e.finish()
    windows = of(out, TrafficWindow)
    # data, 1 s of empty windows, at most `lateness` more before the next data, data
    assert 1 + 10 + 1 <= len(windows) <= 1 + 10 + 3 + 1
    assert windows[-1].t_start == pytest.approx(1100.0)
    assert sum(w.packets_in for w in windows) == 25
    assert sum(w.extra["late_records"] for w in windows) == 5
    assert summary_of(out).packets == 25


def test_aggregate_sample_rate_scales_every_count() -> None:
    recs = records(1000, ts=1000.01, wirelen=100, proto=17, flags=0, sport=53)
    out = run(engine(), batch(recs, rate=8))
    w = of(out, TrafficWindow)[0]
    assert (w.packets_in, w.bytes_in, w.sampled, w.sample_rate) == (8000, 800_000, 1000, 8.0)
    assert w.proto_in["udp"] == 8000 and w.top_src_ports == [["udp", 53, 8000]]
    assert w.size_hist["65-127"] == 8000 and w.ttl_hist == {64: 8000}
    assert summary_of(out).packets == 8000 and summary_of(out).sample_rate == 8.0


def test_aggregate_directions_unknown_counts_inbound_and_bidir() -> None:
    peers = v4_addrs(np.arange(0x0A000001, 0x0A000001 + 20, dtype=np.uint32))
    inbound = records(20, ts=1000.01, direction=DIR_IN, src=peers, flags=TCP_ACK)
    outbound = records(20, ts=1000.02, direction=DIR_OUT, src="10.10.10.10", dst=peers, flags=TCP_ACK)
    unknown = records(30, ts=1000.03, src="203.0.113.9", flags=TCP_SYN)  # DIR_UNKNOWN
    later_in = records(20, ts=1000.04, direction=DIR_IN, src=peers, flags=TCP_ACK | TCP_PSH)
    w = of(run(engine(), *(batch(r) for r in (inbound, outbound, unknown, later_in))), TrafficWindow)[0]
    assert (w.packets_in, w.packets_out) == (70, 20)
    assert w.proto_out == {"tcp": 20, "udp": 0, "icmp": 0, "other": 0}
    assert w.bidir_packets == 40  # inbound TCP from peers that got outbound packets in the window
    assert w.tcp_flags["SYN"] == 30 and w.tcp_flags["ACK"] == 20 and w.tcp_flags["PSH-ACK"] == 20


@pytest.mark.parametrize(
    ("flags", "name"),
    [
        (TCP_SYN, "SYN"), (TCP_SYN | TCP_ACK, "SYN-ACK"), (TCP_ACK, "ACK"), (TCP_PSH | TCP_ACK, "PSH-ACK"),
        (TCP_RST, "RST"), (TCP_RST | TCP_ACK, "RST-ACK"), (TCP_FIN, "FIN"), (TCP_FIN | TCP_ACK, "FIN-ACK"),
        (TCP_FIN | TCP_PSH | TCP_URG, "XMAS"), (0, "NULL"), (TCP_SYN | TCP_ECE | TCP_CWR, "SYN-ECE"),
        (TCP_SYN | TCP_FIN, "OTHER"), (TCP_PSH, "OTHER"), (TCP_SYN | TCP_ACK | TCP_ECE, "SYN-ACK"),
    ],
)
def test_aggregate_tcp_flag_combinations(flags: int, name: str) -> None:
    assert flag_combo(flags) == name
    w = of(run(engine(), batch(records(3, ts=1000.0, flags=flags))), TrafficWindow)[0]
    assert w.tcp_flags[name] == 3 and sum(w.tcp_flags.values()) == 3


def test_aggregate_top_lists_victims_ipv6_and_fragments() -> None:
    srcs = v4_addrs(np.repeat(np.arange(1, 6, dtype=np.uint32) + 0xC6120000, [50, 40, 30, 20, 10]))
    v4 = records(150, ts=1000.0, src=srcs, dst="10.10.10.10", dport=443, wirelen=100,
                 sport=np.arange(150) % 3 + 1000)
    v6 = records(45, ts=1000.0, ipver=6, proto=17, src="2001:db8::1", dst="2001:db8::99", flags=0, dport=53)
    frags = records(10, ts=1000.0, proto=17, flags=0, frag=np.array([FRAG_FIRST] * 4 + [FRAG_LATER] * 6),
                    src="198.51.100.7", dst="10.10.10.10")
    w = of(run(engine(), batch(np.concatenate([v4, v6, frags]))), TrafficWindow)[0]
    assert w.top_src_ips[:3] == [["198.18.0.1", 50], ["2001:db8::1", 45], ["198.18.0.2", 40]]
    assert w.top_dst_ips[0] == ["10.10.10.10", 160, 160 * 100 - 10 * 40]
    assert w.ipver_in == {"4": 160, "6": 45} and w.fragments == {"first": 4, "later": 6}
    assert ["udp", 40000, 45 + 4] in w.top_src_ports  # later fragments have no ports
    assert w.src_distinct == 7
    victim = w.victims[0]
    assert victim["ip"] == "10.10.10.10" and victim["packets"] == 160
    assert victim["proto"] == {"tcp": 150, "udp": 10, "icmp": 0, "other": 0}
    assert victim["tcp_flags"] == {"SYN": 150} and victim["src_distinct"] == 6
    assert victim["top_src_port"]["port"] in (1000, 1001, 1002)
    assert w.victims[1]["ip"] == "2001:db8::99"
    assert w.top_dst_ports[:2] == [["tcp", 443, 150], ["udp", 53, 45]]


def test_aggregate_bad_batch_is_refused_and_counted() -> None:
    e = engine()
    good = batch(records(4, ts=1000.0))
    bad = PacketBatch(**{**good.to_dict(), "count": 5})
    with pytest.raises(BadBatch, match="5 records"):
        e.feed_batch(bad)
    nan = records(2)
    nan["ts"] = np.nan
    with pytest.raises(BadBatch, match="non-finite"):
        e.feed_batch(batch(nan))
    with pytest.raises(BadBatch, match="out-of-range"):
        e.feed_batch(batch(records(2, ts=1e300)))
    from tests.aggregate.agg_factory import counters

    with pytest.raises(BadBatch, match="bad time"):
        e.feed_counters(counters(float("inf"), 1, 1))
    with pytest.raises(BadBatch, match="negative"):
        e.feed_counters(counters(1000.0, -5, 1))
    assert e.stats["bad_batches"] == 5
    assert summary_of(run(e, good)).packets == 4


def test_aggregate_summary_counts_sources_exactly_then_by_hll() -> None:
    srcs = v4_addrs(np.arange(5000, dtype=np.uint32) + 0x0B000000)
    exact = summary_of(run(engine(), batch(records(5000, ts=1000.0, src=srcs))))
    assert (exact.source_ip_count, exact.source_ip_count_exact) == (5000, True)
    small = summary_of(run(engine(run_capacity=1000), batch(records(5000, ts=1000.0, src=srcs))))
    assert not small.source_ip_count_exact
    assert abs(small.source_ip_count - 5000) <= 3 * 0.0163 * 5000
    assert small.extra["source_ip_count_rel_error"] > 0


def test_aggregate_random_record_bytes_cause_no_crash() -> None:
    """Records are capture's, but nothing in them may crash the aggregator: random bytes everywhere
    except a sane timestamp."""
    from floodwatch.records import RECORD_DTYPE

    rng = np.random.default_rng(99)
    e = Engine(AggregatorSettings())
    out: list[Message] = []
    for i in range(20):
        recs = np.frombuffer(rng.bytes(10_000 * RECORD_DTYPE.itemsize), dtype=RECORD_DTYPE).copy()
        recs["ts"] = 1000.0 + i * 0.05 + rng.random(10_000) * 0.05
        out += e.feed_batch(batch(recs, rate=int(rng.integers(1, 100))))
    out += e.finish()
    summary = out[-1]
    assert isinstance(summary, TrafficSummary)
    assert summary.packets == sum(w.packets_in + w.packets_out for w in of(out, TrafficWindow))
    assert summary.malformed > 0 and summary.source_ip_count > 100_000 * 0.9


def test_aggregate_window_counts_its_second_half_for_the_fast_rule() -> None:
    """A flood that starts 70 ms into a window: all of it is in the window's second half (inbound only)."""
    quiet = records(20, ts=1000.0 + np.arange(20) * 0.004)  # 1000.000-1000.076: 13 early, 7 late
    flood = records(300, ts=1000.07 + np.arange(300) * 0.0001, wirelen=100)  # 1000.070-1000.100
    outbound = records(50, ts=1000.09, direction=DIR_OUT)
    out = run(engine(), batch(np.concatenate([quiet, flood, outbound])), batch(records(1, ts=1001.0)))
    w = of(out, TrafficWindow)[0]
    late_quiet = int(np.count_nonzero(quiet["ts"] >= 1000.05))
    assert w.packets_in == 320 and w.tail_packets_in == 300 + late_quiet
    assert w.tail_bytes_in == 300 * 100 + late_quiet * 60
    sampled = run(engine(), batch(flood, rate=4), batch(records(1, ts=1001.0)))
    assert of(sampled, TrafficWindow)[0].tail_packets_in == 1200  # scaled like every count


def test_aggregate_counter_delta_follows_the_records_in_time() -> None:
    """A flood that begins 80 ms into a window, read by counters at 35 ms past each window end: the
    interval's delta goes where its packets are (the records), not spread evenly over the interval."""
    from tests.aggregate.agg_factory import counters

    e = engine(lateness=0.03)
    e.feed_counters(counters(1000.035, 0, 0))
    flood = records(200, ts=1000.08 + np.arange(200) * 0.000275, wirelen=100)  # 1000.080-1000.1347
    out = e.feed_batch(batch(flood))
    out += e.feed_counters(counters(1000.135, 200, 20_000))
    out += e.feed_counters(counters(1000.235, 200, 20_000))
    w0, w1 = of(out, TrafficWindow)[:2]
    in_w0 = int(np.count_nonzero(flood["ts"] < 1000.1))
    assert w0.exact and abs(w0.packets_in - in_w0) <= 0.05 * 200, (w0.packets_in, in_w0)  # by time: 130
    assert w0.packets_in + w1.packets_in == 200 and w0.bytes_in + w1.bytes_in == 20_000


def test_aggregate_live_windows_wait_for_the_counters_that_cover_them() -> None:
    """Records alone (a batch up to 35 ms past the window end) do not close a live window: the reading
    that covers it does, so its delta is not pushed into the next window."""
    from tests.aggregate.agg_factory import counters

    e = engine(lateness=0.03)
    e.feed_counters(counters(1000.035, 0, 0))
    out = e.feed_batch(batch(records(100, ts=1000.05 + np.arange(100) * 0.00085)))  # up to 1000.134
    assert of(out, TrafficWindow) == []
    out = e.feed_counters(counters(1000.135, 100, 6000))
    w0 = of(out, TrafficWindow)[0]
    in_w0 = int(np.count_nonzero(1000.05 + np.arange(100) * 0.00085 < 1000.1))  # 59; by time it would be 65
    assert w0.exact and abs(w0.packets_in - in_w0) <= 3  # records are placed by tenth of a window


def test_aggregate_empty_window_fast_path_equals_the_full_message() -> None:
    """An idle link publishes ten empty windows a second from a template: the same message the full
    path builds, counters and all."""
    from floodwatch.aggregate.engine import spec_of
    from floodwatch.aggregate.sigsample import SignatureSampler
    from floodwatch.aggregate.window import WindowStats

    spec = spec_of(AggregatorSettings())
    for present in (False, True):
        ws = WindowStats(17_000_000_123, 0.1, spec, SignatureSampler(None))
        if present:
            c = ws.counters
            c.present, c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes = True, 3, 180, 1, 60
            c.kernel_drops, c.conn_count, c.extra["send_drops"] = 2, 5, 1
        fast, full = ws.to_message(), ws._full_message()
        assert fast == full and fast.t_start == 1_700_000_012.3 and fast.exact is present
        fast.proto_in["tcp"] = 99  # the template is not shared with the messages made from it
        assert WindowStats(1, 0.1, spec, SignatureSampler(None)).to_message().proto_in["tcp"] == 0


def test_aggregate_counter_delta_is_not_piled_onto_records_that_lag() -> None:
    """A steady flood whose records lag the counters (capture behind): a reading that covers three
    windows while only the first window's records have arrived gives each window its third, not the
    first window the whole delta (a 3x peak out of a steady flood)."""
    from tests.aggregate.agg_factory import counters

    e = engine(lateness=0.03)
    e.feed_counters(counters(1000.0, 0, 0, iface="test"))
    flood = records(3000, ts=1000.0 + np.arange(3000) * 0.0001, wirelen=100)  # 1000.0-1000.3, steady
    out = e.feed_batch(batch(flood[:1000]))  # only 1000.0-1000.1 read so far
    out += e.feed_counters(counters(1000.3, 3000, 300_000, iface="test"))
    out += e.feed_batch(batch(flood[1000:]))
    out += e.feed_counters(counters(1000.5, 3000, 300_000, iface="test"))
    wins = of(out, TrafficWindow)[:3]
    assert [w.packets_in for w in wins] == [1000, 1000, 1000], [w.packets_in for w in wins]


def test_aggregate_late_reading_does_not_count_published_windows_twice() -> None:
    """Capture starved: no reading for a second, the first windows went out with their records' count.
    The late reading's share for them is not added to the next open window (it would count those
    packets twice: 6x the rate in one window)."""
    from tests.aggregate.agg_factory import counters

    e = engine(lateness=0.03)
    e.feed_counters(counters(1000.0, 0, 0, iface="test"))
    flood = records(10_000, ts=1000.0 + np.arange(10_000) * 0.0001, wirelen=100)  # 1000.0-1001.0, steady
    out: list[Message] = []
    for i in range(0, 10_000, 500):
        out += e.feed_batch(batch(flood[i : i + 500]))
    out += e.feed_counters(counters(1001.0, 10_000, 1_000_000, iface="test"))
    out += e.feed_counters(counters(1001.2, 10_000, 1_000_000, iface="test"))
    wins = [w for w in of(out, TrafficWindow) if w.t_start < 1001.0]
    assert len(wins) == 10 and not wins[0].exact
    assert [w.packets_in for w in wins] == [1000] * 10, [w.packets_in for w in wins]
    assert e.stats["late_counter_packets"] > 0


def test_aggregate_a_window_read_in_parts_between_readings_equals_it_read_whole() -> None:
    """Live: each reading's batch holds the end of one window and the start of the next; the parts are
    queued and accounted once when their window closes (one numpy pass per window, not per part). Every
    published window carries what the same records make in one batch per window (counts, top lists,
    victims, ports, histograms), and the exact counters add up to what the wire carried."""
    from tests.aggregate.agg_factory import counters

    rng = np.random.default_rng(7)
    n = 3000
    ts = 1000.04 + np.sort(rng.random(n)) * 0.45  # five windows, from after the first reading
    sources = v4_addrs(rng.integers(1 << 24, 1 << 31, 64))
    recs = records(n, ts=ts, proto=17, flags=0, wirelen=rng.integers(60, 1500, n), sport=rng.integers(1, 65535, n),
                   dport=rng.choice([53, 80, 123], n), src=sources[rng.integers(0, 64, n)])
    readings = [1000.035 + 0.1 * k for k in range(7)]

    def windows(cuts: list[float], everything: bool = False) -> list[TrafficWindow]:
        e = engine(lateness=0.03)
        out = e.feed_counters(counters(readings[0] - 0.1, 0, 0))
        for k, t in enumerate(readings):
            part = recs[(ts > cuts[k] - 0.1) & (ts <= cuts[k])]
            if part.size:
                out += e.feed_batch(batch(part, rate=4, seq=k))
            seen = recs[ts <= t]
            out += e.feed_counters(counters(t, int(seen.size) * 4, int(seen["wirelen"].sum()) * 4))
        return [w for w in of(out, TrafficWindow) if w.sampled or everything]

    split = windows(readings)  # as capture reads: up to each reading, across a window's end
    whole = windows([1000.1 + 0.1 * k - 1e-9 for k in range(7)])  # one batch per window
    assert len(split) == len(whole) == 5
    wire = ("packets_in", "bytes_in")  # the readings' deltas are placed by the records known at each reading
    for a, b in zip(split, whole, strict=True):
        assert {k: v for k, v in a.to_dict().items() if k not in wire} == \
               {k: v for k, v in b.to_dict().items() if k not in wire}
        assert a.exact and a.records_packets_in == a.sampled * 4 and a.top_src_ips and a.victims
    every = windows(readings, everything=True)
    assert sum(w.packets_in for w in every) == n * 4
    assert sum(w.bytes_in for w in every) == int(recs["wirelen"].sum()) * 4


def test_aggregate_a_batch_over_several_windows_in_or_out_of_time_order_makes_the_same_windows() -> None:
    rng = np.random.default_rng(11)
    recs = records(900, ts=1000.0 + np.sort(rng.random(900)) * 0.3, sport=rng.integers(1, 65535, 900),
                   src=v4_addrs(rng.integers(1 << 24, 1 << 31, 900)))
    in_order = run(engine(), batch(recs), batch(records(1, ts=1001.0)))
    shuffled = run(engine(), batch(recs[rng.permutation(900)]), batch(records(1, ts=1001.0)))
    a, b = of(in_order, TrafficWindow), of(shuffled, TrafficWindow)
    per_window = np.bincount(((recs["ts"] - 1000) * 10).astype(int), minlength=3)
    assert [w.sampled for w in a][:3] == per_window.tolist()
    assert [w.to_dict() for w in a] == [w.to_dict() for w in b]


def test_aggregate_run_summary_counts_silent_windows_and_the_traffic_after_them() -> None:
    """Windows no record reached add only their counters to the run (the rest would be zeros): the
    summary still counts their windows and packets, and the records that come after in full."""
    from tests.aggregate.agg_factory import counters

    e = engine(lateness=0.0)
    e.feed_counters(counters(1000.0, 0, 0, iface="test"))
    out: list[Message] = []
    for i in range(1, 21):  # two seconds of counters only: 10 packets per window, no records
        out += e.feed_counters(counters(1000.0 + i * 0.1, 10 * i, 600 * i, iface="test"))
    silent = of(out, TrafficWindow)
    assert len(silent) >= 19 and all(w.sampled == 0 and w.src_hll == bytes(len(w.src_hll)) for w in silent)
    assert sum(w.packets_in for w in silent) >= 190
    recs = records(50, ts=1002.05 + np.arange(50) * 0.001, wirelen=100, proto=17, flags=0, dport=53,
                   src="198.51.100.9", direction=DIR_IN)
    e.feed_batch(batch(recs))
    out += e.feed_counters(counters(1002.2, 250, 15_000, iface="test"))
    out += e.finish()
    s = of(out, TrafficSummary)[0]
    windows = of(out, TrafficWindow)
    assert s.packets == sum(w.packets_in + w.packets_out for w in windows) == 250
    assert s.extra["windows"] == len(windows) and s.extra["sampled"] == 50
    assert s.protocols["udp"] == 50 and s.top_src_ips[0] == {"ip": "198.51.100.9", "count": 50}
    assert s.top_dst_ports == [{"port": 53, "proto": "udp", "count": 50}]
    assert s.t_first == pytest.approx(1002.05)
