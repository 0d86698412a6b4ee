"""HyperLogLog error bounds, distinct counts scaled from a packet sample, and heavy-hitter (Space-Saving /
Misra-Gries) guarantees."""

from __future__ import annotations

import numpy as np
import pytest

from floodwatch.aggregate.hll import HyperLogLog, distinct_in_population, relative_error
from floodwatch.aggregate.spacesaving import HeavyHitters


@pytest.mark.parametrize("p", [8, 12, 14])
@pytest.mark.parametrize("n", [1, 100, 3000, 20_000, 200_000])
def test_aggregate_hll_error_within_three_standard_errors(p: int, n: int) -> None:
    rng = np.random.default_rng(p * 1000 + n)
    keys = rng.integers(0, 2**63, n, dtype=np.uint64)
    h = HyperLogLog(p)
    for part in np.array_split(np.concatenate([keys, keys[: n // 2]]), 7):  # duplicates change nothing
        h.add_keys(part)
    assert abs(h.estimate() - n) <= max(1, 3 * relative_error(p) * n)


def test_aggregate_hll_sequential_keys_are_hashed() -> None:
    h = HyperLogLog(12)
    h.add_keys(np.arange(50_000, dtype=np.uint64))  # IPv4 keys are sequential-looking
    assert abs(h.estimate() - 50_000) <= 3 * relative_error(12) * 50_000


def test_aggregate_hll_merge_is_the_union_and_bytes_round_trip() -> None:
    rng = np.random.default_rng(7)
    a_keys = rng.integers(0, 2**63, 30_000, dtype=np.uint64)
    b_keys = np.concatenate([a_keys[:10_000], rng.integers(0, 2**63, 20_000, dtype=np.uint64)])
    a, b, both = HyperLogLog(12), HyperLogLog(12), HyperLogLog(12)
    a.add_keys(a_keys)
    b.add_keys(b_keys)
    both.add_keys(np.concatenate([a_keys, b_keys]))
    merged = HyperLogLog.from_bytes(a.to_bytes())
    merged.merge_bytes(b.to_bytes())
    assert merged.to_bytes() == both.to_bytes()
    assert abs(merged.estimate() - 50_000) <= 3 * relative_error(12) * 50_000


def test_aggregate_hll_rejects_bad_registers() -> None:
    with pytest.raises(ValueError, match="power of two"):
        HyperLogLog.from_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="cannot merge"):
        HyperLogLog(12).merge(HyperLogLog(10))
    with pytest.raises(ValueError, match="cannot merge"):
        HyperLogLog(12).merge_bytes(HyperLogLog(10).to_bytes())


def _zipf_stream(seed: int, n: int, universe: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.zipf(1.3, n) % universe).astype(np.uint64)


def _sample(packets: np.ndarray, one_in: int, seed: int) -> tuple[int, int]:
    """(distinct keys, records) of the packets the kernel's 1-in-N filter keeps."""
    kept = packets[np.random.default_rng(seed).random(packets.size) < 1 / one_in]
    return int(np.unique(kept).size), int(kept.size)


@pytest.mark.parametrize(("sources", "one_in"), [(300, 8), (300, 64), (2_000, 8), (2_000, 64), (20_000, 8)])
def test_aggregate_distinct_scaled_from_a_sample_of_alike_senders(sources: int, one_in: int) -> None:
    """(20,000 sources in 800 records repeat too few to tell 20,000 from 30,000: not a case here.)"""
    packets = np.arange(50_000, dtype=np.int64) % sources
    seen, sampled = _sample(packets, one_in, sources + one_in)
    estimate = distinct_in_population(seen, sampled, packets.size)
    assert seen < estimate or seen == sources  # the sample alone misses sources
    assert abs(estimate - sources) <= 0.15 * sources, (seen, sampled, estimate)


def test_aggregate_distinct_scaled_errs_low_for_skewed_senders() -> None:
    """A botnet's few heavy senders and a long tail: the estimate stays at or below the truth (a tail of
    senders seen once in a sample is never mistaken for more sources than there are)."""
    rng = np.random.default_rng(3)
    heavy = rng.integers(0, 20, 40_000)
    tail = rng.integers(20, 2_020, 10_000)
    packets = np.concatenate([heavy, tail])
    seen, sampled = _sample(packets, 32, 5)
    assert seen < distinct_in_population(seen, sampled, packets.size) <= 2_020


def test_aggregate_distinct_unsampled_is_what_was_seen_and_bounded_by_the_packets() -> None:
    assert distinct_in_population(700, 50_000, 50_000) == 700  # every packet a record: nothing to scale
    assert distinct_in_population(700, 0, 50_000) == 700  # no sample size known
    assert distinct_in_population(800, 800, 50_000) == 50_000  # no source twice: each packet its own
    assert distinct_in_population(0, 800, 50_000) == 0


def test_aggregate_heavy_hitters_exact_below_capacity() -> None:
    hh = HeavyHitters(capacity=500, buffer=300)
    keys = _zipf_stream(1, 50_000, 400)
    for part in np.array_split(keys, 40):
        hh.update(part, 3)
    truth_keys, truth_counts = np.unique(keys, return_counts=True)
    assert hh.exact and len(hh) == truth_keys.size
    got = dict(zip(hh.keys.tolist(), hh.counts.tolist(), strict=True))
    assert got == {int(k): int(c) * 3 for k, c in zip(truth_keys, truth_counts, strict=True)}


@pytest.mark.parametrize("capacity", [10, 100, 1000])
def test_aggregate_heavy_hitters_guarantees_when_pruning(capacity: int) -> None:
    keys = _zipf_stream(capacity, 200_000, 1_000_000)
    rng = np.random.default_rng(capacity)
    weights = rng.integers(1, 5, keys.size)
    hh = HeavyHitters(capacity=capacity, buffer=4096)
    for k, w in zip(np.array_split(keys, 97), np.array_split(weights, 97), strict=True):
        hh.update(k, w)
    n_total = int(weights.sum())
    assert hh.total == n_total and len(hh) <= capacity and not hh.exact
    assert hh.error <= (n_total - int(hh.counts.sum())) / (capacity + 1)
    uk, inv = np.unique(keys, return_inverse=True)
    tw = np.bincount(inv, weights=weights).astype(np.int64)
    truth: dict[int, int] = dict(zip(uk.tolist(), tw.tolist(), strict=True))
    for key, cnt in zip(hh.keys.tolist(), hh.counts.tolist(), strict=True):
        assert cnt <= truth[key] <= cnt + hh.error
    heavy = [k for k, c in truth.items() if c > n_total / (capacity + 1)]
    assert set(heavy) <= set(hh.keys.tolist())


def test_aggregate_heavy_hitters_merge_keeps_the_guarantee() -> None:
    a, b, cap = HeavyHitters(50, 1000, payload_width=2), HeavyHitters(50, 1000, payload_width=2), 50
    ka, kb = _zipf_stream(3, 30_000, 10_000), _zipf_stream(4, 30_000, 10_000)
    a.update(ka, 1, np.stack([ka, ka + np.uint64(1)], axis=1))
    b.update(kb, 1, np.stack([kb, kb + np.uint64(1)], axis=1))
    a.merge(b)
    a.fold()
    both = np.concatenate([ka, kb])
    uk, counts = np.unique(both, return_counts=True)
    truth = dict(zip(uk.tolist(), counts.tolist(), strict=True))
    assert a.total == both.size and a.error <= both.size / (cap + 1)
    for k, c, pl in zip(a.keys.tolist(), a.counts.tolist(), a.payload.tolist(), strict=True):
        assert c <= truth[k] <= c + a.error
        assert pl == [k, k + 1]  # the payload stays with its key
    top_keys, top_counts, _, _ = a.top(3)
    assert list(top_counts) == sorted(top_counts, reverse=True)
    assert int(top_keys[0]) == max(truth, key=lambda k: truth[k])


def test_aggregate_heavy_hitters_folds_into_a_table_exactly_with_payload_and_aux() -> None:
    """A run's table folded again and again (the sorted table with new pending rows: a merge sort since
    issue 17) gives each key its exact count, summed aux and its own payload, as one fold of all."""
    rng = np.random.default_rng(17)
    keys = rng.integers(0, 5000, 60_000).astype(np.uint64)
    weights = rng.integers(1, 4, keys.size)
    payload = np.stack([keys * np.uint64(3), keys + np.uint64(7)], axis=1)
    aux = (weights * 100).reshape(-1, 1)
    many = HeavyHitters(capacity=10_000, buffer=700, payload_width=2, aux=1)
    for part in np.array_split(np.arange(keys.size), 83):
        many.update(keys[part], weights[part], payload[part], aux[part])
    many.fold()
    once = HeavyHitters(capacity=10_000, buffer=10**6, payload_width=2, aux=1)
    once.update(keys, weights, payload, aux)
    once.fold()
    uk, inv = np.unique(keys, return_inverse=True)
    assert many.exact and many.keys.tolist() == once.keys.tolist() == uk.tolist()
    assert many.counts.tolist() == once.counts.tolist() == np.bincount(inv, weights=weights).astype(int).tolist()
    assert many.aux[:, 0].tolist() == (np.bincount(inv, weights=weights).astype(int) * 100).tolist()
    own = np.stack([uk * np.uint64(3), uk + np.uint64(7)], axis=1)
    assert many.payload.tolist() == once.payload.tolist() == own.tolist()
