"""NetFlow v5 / v9 and IPFIX datagrams -> Flows, a whole data set at a time with numpy.

v5 records have one fixed layout (a numpy dtype). A v9 or IPFIX template compiles to a numpy dtype
(floodwatch.collector.templates) and each data set is read with one `np.frombuffer`; only templates with
variable-length fields (IPFIX, rare in flow export) are walked record by record. Options data set the
sampling rate of a sampler id, or of the whole exporter / observation domain; a flow naming a sampler id
takes its rate (looked up once per distinct id of a batch). Bad input raises BadDatagram (counted by
the caller); nothing here keeps state but the TemplateCache it is given.
"""

from __future__ import annotations

import struct

import numpy as np

from floodwatch.collector.flows import Flows, v4_addrs
from floodwatch.collector.templates import Domain, Template, TemplateCache, flows_of, parse_templates, sampler_ids
from floodwatch.errors import BadDatagram

V5_HEADER = struct.Struct(">HHIIIIBBH")  # version count uptime secs nsecs seq engine_type engine_id sampling
V5_RECORD = np.dtype([("src", "u1", 4), ("dst", "u1", 4), ("nexthop", "u1", 4), ("input", ">u2"),
                      ("output", ">u2"), ("packets", ">u4"), ("octets", ">u4"), ("first", ">u4"),
                      ("last", ">u4"), ("sport", ">u2"), ("dport", ">u2"), ("pad1", "u1"), ("flags", "u1"),
                      ("proto", "u1"), ("tos", "u1"), ("src_as", ">u2"), ("dst_as", ">u2"),
                      ("src_mask", "u1"), ("dst_mask", "u1"), ("pad2", ">u2")])
assert V5_RECORD.itemsize == 48
V9_HEADER = struct.Struct(">HHIIII")  # version count uptime secs seq source_id
IPFIX_HEADER = struct.Struct(">HHIII")  # version length export_time seq domain
SET_HEADER = struct.Struct(">HH")
MAX_SAMPLERS = 256  # sampler records taken from one options data set


V5 = Template(0, False, (), V5_RECORD, 48)  # stands for v5 in the queue of data sets


def v5_flows(rec: np.ndarray, rate: np.ndarray, ts: np.ndarray) -> Flows:
    f = Flows.empty(len(rec))
    f.src, f.dst = v4_addrs(rec["src"]), v4_addrs(rec["dst"])
    f.sport, f.dport = rec["sport"].astype(np.int64), rec["dport"].astype(np.int64)
    f.proto, f.flags = rec["proto"].astype(np.int64), rec["flags"].astype(np.int64)
    f.ipver[:] = 4
    icmp = f.proto == 1  # v5 puts ICMP type << 8 | code in the destination port
    f.sport[icmp], f.dport[icmp] = f.dport[icmp] >> 8, f.dport[icmp] & 0xFF
    f.packets, f.octets = rec["packets"].astype(np.uint64), rec["octets"].astype(np.uint64)
    f.rate, f.ts = rate, ts
    return f


