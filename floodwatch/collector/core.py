"""The collector's pure logic: datagrams in, PacketBatch / FrameBatch out (no sockets, injected clock).

`Collector.feed(proto, data, exporter, ts)` takes one datagram ("sflow" or "flow" for NetFlow v5/v9 and
IPFIX); `flush_due()` / `flush_all()` hand the batches to `send(msg, channel)`. Rows are the records
capture makes (floodwatch.records), stamped with the arrival time and weighted by the sampling rate
(floodwatch.collector.flows), with the direction from `networks`: to a protected network = in, from one
= out, neither = ignored. Every datagram that cannot be used is counted by reason, never raised.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import numpy as np

from floodwatch.capture.batch import Directions, FrameBudget, RecordBatch
from floodwatch.collector.flows import Flows, base_rows, distinct, sane, weighted_rows
from floodwatch.collector.ifcounters import InterfaceTable
from floodwatch.collector.netflow import FlowDecoder
from floodwatch.collector.seenby import SeenBy
from floodwatch.collector.sflow import SflowBatch, decode_sflow, sflow_rows
from floodwatch.collector.templates import TemplateCache
from floodwatch.errors import BadDatagram
from floodwatch.messages import ExporterTraffic, FrameBatch, Message, PacketBatch
from floodwatch.records import DIR_OUT, DIR_UNKNOWN, RECORD_DTYPE, opaque
from floodwatch.settings.collector import CollectorSettings

Send = Callable[[Message, str], bool]
MAX_BUCKETS = 64  # sample-rate batches open at once
EXPORTER_MEMO = 4096
SFLOW_BATCH = 8192  # sFlow samples parsed together at most
FLOW_BATCH = 8192  # flow records decoded together at most


class Collector:
    def __init__(self, s: CollectorSettings, send: Send, clock: Callable[[], float]) -> None:
        self.s = s
        self.send = send
        self.clock = clock
        self.allowed = [ipaddress.ip_network(e, strict=False) for e in s.exporters]
        self.networks = Directions(s.networks)
        self.default_rate = s.sampling.get("default", 1)
        self.flows = FlowDecoder(TemplateCache(s.max_templates, s.template_timeout, s.pending_sets,
                                               s.pending_seconds))
        self.sflow = SflowBatch()
        self.sflow_ts = 0.0
        self.exporter_names: list[str] = []  # index -> exporter address (sFlow rows carry the index)
        self._exporter_idx: dict[str, int] = {}
        self._allowed_memo: dict[str, bool] = {}
        self.buckets: dict[int, RecordBatch] = {}
        self.born: dict[int, float] = {}
        self.seq = 0
        self.budget = FrameBudget(s.frames_per_second, clock)
        self.exporter_datagrams: list[int] = []  # datagrams of each exporter, by index
        self.seen = SeenBy()  # exporter -> victim packets since the last ExporterTraffic
        self.interfaces = InterfaceTable()  # sFlow counter samples: each exporter's interfaces
        self.counters = {"datagrams": 0, "not_allowed": 0, "malformed": 0, "bad_sampling": 0, "bad_samples": 0,
                         "counter_samples": 0, "counter_records_bad": 0, "other_samples": 0,
                         "bad_lengths": 0, "flows": 0, "samples": 0, "ignored": 0, "records": 0,
                         "batches": 0, "batches_dropped": 0, "frames": 0, "frames_dropped": 0}

    # -- input -----------------------------------------------------------------------------------
    def feed(self, proto: str, data: bytes, exporter: str, ts: float) -> None:
        self.counters["datagrams"] += 1
        idx = self._exporter_idx.get(exporter)
        if idx is None:
            if not self._allowed(exporter):
                self.counters["not_allowed"] += 1
                return
            idx = self._new_exporter(exporter)
        if idx >= 0:
            self.exporter_datagrams[idx] += 1
        try:
            if proto == "sflow":
                decode_sflow(data, self.sflow, idx)
                self.sflow_ts = ts
                if self.sflow.samples >= SFLOW_BATCH:
                    self.parse_sflow()
            else:
                rate = self.s.sampling.get(exporter, self.default_rate)
                self.flows.decode(data, exporter, rate, ts, idx)
                if self.flows.queued >= FLOW_BATCH:
                    self.decode_flows()
        except BadDatagram:
            self.counters["malformed"] += 1
        except (ValueError, IndexError, OverflowError):  # numpy on a lying length: malformed too
            self.counters["malformed"] += 1

    def _allowed(self, exporter: str) -> bool:
        if not self.allowed:
            return True
        ok = self._allowed_memo.get(exporter)
        if ok is None:
            try:
                ip = ipaddress.ip_address(exporter)
                ok = any(ip in net for net in self.allowed)
            except ValueError:
                ok = False
            if len(self._allowed_memo) >= EXPORTER_MEMO:
                self._allowed_memo.clear()
            self._allowed_memo[exporter] = ok
        return ok

    def _new_exporter(self, exporter: str) -> int:
        """An allowed exporter's index in exporter_names (rows carry it); past EXPORTER_MEMO exporters, -1."""
        if len(self.exporter_names) >= EXPORTER_MEMO:
            return -1
        idx = self._exporter_idx[exporter] = len(self.exporter_names)
        self.exporter_names.append(exporter)
        self.exporter_datagrams.append(0)
        return idx

    @property
    def exporters_seen(self) -> dict[str, int]:
        """Exporter -> datagrams (the first EXPORTER_MEMO exporters)."""
        return dict(zip(self.exporter_names, self.exporter_datagrams, strict=True))

    def parse_sflow(self) -> None:
        """Walk and parse the datagrams gathered so far (many at once) into records."""
        batch, self.sflow = self.sflow, SflowBatch()
        if not len(batch.dgrams):
            return
        rows, cols = sflow_rows(batch, self.s.max_sampling_rate)
        for name in ("malformed", "bad_samples", "counter_samples", "other_samples"):
            self.counters[name] += getattr(batch, name)
        self.counters["bad_sampling"] += batch.bad_rate
        self.counters["counter_records_bad"] += batch.interfaces.bad
        self.interfaces.add(batch.interfaces)
        self.counters["samples"] += len(rows)
        rows["ts"] = self.sflow_ts
        keep = self._direct(rows)
        rate = cols["rate"]
        inbound = keep & (rows["direction"] != DIR_OUT)
        self.seen.add_columns(cols["exporter"][inbound], rows["dst"][inbound].view(np.uint8).reshape(-1, 16),
                              rate[inbound])
        if self.s.frames_per_second:
            self._frames(batch.buf, cols, self.sflow_ts, keep)
        raw = opaque(rows)
        for r in distinct(rate[keep]):
            self._emit(int(r), raw[keep & (rate == r)].view(RECORD_DTYPE))

    def decode_flows(self) -> None:
        """Decode the queued flow records (many datagrams at once) into records."""
        parts = self.flows.drain()
        if parts:
            self._add_flows(Flows.concat(parts))

    def _add_flows(self, flows: Flows) -> None:
        flows, bad_rate, bad_len = sane(flows, self.s.max_sampling_rate)
        self.counters["bad_sampling"] += bad_rate
        self.counters["bad_lengths"] += bad_len
        self.counters["flows"] += len(flows)
        direction: np.ndarray | int = DIR_UNKNOWN
        if self.networks:  # per flow, before a flow becomes several rows
            direction = self.networks.of(flows.src, flows.dst)
            keep = direction != DIR_UNKNOWN
            kept = int(keep.sum())
            if kept < len(flows):
                self.counters["ignored"] += len(flows) - kept
                flows, direction = flows.take(keep), direction[keep]
        total = flows.packets * flows.rate
        inbound = direction != DIR_OUT if isinstance(direction, np.ndarray) else slice(None)
        self.seen.add_columns(flows.exporter[inbound], flows.dst[inbound], total[inbound])
        for rate, rows in weighted_rows(base_rows(flows, direction), total):
            self._emit(rate, rows)

    def _direct(self, rows: np.ndarray) -> np.ndarray:
        """Set directions from the protected networks; the mask of rows to keep."""
        if not self.networks:
            return np.ones(len(rows), dtype=bool)
        self.networks.apply(rows)
        keep = rows["direction"] != DIR_UNKNOWN
        self.counters["ignored"] += int(len(rows) - keep.sum())
        return keep

    # -- output ----------------------------------------------------------------------------------
    def _emit(self, rate: int, rows: np.ndarray) -> None:
        if not len(rows):
            return
        batch = self.buckets.get(rate)
        if batch is None:
            if len(self.buckets) >= MAX_BUCKETS:
                self.flush_all()
                self.buckets.clear()
            batch = self.buckets[rate] = RecordBatch(self.s.batch_records)
        done = 0
        while done < len(rows):
            if batch.n == 0:
                self.born[rate] = self.clock()
            done += batch.extend(rows[done:])
            if batch.full():
                self._flush(rate)

    def _flush(self, rate: int) -> None:
        batch = self.buckets[rate]
        if batch.n == 0:
            return
        n, t_first, t_last = batch.n, batch.t_first, batch.t_last
        msg = PacketBatch(source="collector", iface="collector", seq=self.seq, sample_rate=rate, count=n,
                          records=batch.take(), t_first=t_first, t_last=t_last)
        self.seq += 1
        self.counters["records"] += n
        self.counters["batches" if self.send(msg, "packets") else "batches_dropped"] += 1

    def flush_due(self) -> None:
        self.parse_sflow()
        self.decode_flows()
        now = self.clock()
        for rate, batch in self.buckets.items():
            if batch.n and now - self.born[rate] >= self.s.batch_interval:
                self._flush(rate)

    def flush_all(self) -> None:
        self.parse_sflow()
        self.decode_flows()
        for rate in list(self.buckets):
            self._flush(rate)

    def tick(self, now: float) -> None:
        """Tell the aggregator the stream time (wall clock) when no flow came: its windows close on time."""
        self.flush_all()
        self.publish_seen(now)
        msg = PacketBatch(source="collector", iface="collector", seq=self.seq, sample_rate=1, count=0,
                          records=b"", t_first=now, t_last=now)
        self.seq += 1
        self.send(msg, "packets")

    def publish_seen(self, now: float) -> None:
        """The exporter -> victim pairs seen since the last call, as one ExporterTraffic (if any)."""
        pairs = self.seen.take(self.exporter_names)
        if pairs:
            self.send(ExporterTraffic(ts=now, pairs=pairs), "events")

    def due_in_ms(self) -> float:
        born = [self.born[r] for r, b in self.buckets.items() if b.n]
        if len(self.sflow.dgrams) or self.flows.queued:
            return 0.0
        if not born:
            return 1000.0
        return max(0.0, (min(born) + self.s.batch_interval - self.clock()) * 1000)

    def _frames(self, buf: bytes, cols: dict[str, np.ndarray], ts: float, keep: np.ndarray) -> None:
        """The raw headers as captured frames for the recorder, under the frame budget."""
        idx = np.flatnonzero(keep)
        k = self.budget.take(len(idx))
        groups: dict[tuple[int, int], list[list[object]]] = {}
        for i in idx[:k].tolist():
            off, cap = int(cols["off"][i]), int(cols["cap"][i])
            key = (int(cols["link"][i]), int(cols["rate"][i]))
            groups.setdefault(key, []).append([ts, int(cols["wire"][i]), buf[off : off + cap]])
        for (link, rate), frames in groups.items():
            msg = FrameBatch(iface="collector", linktype=link, sample_rate=rate, frames=frames)
            self.counters["frames" if self.send(msg, "frames") else "frames_dropped"] += len(frames)
