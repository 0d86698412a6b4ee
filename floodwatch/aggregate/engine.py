"""The aggregator's core: bus messages in, TrafficWindow / TrafficSecond / TrafficSummary out.

Time is stream time (record and counter timestamps; the file clock for pcap sources), so results do
not depend on machine speed. A window [i*w, (i+1)*w) is published once the stream time is `lateness`
past its end; records older than the oldest open window go into it and are counted as late. With a
live source the counter readings set the stream time (each reading's delta must find its windows still
open; the capture sends the records a reading covers before it), and records only LIVE_GRACE later.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from floodwatch.aggregate.budget import LIVE_GRACE
from floodwatch.aggregate.counters import BOUNDARY_SLACK, CounterTracker, Piece, window_index
from floodwatch.aggregate.geo import CountryLookup, KeyCountries, breakdown
from floodwatch.aggregate.keys import ADDR_VIEW
from floodwatch.aggregate.rollup import RunSummary, SecondRollup
from floodwatch.aggregate.sigsample import SignatureSampler
from floodwatch.aggregate.window import RecordTimes, WindowSpec, WindowStats, hh_rows
from floodwatch.messages import CounterSample, Message, PacketBatch, TrafficSummary
from floodwatch.records import RECORD_DTYPE
from floodwatch.settings.aggregator import AggregatorSettings

COALESCE = 2048  # records accounted together at most
# Live sources send counter readings: those close the windows (their deltas must land in windows still
# open); records close a window only when they are this much further on (a reading that never comes).
MAX_TS = 1e11  # timestamps are epoch seconds: anything past the year 5000 is corrupt
GEO_WINDOW = 256  # heaviest sources of a window looked up for its country breakdown
GEO_RUN = 1000
PUBLISHED_KEEP = 64  # published windows whose record times are kept for late counter readings


class BadBatch(ValueError):
    """A PacketBatch whose records do not match its count or the record size, or a nonsensical
    CounterSample (non-finite time, negative counters): refused, counted, nothing else changes."""


def spec_of(s: AggregatorSettings) -> WindowSpec:
    return WindowSpec(hll_p=s.hll_precision, capacity=s.window_capacity, buffer=s.buffer,
                      victim_rows=s.victim_rows, bidir_peers=s.bidir_peers,
                      signature_sample=s.signature_sample, top_n=s.top_n, victims=s.victims,
                      tls_ports=tuple(s.tls_ports))


class Engine:
    def __init__(self, settings: AggregatorSettings, sampler: SignatureSampler | None = None,
                 geo: CountryLookup | None = None) -> None:
        self.s = settings
        self.geo = geo
        self.geo_keys = KeyCountries(geo) if geo is not None else None  # the windows' lookups, cached by key
        self.width = settings.window
        self.per_second = round(1 / settings.window)
        self.spec = spec_of(settings)
        self.sampler = sampler or SignatureSampler(None)
        self.counters = CounterTracker(self.width)
        self.open: dict[int, WindowStats] = {}
        self.next_emit: int | None = None  # index of the oldest window not yet published
        self.watermark = -math.inf
        self.records_until: dict[str, float] = {}  # per interface: the newest record time so far
        self.published: dict[int, RecordTimes] = {}  # the last windows published, by index
        self.live = False  # counter readings arrive: they, not the records, close windows
        self.second: SecondRollup | None = None
        self.run = RunSummary(settings.run_capacity, settings.buffer, settings.hll_precision, settings.top_n)
        self.prev_peers = np.zeros(0, dtype=np.uint64)
        # the records of a window (and rate) are queued and accounted together when the window closes, or
        # at COALESCE records (the per-call numpy cost is fixed): once per window in a sampled flood, not
        # once per batch part; their times (slots) are counted at once, for the counter readings
        self._pend: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {}  # (window, rate) -> parts
        self._pend_n: dict[tuple[int, int], int] = {}
        self.stats = {"batches": 0, "records": 0, "bad_batches": 0, "late_records": 0, "windows": 0,
                      "late_counter_packets": 0}

    # -- input ---------------------------------------------------------------------------------------
    def feed_batch(self, batch: PacketBatch) -> list[Message]:
        """Account a batch; returns the windows (and seconds) it closed. BadBatch for bad records."""
        if batch.count == 0:  # a tick (the collector's, while no flow comes): stream time moves on
            if not 0 <= batch.t_last < MAX_TS or batch.records:
                self.stats["bad_batches"] += 1
                raise BadBatch(f"empty batch {batch.seq} from {batch.iface} with time {batch.t_last!r}")
            return self._advance(batch.t_last - (LIVE_GRACE if self.live else 0.0)) if batch.t_last else []
        if len(batch.records) != batch.count * RECORD_DTYPE.itemsize or batch.sample_rate < 1:
            self.stats["bad_batches"] += 1
            raise BadBatch(f"batch {batch.seq} from {batch.iface}: {len(batch.records)} bytes for "
                           f"{batch.count} records, sample rate {batch.sample_rate}")
        recs = np.frombuffer(batch.records, dtype=RECORD_DTYPE)
        addr = np.frombuffer(batch.records, dtype=ADDR_VIEW)
        self.stats["batches"] += 1
        self.stats["records"] += int(recs.size)
        ts = recs["ts"]
        if not (np.isfinite(ts).all() and ts.min() >= 0 and ts.max() < MAX_TS):
            self.stats["bad_batches"] += 1
            raise BadBatch(f"batch {batch.seq} from {batch.iface}: non-finite or out-of-range timestamps")
        self.records_until[batch.iface] = max(self.records_until.get(batch.iface, -math.inf), float(ts.max()))
        widx = np.floor((ts + BOUNDARY_SLACK) * self.per_second).astype(np.int64)
        grace = LIVE_GRACE if self.live else 0.0
        out = self._advance(float(ts.min()) - grace)  # windows this batch cannot touch any more are done
        lo, hi = int(widx.min()), int(widx.max())
        flows = batch.source == "collector"  # flow records weighted by their packets: not a packet sample
        if lo == hi:
            self._queue(lo, recs, addr, batch.sample_rate, flows)
        elif (step := np.diff(widx)).min() >= 0:  # in time order (a ring's records are): slices, no copies
            edges = [0, *(np.flatnonzero(step) + 1).tolist(), len(widx)]
            for a, b in itertools.pairwise(edges):
                self._queue(int(widx[a]), recs[a:b], addr[a:b], batch.sample_rate, flows)
                out += self._advance(float(ts[a:b].max()) - grace)
        else:
            order = np.argsort(widx, kind="stable")
            sw = widx[order]
            cuts = np.flatnonzero(sw[1:] != sw[:-1]) + 1
            for part in np.split(order, cuts):
                self._queue(int(widx[part[0]]), recs[part], addr[part], batch.sample_rate, flows)
                out += self._advance(float(ts[part].max()) - grace)
        out += self._advance(float(ts.max()) - grace)
        return out

    def feed_counters(self, sample: CounterSample) -> list[Message]:
        """Account one counter sample; BadBatch for a non-finite time or a negative counter."""
        values = (sample.rx_packets, sample.rx_bytes, sample.tx_packets, sample.tx_bytes,
                  sample.kernel_drops, sample.send_drops)
        if not 0 <= sample.ts < MAX_TS or min(values) < 0:
            self.stats["bad_batches"] += 1
            raise BadBatch(f"counter sample from {sample.iface}: bad time {sample.ts!r} or a negative counter")
        out: list[Message] = []
        self.live = True
        # records of another name than the counters (or none yet): taken as up to date
        until = self.records_until.get(sample.iface, math.inf)
        for piece in self.counters.feed(sample, self._records_between, until):
            self._add_counters(piece)
        out += self._advance(sample.ts)
        return out

    def finish(self) -> list[Message]:
        """End of stream: publish every open window, the last second and the whole-run summary."""
        out = self._close_until(None)
        if self.second is not None:
            out.append(self.second.to_message())
            self.second = None
        out.append(self.summary())
        return out

    def summary(self) -> TrafficSummary:
        msg = self.run.to_message()
        if self.geo is not None:
            msg.extra["geo"] = breakdown(self.geo, [(ip, c) for ip, c, _ in hh_rows(self.run.src, GEO_RUN)])
        msg.extra.update(counter_wraps=self.counters.wraps, counter_resets=self.counters.resets,
                         late_records=self.stats["late_records"])
        return msg

    # -- windows -------------------------------------------------------------------------------------
    def _window(self, index: int) -> WindowStats:
        if self.next_emit is None:
            self.next_emit = index
        if index < self.next_emit:
            index = self.next_emit  # late: the oldest open window takes it
        ws = self.open.get(index)
        if ws is None:
            # While the whole run's source count is still exact, a window may hold as many sources as
            # the run may: merged at close, the run stays exact up to run_capacity distinct sources.
            cap = self.s.run_capacity if self.run.src.exact else self.s.window_capacity
            ws = WindowStats(index, self.width, self.spec, self.sampler, src_capacity=cap)
            self.open[index] = ws
        return ws

    def _queue(self, index: int, recs: np.ndarray, addr: np.ndarray, rate: int, flows: bool = False) -> None:
        ws = self._window(index)
        ws.flow_weighted |= flows
        if ws.index != index:
            ws.add_late(int(recs.size))
            self.stats["late_records"] += int(recs.size)
        ws.add_times(recs, rate)
        key = (ws.index, rate)
        self._pend.setdefault(key, []).append((recs, addr))
        self._pend_n[key] = self._pend_n.get(key, 0) + int(recs.size)
        if self._pend_n[key] >= COALESCE:
            self._flush_key(key)

    def _flush(self, limit: int | None = None) -> None:
        """Account the queued records of the windows below `limit` (all when None), in queue order."""
        for key in [k for k in self._pend if limit is None or k[0] < limit]:
            self._flush_key(key)

    def _flush_key(self, key: tuple[int, int]) -> None:
        parts = self._pend.pop(key)
        del self._pend_n[key]
        if len(parts) == 1:
            recs, addr = parts[0]
        else:  # joined as bytes: np.concatenate of a structured dtype costs ~10x more
            recs = np.frombuffer(b"".join([p[0].tobytes() for p in parts]), dtype=RECORD_DTYPE)
            addr = np.frombuffer(recs.data, dtype=ADDR_VIEW)
        self.open[key[0]].add(recs, addr, key[1], self.prev_peers)

    def _records_between(self, index: int, a: float, b: float) -> tuple[float, float] | None:
        """Records of window `index` in (a, b]: None for a window published too long ago to know."""
        if self.next_emit is not None and index < self.next_emit:
            times = self.published.get(index)
            return times.records_between(a, b) if times is not None else None
        ws = self.open.get(index)
        return ws.records_between(a, b) if ws is not None else (0.0, 0.0)

    def _add_counters(self, piece: Piece) -> None:
        if self.next_emit is not None and piece.window < self.next_emit:
            # a reading that came late (capture starved): that window went out with its records' count;
            # adding its share to the next open window would count those packets twice
            self.stats["late_counter_packets"] += piece.values["rx_packets"]
            return
        ws = self._window(piece.window)
        c, v = ws.counters, piece.values
        c.present = True
        c.rx_packets += v["rx_packets"]
        c.rx_bytes += v["rx_bytes"]
        c.tx_packets += v["tx_packets"]
        c.tx_bytes += v["tx_bytes"]
        c.kernel_drops += v["kernel_drops"]
        c.extra["send_drops"] = c.extra.get("send_drops", 0) + v["send_drops"]
        c.conn_count = self.counters.conn_count

    def _advance(self, t: float) -> list[Message]:
        self.watermark = max(self.watermark, t)
        limit = window_index(self.watermark - self.s.lateness, self.width)  # windows below it are done
        return self._close_until(limit)

    def _close_until(self, limit: int | None) -> list[Message]:
        self._flush(limit)
        out: list[Message] = []
        max_empty = round(self.s.max_gap / self.width)
        while self.next_emit is not None and self.open and (limit is None or self.next_emit < limit):
            ws = self.open.pop(self.next_emit, None)
            if ws is None:  # a gap: publish up to max_gap of empty windows, then jump to the next data
                nxt = min(self.open)
                stop = nxt if limit is None else min(nxt, limit)
                for i in range(self.next_emit, min(stop, self.next_emit + max_empty)):
                    out += self._emit(WindowStats(i, self.width, self.spec, self.sampler))
                self.next_emit = stop if stop - self.next_emit <= max_empty else nxt
                continue
            out += self._emit(ws)
            self.next_emit += 1
        if self.next_emit is not None and not self.open and limit is not None and limit > self.next_emit:
            for i in range(self.next_emit, min(limit, self.next_emit + max_empty)):
                out += self._emit(WindowStats(i, self.width, self.spec, self.sampler))
            self.next_emit = limit
        return out

    def _emit(self, ws: WindowStats) -> list[Message]:
        out: list[Message] = []
        msg = ws.to_message(self.geo_keys, GEO_WINDOW)
        self.stats["windows"] += 1
        self.published[ws.index] = ws.times()
        if len(self.published) > PUBLISHED_KEEP:
            del self.published[min(self.published)]
        self.run.add(ws, msg)
        self.prev_peers = ws.out_peers
        sec = ws.index // self.per_second
        if self.second is not None and self.second.index != sec:
            out.append(self.second.to_message())
            self.second = None
        if self.second is None:
            self.second = SecondRollup(sec, self.s.hll_precision)
        self.second.add(msg)
        out.append(msg)
        return out