class FlowDecoder:
    """v5, v9 and IPFIX with their templates. decode() checks a datagram and queues its data sets by
    template; drain() decodes every queued set of a template with one np.frombuffer."""

    def __init__(self, cache: TemplateCache) -> None:
        self.cache = cache
        self.queue: dict[int, tuple[Template, list[bytes], list[int], list[int], list[float], list[int],
                                    list[Domain]]] = {}
        self.exporter_idx = 0  # the index of the exporter of the datagram being decoded (Flows.exporter)
        self.queued = 0  # records waiting in the queue
        self.stats = {"sets_pending": 0, "sets_unknown_dropped": 0, "templates": 0, "options": 0,
                      "sampler_rates": 0}

    def decode(self, data: bytes, exporter: str, default_rate: int, now: float, exporter_idx: int = 0) -> None:
        self.exporter_idx = exporter_idx
        if len(data) < 2:
            raise BadDatagram("flow export: empty datagram")
        version = int.from_bytes(data[:2], "big")
        if version == 5:
            self._v5(data, default_rate, now)
        elif version == 9:
            if len(data) < V9_HEADER.size:
                raise BadDatagram("NetFlow v9: short header")
            source_id = V9_HEADER.unpack_from(data)[5]
            self._sets(data, V9_HEADER.size, len(data), (exporter, 9, source_id), default_rate, now)
        elif version == 10:
            if len(data) < IPFIX_HEADER.size:
                raise BadDatagram("IPFIX: short header")
            _, length, _, _, domain = IPFIX_HEADER.unpack_from(data)
            if not IPFIX_HEADER.size <= length <= len(data):
                raise BadDatagram(f"IPFIX: message length {length} in a {len(data)}-byte datagram")
            self._sets(data, IPFIX_HEADER.size, length, (exporter, 10, domain), default_rate, now)
        else:
            raise BadDatagram(f"flow export: unknown version {version}")

    def _v5(self, data: bytes, default_rate: int, now: float) -> None:
        if len(data) < 24:
            raise BadDatagram("NetFlow v5: short header")
        _, count, _, _, _, _, _, _, sampling = V5_HEADER.unpack_from(data)
        if not 1 <= count <= 30 or len(data) < 24 + 48 * count:
            raise BadDatagram(f"NetFlow v5: {count} records in {len(data)} bytes")
        self._queue(V5, data[24 : 24 + 48 * count], count, sampling & 0x3FFF or default_rate, now)

    def _sets(self, data: bytes, pos: int, end: int, key: Domain, default_rate: int, now: float) -> None:
        ipfix = key[1] == 10
        while pos + 4 <= end:
            set_id, length = SET_HEADER.unpack_from(data, pos)
            if length < 4 or pos + length > end:
                raise BadDatagram(f"flow set {set_id}: length {length} at {pos} of {end}")
            body = data[pos + 4 : pos + length]
            pos += length
            if set_id in ((2, 3) if ipfix else (0, 1)):
                options = set_id == (3 if ipfix else 1)
                for tmpl in parse_templates(body, options, ipfix):
                    self.stats["options" if options else "templates"] += 1
                    for late in self.cache.put(key, tmpl, now):
                        self._data(late[1], key, tmpl, default_rate, now)
            elif set_id >= 256:
                known = self.cache.get(key, set_id, now)
                if known is None:
                    if self.cache.hold(key, set_id, body, now):
                        self.stats["sets_pending"] += 1
                    else:
                        self.stats["sets_unknown_dropped"] += 1
                    continue
                self._data(body, key, known, default_rate, now)

    def _data(self, body: bytes, key: Domain, tmpl: Template, default_rate: int, now: float) -> None:
        if tmpl.options:
            self._options(body, key, tmpl)
            return
        rate = self.cache.rate(key) or default_rate
        if tmpl.reclen:
            n = len(body) // tmpl.reclen
            self._queue(tmpl, body[: n * tmpl.reclen], n, rate, now, key)
        else:
            packed = tmpl.records(body)
            self._queue(tmpl, packed.tobytes(), len(packed), rate, now, key)

    def _options(self, body: bytes, key: Domain, tmpl: Template) -> None:
        """Sampling announced in options data: per sampler id when the records name one, else for the
        whole exporter / observation domain (its last record)."""
        sampler, rate = tmpl.sampling(body)
        if sampler is None:
            if len(rate) and rate[-1]:
                self.cache.set_rate(key, int(rate[-1]))
            return
        for sid, r in zip(sampler.tolist()[:MAX_SAMPLERS], rate.tolist()[:MAX_SAMPLERS], strict=True):
            if r:
                self.cache.set_sampler_rate(key, sid, r)
                self.stats["sampler_rates"] += 1

    def _queue(self, tmpl: Template, body: bytes, n: int, rate: int, now: float, key: Domain | None = None) -> None:
        if n <= 0:
            return
        entry = self.queue.get(id(tmpl))
        if entry is None:
            entry = self.queue[id(tmpl)] = (tmpl, [], [], [], [], [], [])
        entry[1].append(body)
        entry[2].append(n)
        entry[3].append(rate)
        entry[4].append(now)
        entry[5].append(self.exporter_idx)
        entry[6].append(key or ("", 5, 0))
        self.queued += n

    def _sampler_rates(self, rec: np.ndarray, rate: np.ndarray, counts: list[int], domains: list[Domain]) -> np.ndarray:
        """Each record's rate from the options data of the sampler id it names, where one was announced
        (else the rate it had: its exporter's or domain's, else the configured one)."""
        sid = sampler_ids(rec)
        ids = {d: i for i, d in enumerate(dict.fromkeys(domains))}
        dom = np.repeat(np.array([ids[d] for d in domains], dtype=np.uint64), counts)
        pairs, inverse = np.unique((dom << np.uint64(40)) | (sid & np.uint64((1 << 40) - 1)), return_inverse=True)
        names = list(ids)
        known = np.array([self.cache.sampler_rate(names[int(p) >> 40], int(p) & ((1 << 40) - 1))
                          for p in pairs.tolist()], dtype=np.uint64)
        per = known[inverse.ravel()]
        return np.where(per > 0, per, rate)

    def drain(self) -> list[Flows]:
        """Every queued record as Flows, one numpy pass per template."""
        out = []
        for tmpl, bodies, counts, rates, times, exporters, domains in self.queue.values():
            rec = np.frombuffer(b"".join(bodies), dtype=tmpl.dtype)
            rate = np.repeat(np.asarray(rates, dtype=np.uint64), counts)
            if "sampler" in tmpl.names:
                rate = self._sampler_rates(rec, rate, counts, domains)
            ts = np.repeat(np.asarray(times, dtype=np.float64), counts)
            f = v5_flows(rec, rate, ts) if tmpl is V5 else flows_of(tmpl, rec, rate, ts)
            if len(f):
                f.exporter = np.repeat(np.asarray(exporters, dtype=np.int64), counts)
                out.append(f)
        self.queue.clear()
        self.queued = 0
        return out
