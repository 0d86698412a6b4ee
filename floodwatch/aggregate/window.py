"""One 100 ms window: vectorised accumulation of record batches, and its TrafficWindow message.

`WindowStats.add(recs, addr, rate)` takes a slice of a PacketBatch (numpy structured arrays) and does a
fixed number of numpy operations on it: bincounts for protocols, flags, fragments, sizes and TTLs,
HyperLogLog and heavy-hitter updates for addresses, dense arrays for ports. No Python loop per packet.
Counts are scaled by the batch's sample rate; DIR_UNKNOWN counts as inbound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from typing import Any, ClassVar

import numpy as np

from floodwatch.aggregate.features import (
    FLAG_LUT,
    FLAG_NAMES,
    PROTO_LUT,
    PROTO_NAMES,
    SIZE_EDGES,
    SIZE_NAMES,
)
from floodwatch.aggregate.geo import KeyCountries
from floodwatch.aggregate.hll import HyperLogLog
from floodwatch.aggregate.keys import addr_keys, fmix64, key_texts
from floodwatch.aggregate.sigsample import SignatureSampler
from floodwatch.aggregate.spacesaving import HeavyHitters
from floodwatch.aggregate.tls import HelloCounts
from floodwatch.aggregate.victims import VictimTable
from floodwatch.messages import TrafficWindow
from floodwatch.records import DIR_OUT, FRAG_LATER, PROTO_TCP

PORT_SPACE = 2 * 65536  # index = (0 tcp | 1 udp) * 65536 + port


@dataclass(frozen=True)
class WindowSpec:
    """The sizes of one window's structures (from AggregatorSettings)."""

    hll_p: int = 12
    capacity: int = 1024
    buffer: int = 16384
    victim_rows: int = 32
    bidir_peers: int = 65536
    signature_sample: int = 512
    top_n: int = 10
    victims: int = 10
    tls_ports: tuple[int, ...] = (443, 8443)


@dataclass
class CounterTotals:
    """Exact kernel counter deltas attributed to a window."""

    present: bool = False
    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    kernel_drops: int = 0
    conn_count: int = -1
    extra: dict[str, int] = field(default_factory=dict)


class PortCounts:
    """Exact packets per (protocol, port) of one window in a dense array taken from a small pool (no
    allocation per window). The indexes touched are remembered (up to SCAN_AFTER of them, else the
    array is scanned), so a quiet window costs no scan of the whole array; `release()` clears the
    touched entries and gives the array back."""

    _pool: ClassVar[list[np.ndarray]] = []
    POOL_MAX = 16
    SCAN_AFTER = 65536

    def __init__(self) -> None:
        self.dense: np.ndarray | None = None
        self._parts: list[np.ndarray] = []
        self._seen = 0
        self._nz: np.ndarray | None = None

    def add(self, idx: np.ndarray, rate: int) -> None:
        if self.dense is None:
            self.dense = self._pool.pop() if self._pool else np.zeros(PORT_SPACE, dtype=np.int64)
        np.add.at(self.dense, idx, rate)
        self._nz = None
        self._seen += idx.size
        if self._seen <= self.SCAN_AFTER:
            self._parts.append(idx)
        else:
            self._parts = []

    def _nonzero(self) -> np.ndarray:
        if self.dense is None:
            return np.zeros(0, dtype=np.intp)
        if self._nz is None:
            if self._seen <= self.SCAN_AFTER:
                self._nz = distinct(np.concatenate(self._parts).astype(np.intp))
            else:
                self._nz = np.flatnonzero(self.dense)
        return self._nz

    def touched(self) -> tuple[np.ndarray, np.ndarray]:
        nz = self._nonzero()
        return nz, (self.dense[nz] if self.dense is not None else np.zeros(0, dtype=np.int64))

    def top(self, n: int) -> list[list[Any]]:
        nz, counts = self.touched()
        return _top_of(nz, counts, n)

    def release(self) -> None:
        if self.dense is not None:
            self.dense[self._nonzero()] = 0
            if len(self._pool) < self.POOL_MAX:
                self._pool.append(self.dense)
        self.__init__()  # type: ignore[misc]


