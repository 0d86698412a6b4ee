"""Exact pps/bps from cumulative kernel counters: deltas, wrap and reset, and their windows."""

from __future__ import annotations

import numpy as np
import pytest

from floodwatch.aggregate.counters import CounterTracker, counter_delta
from floodwatch.aggregate.engine import Engine
from floodwatch.messages import CounterSample, Message, PacketBatch, TrafficSecond, TrafficSummary, TrafficWindow
from floodwatch.settings.aggregator import AggregatorSettings
from tests.aggregate.agg_factory import batch, counters, records


@pytest.mark.parametrize(
    ("old", "new", "delta", "kind"),
    [
        (100, 250, 150, ""),
        (2**32 - 10, 5, 15, "wrap"),  # a 32-bit counter wrapped
        (2**31 + 7, 3, 2**32 - 2**31 - 4, "wrap"),
        (5_000_000, 1200, 1200, "reset"),  # interface re-created: counting restarted at zero
        (2**40, 10, 10, "reset"),  # a 64-bit counter never wraps in practice
        (7, 7, 0, ""),
    ],
)
def test_aggregate_counter_delta(old: int, new: int, delta: int, kind: str) -> None:
    assert counter_delta(old, new) == (delta, kind)


def test_aggregate_counter_split_adds_up_exactly() -> None:
    t = CounterTracker(0.1)
    assert t.feed(counters(1000.05, 0, 0)) == []  # the first sample is the baseline
    pieces = t.feed(counters(1000.37, 1001, 64_064, tx=7, txb=333))
    assert [p.window for p in pieces] == [10000, 10001, 10002, 10003]
    assert sum(p.values["rx_packets"] for p in pieces) == 1001
    assert sum(p.values["tx_bytes"] for p in pieces) == 333
    shares = [p.values["rx_packets"] for p in pieces]
    assert shares == [156, 313, 313, 219]  # in proportion to 0.05, 0.1, 0.1, 0.07 s


def feed_all(e: Engine, items: list) -> list[Message]:
    out: list[Message] = []
    for item in items:
        out += e.feed_counters(item) if hasattr(item, "rx_packets") else e.feed_batch(item)
    return out + e.finish()


def test_aggregate_windows_are_exact_from_counters_with_wrap_and_reset() -> None:
    e = Engine(AggregatorSettings())
    rx = 2**32 - 5000  # eth0 counts on 32 bits and wraps; eth1 gets reset once
    items: list[CounterSample | PacketBatch] = []
    rx1 = 0
    for i in range(31):  # 3 s of samples every 100 ms, aligned to the windows
        ts = 1000.0 + i * 0.1
        items.append(counters(ts, rx % 2**32, (rx * 100) % 2**32, tx=i * 10, txb=i * 1000))
        items.append(counters(ts, rx1, rx1 * 60, iface="eth1"))
        if i < 30:
            recs = records(50, ts=ts + 0.01 + np.arange(50) * 0.001, proto=np.array([6] * 30 + [17] * 20))
            items.append(batch(recs, rate=20))
        rx += 1000
        rx1 = 200 if i == 15 else rx1 + 300  # reset: 15 -> 200 after the counters were cleared
    out = feed_all(e, items)
    windows = [w for w in out if isinstance(w, TrafficWindow)]
    assert len(windows) == 30 and all(w.exact for w in windows)
    assert [w.packets_in for w in windows] == [1300] * 15 + [1200] + [1300] * 14
    assert all(w.packets_out == 10 and w.bytes_out == 1000 for w in windows)
    assert windows[0].bytes_in == 1000 * 100 + 300 * 60
    assert all(w.proto_in == {"tcp": 600, "udp": 400, "icmp": 0, "other": 0} for w in windows)  # from records
    seconds = [s for s in out if isinstance(s, TrafficSecond)]
    assert [s.pps_in for s in seconds] == [13000, 12900, 13000]
    assert all(s.exact for s in seconds)
    summary = out[-1]
    assert isinstance(summary, TrafficSummary)
    assert summary.packets == 30 * 1310 - 100
    assert summary.extra["counter_wraps"] >= 1 and summary.extra["counter_resets"] == 1
