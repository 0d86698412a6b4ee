"""The aggregator's cost cuts (issue 17) keep its results: each shortcut against the computation it replaced."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from floodwatch import messages
from floodwatch.aggregate.engine import Engine
from floodwatch.aggregate.geo import KeyCountries
from floodwatch.aggregate.hll import HyperLogLog, hashed_index_rank, index_rank
from floodwatch.aggregate.keys import fmix64
from floodwatch.aggregate.spacesaving import HeavyHitters
from floodwatch.aggregate.tls import client_hellos
from floodwatch.aggregate.window import WindowStats
from floodwatch.messages import Message, TrafficSummary, TrafficWindow
from floodwatch.records import DIR_IN, DIR_OUT
from floodwatch.settings.aggregator import AggregatorSettings
from tests.aggregate.agg_factory import batch, counters, records, v4_addrs


class FoldingEachTime(HeavyHitters):
    """The former `exact`: a fold every time it is asked."""

    @property
    def exact(self) -> bool:
        self.fold()
        return self.error == 0


def test_aggregate_exactness_asked_without_folding_answers_as_a_fold_would() -> None:
    rng = np.random.default_rng(17)
    lazy, eager = HeavyHitters(300, 4096), FoldingEachTime(300, 4096)
    answers = []
    for step in range(60):  # 40 distinct keys a step: past capacity at step 8
        keys = rng.integers(0, 40 * (step + 1), 60).astype(np.uint64)
        lazy.update(keys, 3)
        eager.update(keys, 3)
        answers.append((lazy.exact, eager.exact))
        if eager.exact:  # exact: the same table, the same top list
            assert [a.tolist() for a in lazy.top(10)] == [a.tolist() for a in eager.top(10)]
            assert len(lazy) == len(eager)
    assert [a for a, _ in answers] == [b for _, b in answers]
    assert answers[0] == (True, True) and answers[-1] == (False, False)


def test_aggregate_engine_windows_equal_with_exactness_asked_by_a_fold_every_window() -> None:
    """Past run_capacity distinct sources the windows switch to window_capacity at the same window."""
    def run(eager: bool) -> list[Message]:
        e = Engine(AggregatorSettings(run_capacity=500, window_capacity=64))
        if eager:
            e.run.src = FoldingEachTime(500, e.s.buffer, payload_width=2)
        rng = np.random.default_rng(3)
        out: list[Message] = []
        for i in range(40):
            n = 200
            src = v4_addrs(rng.integers(0, 3000, n).astype(np.uint32) + 0x0B000000)
            out += e.feed_batch(batch(records(n, ts=1000.0 + i * 0.1 + np.arange(n) * 1e-4, src=src), seq=i))
        return out + e.finish()

    lazy, eager = run(False), run(True)
    windows = [dataclasses.asdict(m) for m in lazy if isinstance(m, TrafficWindow)]
    assert windows == [dataclasses.asdict(m) for m in eager if isinstance(m, TrafficWindow)]
    assert len(windows) == 40 and not windows[-1]["extra"]["src_exact"] and windows[0]["extra"]["src_exact"]
    s_lazy, s_eager = (next(m for m in out if isinstance(m, TrafficSummary)) for out in (lazy, eager))
    assert (s_lazy.packets, s_lazy.protocols, s_lazy.source_ip_count, s_lazy.source_ip_count_exact) == \
        (s_eager.packets, s_eager.protocols, s_eager.source_ip_count, s_eager.source_ip_count_exact)


def test_aggregate_one_hash_gives_the_registers_of_both_precisions() -> None:
    keys = np.random.default_rng(5).integers(0, 2**63, 5000, dtype=np.uint64)
    h = fmix64(keys)
    for p in (8, 12):
        assert all((a == b).all() for a, b in zip(hashed_index_rank(h, p), index_rank(keys, p), strict=True))
    by_keys, by_hash = HyperLogLog(12), HyperLogLog(12)
    by_keys.add_keys(keys)
    by_hash.add_hashed(h)
    assert by_keys.to_bytes() == by_hash.to_bytes()


def test_aggregate_victim_source_count_equals_a_sketch_of_its_sources() -> None:
    src = v4_addrs(np.arange(3000, dtype=np.uint32) + 0x0B000000)
    e = Engine(AggregatorSettings())
    out = e.feed_batch(batch(records(3000, ts=1000.01, src=src))) + e.finish()
    victim = next(m for m in out if isinstance(m, TrafficWindow)).victims[0]
    ref = HyperLogLog(8)
    ref.add_keys(np.arange(3000, dtype=np.uint64) + np.uint64(0xFFFF0B000000))
    assert victim["ip"] == "10.10.10.10" and victim["src_distinct"] == ref.estimate()


def test_aggregate_hellos_found_among_records_without_tcp_payload_only_where_they_are() -> None:
    hello = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]) + bytes(26)
    recs = records(6, proto=17, dport=443)
    assert not client_hellos(recs, np.array([443], np.uint16)).any()  # UDP: no lookup, none found
    recs[2:4]["proto"], recs[2:4]["paylen"], recs[2:4]["payload"] = 6, 200, hello
    recs[3]["dport"] = 80
    assert client_hellos(recs, np.array([443, 8443], np.uint16)).tolist() == [False, False, True, False, False,
                                                                           False]


def test_aggregate_countries_cached_by_key_equal_the_lookup_of_the_texts() -> None:
    from floodwatch.aggregate import geo
    from floodwatch.aggregate.keys import key_text

    lookup = geo.make_lookup("iptocc")
    assert lookup is not None
    by_key = geo.KeyCountries(lookup)
    rng = np.random.default_rng(11)
    pool = rng.integers(0x01000000, 0xDF000000, 3000).astype(np.uint64) + np.uint64(0xFFFF00000000)
    for _ in range(6):  # sources coming back, new ones, and the bounded cache cleared on the way
        keys = np.unique(pool[rng.integers(0, pool.size, 2500)]).tolist()
        counts = rng.integers(1, 50, len(keys)).tolist()
        texts = [key_text(k) for k in keys]
        made: list[int] = []

        def text_of(idx: np.ndarray | slice, t: list[str] = texts, made: list[int] = made) -> list[str]:
            rows = list(range(len(t)))[idx] if isinstance(idx, slice) else idx.tolist()  # all of them, or some
            made.extend(rows)
            return [t[i] for i in rows]

        got = by_key.breakdown(np.array(keys, dtype=np.uint64), np.array(counts), text_of)
        assert got == geo.breakdown(lookup, list(zip(texts, counts, strict=True)))
        assert len(got) > 5 and len(made) <= len(keys)
        assert len(by_key._known) <= geo.CACHE
    assert len(made) < len(keys)  # the keys known already were not made into text again


def test_aggregate_summary_error_bound_covers_the_sources_still_pending() -> None:
    """Past run_capacity the summary's bound still covers every source: count <= true <= count + bound."""
    e = Engine(AggregatorSettings(run_capacity=300, window_capacity=64))
    rng = np.random.default_rng(9)
    ints = rng.integers(0, 2000, 6000).astype(np.uint32)
    ints[:1500] = 77  # one heavy source among many light ones
    recs = records(6000, ts=1000.0 + np.arange(6000) * 1e-3, src=v4_addrs(ints + 0x0B000000))
    out = [m for i in range(0, 6000, 500) for m in e.feed_batch(batch(recs[i:i + 500], seq=i))] + e.finish()
    s = next(m for m in out if isinstance(m, TrafficSummary))
    bound = s.extra["top_src_error_bound"]
    true = {f"11.0.{v >> 8}.{v & 255}": int(c) for v, c in enumerate(np.bincount(ints)) if c}
    assert not s.source_ip_count_exact and bound > 0
    assert s.top_src_ips[0]["ip"] == "11.0.0.77"
    for row in s.top_src_ips:
        assert row["count"] <= true[row["ip"]] <= row["count"] + bound


