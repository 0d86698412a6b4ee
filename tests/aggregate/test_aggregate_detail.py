"""Per-victim detail under pressure, and signature counts scaled from a bounded sample."""

from __future__ import annotations

import numpy as np

from floodwatch.aggregate.engine import Engine
from floodwatch.aggregate.sigsample import SignatureSampler, load_matcher
from floodwatch.messages import PacketBatch, TrafficWindow
from floodwatch.settings.aggregator import AggregatorSettings
from tests.aggregate.agg_factory import batch, records, v4_addrs


def windows(engine: Engine, *batches: PacketBatch) -> list[TrafficWindow]:
    out = []
    for b in batches:
        out += engine.feed_batch(b)
    return [m for m in out + engine.finish() if isinstance(m, TrafficWindow)]


def test_aggregate_victims_keep_the_heaviest_destinations_in_bounded_rows() -> None:
    e = Engine(AggregatorSettings(victim_rows=4, victims=3))
    noise = records(400, ts=1000.0, dst=v4_addrs(np.arange(400, dtype=np.uint32) + 0x0A140000))
    heavy = records(300, ts=1000.01, dst="10.10.10.10", proto=17, flags=0, sport=123)
    second = records(200, ts=1000.02, dst="10.10.10.11", flags=18)  # SYN-ACK
    # the noise fills the 4 rows first (another sample rate: accounted apart), then the heavy ones evict
    w = windows(e, batch(noise, rate=2), batch(heavy), batch(second), batch(heavy))[0]
    assert [v["ip"] for v in w.victims[:2]] == ["10.10.10.10", "10.10.10.11"]
    assert w.victims[2]["ip"].startswith("10.20.0.") and w.victims[2]["packets"] == 2
    top = w.victims[0]
    assert top["packets"] == 600 and top["proto"]["udp"] == 600
    assert top["top_src_port"] == {"proto": "udp", "port": 123, "packets": 600}
    assert w.victims[1]["tcp_flags"] == {"SYN-ACK": 200} and w.victims[1]["packets"] == 200
    assert w.extra["victim_evictions"] == 2
    assert w.top_dst_ips[:2] == [["10.10.10.10", 600, 600 * 60], ["10.10.10.11", 200, 200 * 60]]


def test_aggregate_signatures_from_a_bounded_sample_are_scaled() -> None:
    matcher = load_matcher([{"pattern": "MIRAI-XYZ", "name": "mirai"}])
    assert matcher is not None, "floodwatch.signatures must load"
    e = Engine(AggregatorSettings(signature_sample=50), SignatureSampler(matcher))
    payload = np.array([b"..MIRAI-XYZ..".ljust(32, b"\x00")] * 1000)
    plain = np.array([b"hello".ljust(32, b"\x00")] * 1000)
    bs = [batch(records(1000, ts=1000.0 + w + i * 0.01, proto=17, flags=0, paylen=100,
                        payload=payload if i < 3 else plain), rate=4) for w in (0, 1) for i in range(4)]
    first, second = [w for w in windows(e, *bs) if w.sampled]
    # 3 of 4 batches carry the pattern. Batches of a window are accounted together up to 2048 records:
    # here batches 0-2 (all matching), then batch 3. With 50 heads per window, the first window spends
    # them all on the first group and scales to every record with payload (an overestimate); the second
    # spreads them over both groups as the first window had two (25 each) and gets the truth.
    assert first.extra["signature_checked"] == 50 and second.extra["signature_checked"] == 50
    assert first.signatures["ioc:mirai"] == 16000
    assert second.signatures["ioc:mirai"] == 3000 * 4