def top_ports(dense: np.ndarray, n: int) -> list[list[Any]]:
    """Dense port counts -> [[proto, port, packets], ...] by packets descending, then index."""
    nz = np.flatnonzero(dense)
    return _top_of(nz, dense[nz], n)


def _top_of(idx: np.ndarray, counts: np.ndarray, n: int) -> list[list[Any]]:
    if idx.size == 0:
        return []
    order = np.lexsort((idx, -counts))[:n]
    return [[PROTO_NAMES[i // 65536], int(i % 65536), int(c)]
            for i, c in zip(idx[order].tolist(), counts[order].tolist(), strict=True)]


def hh_rows(hh: HeavyHitters, n: int) -> list[tuple[str, int, list[int]]]:
    """Heavy-hitter table -> [(ip text, count, aux...)] for the top n."""
    return _rows(*hh.top(n))


def _rows(keys: np.ndarray, counts: np.ndarray, payload: np.ndarray,
          aux: np.ndarray) -> list[tuple[str, int, list[int]]]:
    # one tolist() per array, not numpy scalars per row: a window's top lists are built ten times a second
    return list(zip(_texts(keys, payload), counts.tolist(), aux.tolist(), strict=True))


def _texts(keys: np.ndarray, payload: np.ndarray, idx: np.ndarray | slice | None = None) -> list[str]:
    """The address texts of (some rows of) a heavy-hitter top list; IPv6 keys' texts from their payload."""
    if idx is not None:
        keys, payload = keys[idx], payload[idx]
    return key_texts(keys, payload if payload.shape[1] else None)


@dataclass(frozen=True)
class RecordTimes:
    """When a window's records came (scaled records per tenth of the window, in and out): kept a while
    after the window is published, to place counter deltas that arrive late."""

    t_start: float
    t_end: float
    slots: np.ndarray

    def records_between(self, a: float, b: float) -> tuple[float, float]:
        """(inbound, outbound) scaled records with a time in (a, b], slots prorated."""
        width = (self.t_end - self.t_start) / SLOTS
        got = [0.0, 0.0]
        for k in range(SLOTS):
            lo = self.t_start + k * width
            share = (min(b, lo + width) - max(a, lo)) / width
            if share > 0:
                got[0] += float(self.slots[k]) * min(share, 1.0)
                got[1] += float(self.slots[SLOTS + k]) * min(share, 1.0)
        return got[0], got[1]


_EMPTY: dict[WindowSpec, dict[str, Any]] = {}  # the fields of an empty window's message, per spec
_MUTABLE = tuple(f.name for f in dataclass_fields(TrafficWindow) if str(f.type).startswith(("dict", "list")))
SLOTS = 10  # a window's records are also counted by tenth of the window, to place counter deltas in time
_NO_SLOTS = np.zeros(2 * SLOTS, dtype=np.int64)  # the record times of a window without records (read only)
_NO_SLOTS.flags.writeable = False
_NO_PEERS = np.zeros(0, dtype=np.uint64)  # no outbound peers (arrays of peers are replaced, never changed)
_NO_PEERS.flags.writeable = False


class WindowStats:
    """One window's accumulators. Most windows of an idle link get no record (ten a second, each at most
    a counter delta): their record structures (arrays, sketches, heavy hitters, victims, signatures) are
    made only when the first record comes (`_grow`); until then a window is a few scalars."""

    def __init__(self, index: int, width: float, spec: WindowSpec, sampler: SignatureSampler,
                 src_capacity: int = 0) -> None:
        self.index = index
        per_second = round(1 / width)
        self.t_start = index / per_second
        self.t_end = (index + 1) / per_second
        self.spec = spec
        self.sampler = sampler
        self.src_capacity = src_capacity
        self.grown = False
        self.sampled = 0
        self.sampled_src = 0  # inbound records with an IP header: the sample the source sketch holds ...
        self.flow_weighted = False  # ... unless some were flow records (the collector's): not told then
        self.t_first = 0.0  # first and last record time
        self.t_last = 0.0
        self.malformed = 0
        self.malformed_in = 0  # inbound, with no parseable IP header
        self.late = 0
        self.t_half = (self.t_start + self.t_end) / 2
        self.bidir = 0
        self.out_peers = _NO_PEERS
        self.peers_full = False
        self.counters = CounterTotals()

    def _grow(self) -> None:
        """The record structures, made at the window's first record."""
        spec = self.spec
        self.grown = True
        self.packets = np.zeros(2, dtype=np.int64)  # [in, out], scaled records
        self.bytes = np.zeros(2, dtype=np.int64)
        self.proto = np.zeros(8, dtype=np.int64)  # dir * 4 + protocol index
        self.ipver = np.zeros(8, dtype=np.int64)  # inbound by IP version
        self.ipproto = np.zeros(256, dtype=np.int64)  # both directions, by IP protocol number
        self.flags = np.zeros(len(FLAG_NAMES), dtype=np.int64)
        self.frag = np.zeros(3, dtype=np.int64)
        self.size = np.zeros(len(SIZE_NAMES), dtype=np.int64)
        self.ttl = np.zeros(256, dtype=np.int64)
        self.slots = np.zeros(2 * SLOTS, dtype=np.int64)  # [in x SLOTS, out x SLOTS] scaled records by time
        self.tail = np.zeros(2, dtype=np.int64)  # inbound [packets, bytes] at or after t_half, scaled
        self.src_hll = HyperLogLog(spec.hll_p)
        self.src = HeavyHitters(self.src_capacity or spec.capacity, spec.buffer, payload_width=2)
        self.dst = HeavyHitters(spec.capacity, spec.buffer, payload_width=2, aux=1)
        self.sport = PortCounts()  # exact: one counter per (protocol, port)
        self.dport = PortCounts()
        self.victims = VictimTable(spec.victim_rows)
        self.sigs = self.sampler.window(spec.signature_sample)
        self.hellos = HelloCounts(spec.tls_ports)

    def add_times(self, recs: np.ndarray, rate: int) -> None:
        """When records of this window (sampled 1 in `rate`) came, by tenth of the window: counted as they
        arrive (counter readings are placed by them), the rest of each record later, by add()."""
        if not self.grown:
            self._grow()
        d = (recs["direction"] == DIR_OUT).astype(np.intp)
        slot = ((recs["ts"] - self.t_start) * (SLOTS / (self.t_end - self.t_start))).astype(np.intp)
        np.minimum(np.maximum(slot, 0, out=slot), SLOTS - 1, out=slot)  # np.clip, without its Python wrapper
        self.slots += np.bincount(d * SLOTS + slot, minlength=2 * SLOTS) * rate

    def add(self, recs: np.ndarray, addr: np.ndarray, rate: int, prev_peers: np.ndarray) -> None:
        """Account records of this window sampled 1 in `rate` (all but their times: add_times)."""
        if not self.grown:
            self._grow()
        n = int(recs.size)
        self.sampled += n
        out = recs["direction"] == DIR_OUT
        d = out.astype(np.intp)
        pidx = PROTO_LUT[recs["proto"]]
        self.packets += np.bincount(d, minlength=2) * rate
        self.bytes += np.bincount(d, weights=recs["wirelen"], minlength=2).astype(np.int64) * rate
        self.proto += np.bincount(d * 4 + pidx, minlength=8) * rate
        self.malformed += int(np.count_nonzero(recs["malformed"])) * rate
        ts = recs["ts"]
        self.t_first = min(self.t_first, float(ts.min())) if self.t_first else float(ts.min())
        self.t_last = max(self.t_last, float(ts.max()))
        if self.t_last >= self.t_half:
            tail = (ts >= self.t_half) & ~out
            self.tail += (int(np.count_nonzero(tail)) * rate, int(recs["wirelen"][tail].sum()) * rate)
        ip = recs["ipver"] != 0
        self.ipproto += np.bincount(recs["proto"][ip], minlength=256) * rate
        if out.any():
            self._add_out(recs[out & ip], addr[out & ip])
            inb = ~out
            recs, addr, pidx, ip = recs[inb], addr[inb], pidx[inb], ip[inb]
        self._add_in(recs, addr, pidx, ip, rate, prev_peers)

    def _add_in(self, recs: np.ndarray, addr: np.ndarray, pidx: np.ndarray, ip: np.ndarray, rate: int,
                prev_peers: np.ndarray) -> None:
        if recs.size == 0:
            return
        self.ipver += np.bincount(recs["ipver"], minlength=8)[:8] * rate
        self.frag += np.bincount(recs["frag"], minlength=3)[:3] * rate
        self.size += np.bincount(np.searchsorted(SIZE_EDGES, recs["wirelen"], side="right") - 1,
                                 minlength=len(SIZE_NAMES)) * rate
        if not ip.all():
            self.malformed_in += int(np.count_nonzero(recs["malformed"][~ip])) * rate
            recs, addr, pidx = recs[ip], addr[ip], pidx[ip]
        self.sampled_src += int(recs.size)
        self.ttl += np.bincount(recs["ttl"], minlength=256) * rate
        tcp = recs["proto"] == PROTO_TCP
        fidx = np.where(tcp, FLAG_LUT[recs["flags"]], 255).astype(np.intp)
        self.flags += np.bincount(fidx[tcp], minlength=len(FLAG_NAMES)) * rate
        skeys = addr_keys(addr["src_hi"], addr["src_lo"])
        dkeys = addr_keys(addr["dst_hi"], addr["dst_lo"])
        shash = fmix64(skeys)  # one hash for the window's and the victims' source sketches
        self.src_hll.add_hashed(shash)
        shalves = self._halves(addr, "src", skeys)
        self.src.update(skeys, rate, shalves)
        self.hellos.add(recs, skeys, shalves, rate)
        group = group_keys(dkeys)
        dbytes = np.bincount(group[2], weights=recs["wirelen"], minlength=group[0].size).astype(np.int64)
        first = addr[group[1]]
        dhalves = np.stack((first["dst_hi"], first["dst_lo"]), axis=1).astype(np.uint64)  # per destination
        self.dst.update(group[0], group[3] * rate, dhalves, dbytes.reshape(-1, 1) * rate)
        l4 = (pidx <= 1) & (recs["frag"] != FRAG_LATER)  # later fragments carry no ports
        if l4.any():
            base = pidx[l4].astype(np.intp) * 65536
            self.sport.add(base + recs["sport"][l4], rate)
            self.dport.add(base + recs["dport"][l4], rate)
        cols = {"wirelen": recs["wirelen"], "pidx": pidx, "fidx": fidx, "shash": shash, "sport": recs["sport"],
                "l4": l4}
        self.victims.add(group, dhalves, cols, rate)
        self.sigs.add(recs, rate)
        if tcp.any() and (self.out_peers.size or prev_peers.size):
            self.bidir += (_member(skeys[tcp], self.out_peers) | _member(skeys[tcp], prev_peers)).sum() * rate

    @staticmethod
    def _halves(addr: np.ndarray, side: str, keys: np.ndarray) -> np.ndarray | None:
        """The address halves, only when some address is IPv6 (IPv4 keys carry their address)."""
        if not (keys >> np.uint64(63)).any():
            return None
        return np.stack((addr[f"{side}_hi"], addr[f"{side}_lo"]), axis=1).astype(np.uint64)

    def _add_out(self, recs: np.ndarray, addr: np.ndarray) -> None:
        if recs.size == 0 or self.peers_full:
            return
        keys = distinct(addr_keys(addr["dst_hi"], addr["dst_lo"]))
        new = keys[~_member(keys, self.out_peers)]
        room = self.spec.bidir_peers - self.out_peers.size
        if new.size > room:
            new, self.peers_full = new[:room], True
        if new.size:
            self.out_peers = np.insert(self.out_peers, np.searchsorted(self.out_peers, new), new)

    def records_between(self, a: float, b: float) -> tuple[float, float]:
        """(inbound, outbound) scaled records of this window with a time in (a, b], slots prorated."""
        return self.times().records_between(a, b)

    def times(self) -> RecordTimes:
        return RecordTimes(self.t_start, self.t_end, self.slots if self.grown else _NO_SLOTS)

    def add_late(self, count: int) -> None:
        self.late += count

    def to_message(self, geo: KeyCountries | None = None, geo_rows: int = 0) -> TrafficWindow:
        """The window's message; with `geo`, the countries of its `geo_rows` heaviest sources (the top
        list is the head of those rows: the table is ranked once)."""
        if not self.has_records():
            return self._empty_message()
        return self._full_message(geo, geo_rows)

    def has_records(self) -> bool:
        """False for a window no record reached (late ones included): its record-derived fields are all
        empty (an idle link's ten windows a second)."""
        return self.sampled != 0 or self.late != 0

    def _empty_message(self) -> TrafficWindow:
        """A window without records (an idle link: ten a second): the record-derived fields of an empty
        window are the same every time, so they are built once per spec and copied."""
        template = _EMPTY.get(self.spec)
        if template is None:
            empty = WindowStats(0, 1.0, self.spec, SignatureSampler(None))
            template = _EMPTY[self.spec] = dict(empty._full_message().__dict__)
        c = self.counters
        msg = object.__new__(TrafficWindow)  # a copy of the template without the constructor's checks
        fields = msg.__dict__
        fields.update(template)
        for k in _MUTABLE:  # each message its own containers (readers may fold into them)
            fields[k] = template[k].copy()
        fields.update(t_start=self.t_start, t_end=self.t_end, exact=c.present,
                      packets_in=c.rx_packets if c.present else 0, bytes_in=c.rx_bytes if c.present else 0,
                      packets_out=c.tx_packets if c.present else 0, bytes_out=c.tx_bytes if c.present else 0,
                      kernel_drops=c.kernel_drops, conn_count=c.conn_count,
                      extra={**template["extra"], "ip_protocols": {}, **c.extra})
        return msg

    def _full_message(self, geo: KeyCountries | None = None, geo_rows: int = 0) -> TrafficWindow:
        if not self.grown:
            self._grow()
        c = self.counters
        top_n = self.spec.top_n
        keys, counts, payload, aux = self.src.top(max(top_n, geo_rows if geo is not None else 0))
        src_rows = _rows(keys[:top_n], counts[:top_n], payload[:top_n], aux[:top_n])
        geo_map = {} if geo is None or not geo_rows else \
            geo.breakdown(keys[:geo_rows], counts[:geo_rows], lambda i: _texts(keys, payload, i))
        scaled = int(self.packets.sum())
        exact = c.present
        src_distinct = len(self.src) if self.src.exact else self.src_hll.estimate()
        return TrafficWindow(
            t_start=self.t_start,
            t_end=self.t_end,
            exact=exact,
            sample_rate=(scaled / self.sampled) if self.sampled else 1.0,
            packets_in=c.rx_packets if exact else int(self.packets[0]),
            bytes_in=c.rx_bytes if exact else int(self.bytes[0]),
            packets_out=c.tx_packets if exact else int(self.packets[1]),
            bytes_out=c.tx_bytes if exact else int(self.bytes[1]),
            sampled=self.sampled,
            proto_in=_named(self.proto[:4], PROTO_NAMES),
            proto_out=_named(self.proto[4:], PROTO_NAMES),
            ipver_in={"4": int(self.ipver[4]), "6": int(self.ipver[6])},
            tcp_flags=_named(self.flags, FLAG_NAMES),
            fragments={"first": int(self.frag[1]), "later": int(self.frag[2])},
            size_hist=_named(self.size, SIZE_NAMES),
            ttl_hist={int(t): int(self.ttl[t]) for t in np.flatnonzero(self.ttl).tolist()},
            src_distinct=src_distinct,
            src_hll=self.src_hll.to_bytes(),
            top_src_ips=[[ip, cnt] for ip, cnt, _ in src_rows],
            top_dst_ips=[[ip, cnt, aux[0]] for ip, cnt, aux in hh_rows(self.dst, self.spec.top_n)],
            top_src_ports=self.sport.top(self.spec.top_n),
            top_dst_ports=self.dport.top(self.spec.top_n),
            victims=self.victims.top(self.spec.victims),
            signatures=self.sigs.result(),
            bidir_packets=int(self.bidir),
            malformed=self.malformed,
            malformed_in=self.malformed_in,
            kernel_drops=c.kernel_drops,
            conn_count=c.conn_count,
            tail_packets_in=int(self.tail[0]),
            tail_bytes_in=int(self.tail[1]),
            records_packets_in=int(self.packets[0]),
            records_bytes_in=int(self.bytes[0]),
            records_packets_out=int(self.packets[1]),
            records_bytes_out=int(self.bytes[1]),
            tls_hellos=self.hellos.total,
            top_tls_src=[] if self.hellos.src is None else
            [[ip, cnt] for ip, cnt, _ in hh_rows(self.hellos.src, self.spec.top_n)],
            sampled_src=0 if self.flow_weighted else self.sampled_src,
            geo=geo_map,
            extra=self._extra(),
        )

    def _extra(self) -> dict[str, Any]:
        return {
            "ip_protocols": {int(p): int(self.ipproto[p]) for p in np.flatnonzero(self.ipproto).tolist()},
            "src_exact": self.src.exact,
            "late_records": self.late,
            "bidir_peers_full": self.peers_full,
            "victim_evictions": self.victims.evictions,
            "signature_checked": self.sigs.checked,
            **self.counters.extra,
        }


def _named(counts: np.ndarray, names: tuple[str, ...]) -> dict[str, int]:
    return {name: int(c) for name, c in zip(names, counts.tolist(), strict=False)}


GROUP_FEW = 4  # destinations told apart by comparisons (one pass each) before np.unique's sort


def group_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """np.unique(keys, return_index=True, return_inverse=True, return_counts=True) of a 1-d array, with
    the flood's usual cases (every record to one destination, or to the host's few addresses) answered
    by comparisons without a sort."""
    if keys.size and (keys == keys[0]).all():
        return keys[:1], np.zeros(1, dtype=np.intp), np.zeros(keys.size, dtype=np.intp), \
            np.array([keys.size], dtype=np.intp)
    values: list[Any] = []
    rest = keys
    while rest.size:
        if len(values) == GROUP_FEW:
            return np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
        values.append(rest[0])
        rest = rest[rest != rest[0]]
    uniq = np.sort(np.array(values, dtype=keys.dtype))
    inverse = np.searchsorted(uniq, keys)
    first = np.array([int(np.argmax(inverse == i)) for i in range(uniq.size)], dtype=np.intp)
    return uniq, first, inverse, np.bincount(inverse, minlength=uniq.size)


def distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of a 1-d array: np.unique by a sort (numpy 2's hashing np.unique
    costs ~5x more on the few thousand integers of a window)."""
    s = np.sort(values)
    if s.size < 2:
        return s
    return s[np.concatenate(([True], s[1:] != s[:-1]))]


def _member(keys: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """keys in a sorted uint64 array, by binary search (no sort of the set)."""
    if sorted_set.size == 0:
        return np.zeros(keys.size, dtype=bool)
    pos = np.searchsorted(sorted_set, keys)
    pos[pos == sorted_set.size] = 0
    return sorted_set[pos] == keys