class EagerWindow(WindowStats):
    """The former window: every structure made at once, every message built in full."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._grow()

    def to_message(self, geo: KeyCountries | None = None, geo_rows: int = 0) -> TrafficWindow:
        return self._full_message(geo, geo_rows)


def silences_traffic_silences(e: Engine) -> list[Message]:
    """A live link: counter readings (one a second while silent, ten a second in traffic), 4 s of
    silence, 2 s of TCP and UDP from 300 sources in both directions with late records, 4 s of silence,
    a gap in the readings (empty windows published up to max_gap), 2 s of silence."""
    rng = np.random.default_rng(11)
    out: list[Message] = []
    rx = tx = 0
    t = 5000.055
    for k in range(100):  # tenths of a second
        busy = 4 <= k // 10 < 6
        if not busy and k % 10:
            continue
        if busy:
            n = 150
            ts = 5000.0 + k * 0.1 + np.sort(rng.uniform(0, 0.1, n))
            src = v4_addrs(rng.integers(0, 300, n).astype(np.uint32) + 0x0B000000)
            recs = records(n, ts=ts, src=src, proto=rng.choice([6, 17], n), paylen=rng.integers(0, 40, n),
                           direction=rng.choice([DIR_IN, DIR_OUT], n), sport=rng.integers(1024, 2000, n))
            recs[:5]["ts"] -= 0.35  # late: into the oldest open window
            out += e.feed_batch(batch(recs, rate=4, seq=k))
            rx, tx = rx + 4 * n, tx + 2 * n
        out += e.feed_counters(counters(t + k * 0.1, rx, rx * 60, tx, tx * 60, conn=3 + busy))
    out += e.feed_counters(counters(t + 13.0, rx, rx * 60, tx, tx * 60, conn=3))  # a 9 s gap
    for k in range(3):
        out += e.feed_counters(counters(t + 14.0 + k, rx, rx * 60, tx, tx * 60, conn=3))
    return out + e.finish()


def test_aggregate_windows_without_records_are_what_the_full_computation_makes(monkeypatch: Any) -> None:
    """Windows no record reached are made lazily and published from a template: every message (windows,
    seconds, the run's summary) equal, byte for byte on the bus, to the full computation's."""
    from floodwatch.aggregate import engine as engine_module

    lazy = silences_traffic_silences(Engine(AggregatorSettings()))
    monkeypatch.setattr(engine_module, "WindowStats", EagerWindow)
    eager = silences_traffic_silences(Engine(AggregatorSettings()))
    windows = [m for m in lazy if isinstance(m, TrafficWindow)]
    assert len(windows) >= 150 and sum(1 for w in windows if w.sampled) >= 15  # silences and traffic
    assert sum(1 for w in windows if w.extra["late_records"]) >= 1
    assert len(lazy) == len(eager)
    for a, b in zip(lazy, eager, strict=True):
        assert type(a) is type(b) and a == b
        assert messages.encode(a) == messages.encode(b)


def test_aggregate_destinations_grouped_without_a_sort_as_np_unique_groups_them() -> None:
    """A window's inbound records grouped by destination: one destination or a few (a flood's usual case)
    answered without np.unique, with the same keys, first indexes, inverse and counts; many as np.unique."""
    from floodwatch.aggregate.window import group_keys

    rng = np.random.default_rng(23)
    for keys in (np.full(137, 0xFFFF0A0A0A0A, dtype=np.uint64), np.full(1, 7, dtype=np.uint64),
                 rng.integers(0, 5, 300).astype(np.uint64), np.zeros(0, dtype=np.uint64),
                 rng.choice(np.array([0xFFFFC6120001, 1 << 63 | 5], dtype=np.uint64), 400),  # the host's v4 and v6
                 rng.integers(0, 4, 50).astype(np.uint64), rng.integers(7, 10, 9).astype(np.uint64)):
        got = group_keys(keys)
        want = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
        assert [g.tolist() for g in got] == [w.tolist() for w in want]
        assert [g.dtype for g in got] == [w.dtype for w in want]


def test_aggregate_flood_to_one_victim_gives_the_window_np_unique_grouping_gives(monkeypatch: Any) -> None:
    """The whole window (victims, top destinations, ports) is the same with the shortcut as with np.unique."""
    from floodwatch.aggregate import window

    def run() -> list[dict[str, Any]]:
        e = Engine(AggregatorSettings())
        rng = np.random.default_rng(4)
        out: list[Message] = []
        for i in range(12):
            src = v4_addrs(rng.integers(0, 900, 150).astype(np.uint32) + 0x0B000000)
            recs = records(150, ts=1000.0 + i * 0.05 + np.arange(150) * 1e-4, src=src, dport=80)
            recs["sport"] = rng.integers(1024, 65535, 150)
            out += e.feed_batch(batch(recs, seq=i, rate=16))
        return [dataclasses.asdict(m) for m in out + e.finish() if isinstance(m, TrafficWindow)]

    fast = run()
    monkeypatch.setattr(window, "group_keys", lambda k: np.unique(k, return_index=True, return_inverse=True,
                                                                  return_counts=True))
    assert fast == run()
    assert fast[0]["victims"][0]["ip"] == "10.10.10.10" and fast[0]["victims"][0]["packets"] > 0


def test_aggregate_signature_sample_picks_the_records_linspace_picks() -> None:
    """The signature sample's even picks are np.linspace's, for every size and count a window meets."""
    from floodwatch.aggregate.sigsample import even_picks

    for size in [*range(1, 300), 4096, 99_991, 1_000_000]:
        for k in {1, 2, 3, 4, 7, 63, 64, size} & set(range(1, min(size, 64) + 1)) | {min(size, 64)}:
            assert np.array_equal(even_picks(size, k), np.linspace(0, size - 1, k).astype(np.intp)), (size, k)
