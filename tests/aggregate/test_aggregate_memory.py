"""Memory stays under the configured cap however many distinct sources arrive: ten million random
IPv4 sources (and a burst of random IPv6 ones) fed straight into the aggregator's core."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest

from floodwatch.aggregate.budget import BASE_BYTES, estimate_bytes
from floodwatch.aggregate.engine import Engine
from floodwatch.errors import ConfigError
from floodwatch.messages import PacketBatch, TrafficSummary
from floodwatch.settings.aggregator import AggregatorSettings
from tests.aggregate.agg_factory import records

BATCH = 65536


def random_batches(total: int, ipv6_every: int = 0) -> Iterator[PacketBatch]:
    rng = np.random.default_rng(2026)
    base = records(BATCH, proto=6, flags=2)
    raw = np.zeros((BATCH, 16), dtype=np.uint8)
    sent = 0
    for seq in range(total // BATCH + 1):
        n = min(BATCH, total - sent)
        if n <= 0:
            return
        r = base[:n].copy()
        v6 = ipv6_every and seq % ipv6_every == 0
        if v6:
            raw[:n] = rng.integers(0, 256, (n, 16), dtype=np.uint8)
            r["ipver"] = 6
        else:
            raw[:n, :10] = 0
            raw[:n, 10:12] = 0xFF
            raw[:n, 12:] = rng.integers(0, 256, (n, 4), dtype=np.uint8)
        r["src"] = raw[:n].view("S16").reshape(-1)
        r["sport"] = rng.integers(1024, 65535, n)
        r["ts"] = 1000.0 + (sent + np.arange(n)) * 1e-6  # one million packets per second of stream time
        yield PacketBatch("test", "t", seq, 1, n, r.tobytes(), 0.0, 0.0)
        sent += n


@pytest.mark.slow
def test_aggregate_ten_million_random_sources_stay_under_the_cap() -> None:
    settings = AggregatorSettings()
    cap = settings.memory_cap_mb * 2**20
    budget = estimate_bytes(settings) - BASE_BYTES  # what the structures may take beyond the interpreter
    assert estimate_bytes(settings) <= cap
    engine = Engine(settings)
    tracemalloc.start()
    try:
        held: list[int] = []
        for i, b in enumerate(random_batches(10_000_000, ipv6_every=10)):
            engine.feed_batch(b)
            del b
            if i % 15 == 0:
                held.append(tracemalloc.get_traced_memory()[0])
        summary = engine.finish()[-1]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(summary, TrafficSummary) and summary.packets == 10_000_000
    assert not summary.source_ip_count_exact
    assert abs(summary.source_ip_count - 10_000_000) < 0.05 * 10_000_000
    assert peak < budget, f"peak {peak / 2**20:.1f} MiB over the {budget / 2**20:.1f} MiB budget"
    # held memory does not grow with the number of distinct sources seen so far
    assert max(held[2:]) < 2 * max(held[:3]) + 8 * 2**20, [round(h / 2**20, 1) for h in held]


def test_aggregate_sizes_that_do_not_fit_the_cap_are_refused() -> None:
    from floodwatch.config import config_from_dict

    with pytest.raises(ConfigError, match="memory_cap_mb"):
        config_from_dict({"aggregator": {"memory_cap_mb": 100, "run_capacity": 5_000_000}})
    assert config_from_dict({"aggregator": {}}).aggregator.memory_cap_mb == 384
