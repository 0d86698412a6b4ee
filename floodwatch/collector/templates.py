"""NetFlow v9 / IPFIX templates: parsed, compiled to numpy dtypes, cached per (exporter, domain).

A template's fields we use (addresses, ports, protocol, flags, TTL, counters, sampling) become named
fields of a numpy structured dtype at their offsets; the others (enterprise fields included) are only
skipped over. A data set of a fixed-length template is one `np.frombuffer`. Templates with
variable-length fields are rare in flow export: their records are walked one by one and repacked into
the same fixed dtype.

The cache is bounded (an attacker can send templates too): at most `max_templates`, least recently used
out first, each expiring `timeout` seconds after it was last announced; data sets whose template is not
known yet wait (at most `pending_sets` of them, `pending_seconds` long) and are decoded when it comes.
Sampling rates announced in options data are kept per domain and per (domain, sampler id), as bounded.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from floodwatch.collector.flows import Flows, be_uint, v4_addrs
from floodwatch.errors import BadDatagram

Domain = tuple[str, int, int]  # exporter address, version (9 or 10), source id / observation domain
VARLEN = 65535
MAX_FIELDS = 256
MAX_COMPILED = 1024  # distinct compiled templates remembered (all exporters)
# IE number -> our name; the addresses must have the length given, the rest are unsigned integers
KNOWN = {1: "octets", 85: "octets", 2: "packets", 86: "packets", 4: "proto", 6: "flags", 7: "sport",
         11: "dport", 8: "src4", 12: "dst4", 27: "src6", 28: "dst6", 32: "icmp", 139: "icmp",
         192: "ttl", 52: "ttl", 34: "interval", 50: "interval", 305: "pinterval", 306: "pspace",
         309: "ssize", 310: "spop", 48: "sampler", 302: "sampler"}
ADDR_LEN = {"src4": 4, "dst4": 4, "src6": 16, "dst6": 16}


@dataclass(frozen=True)
class Template:
    tid: int
    options: bool
    fields: tuple[tuple[int, int], ...]  # (IE number or -1 for an enterprise field, length)
    dtype: np.dtype  # known fields at their offsets (fixed-length templates) or packed (variable)
    reclen: int  # record length; 0 when the template has variable-length fields

    @property
    def names(self) -> tuple[str, ...]:
        return self.dtype.names or ()

    def records(self, body: bytes) -> np.ndarray:
        if self.reclen:
            return np.frombuffer(body, dtype=self.dtype, count=len(body) // self.reclen)
        return np.frombuffer(self._repack(body), dtype=self.dtype)

    def _repack(self, body: bytes) -> bytes:
        """Variable-length records -> rows of the packed dtype (the known fields only)."""
        rows = bytearray()
        pos, end = 0, len(body)
        minimum = sum(1 if n == VARLEN else n for _, n in self.fields)
        while pos + minimum <= end:
            row = bytearray()
            for ie, n in self.fields:
                if n == VARLEN:
                    n, pos = body[pos], pos + 1
                    if n == 255:
                        if pos + 2 > end:
                            return bytes(rows)
                        n, pos = int.from_bytes(body[pos : pos + 2], "big"), pos + 2
                    if pos + n > end:
                        return bytes(rows)
                    pos += n  # no field we use is variable-length
                    continue
                if ie in KNOWN and _usable(ie, n):
                    row += body[pos : pos + n]
                pos += n
            rows += row
        return bytes(rows)

    def sampling(self, body: bytes) -> tuple[np.ndarray | None, np.ndarray]:
        """What an options data set announces: (the sampler id of each record, or None when the template
        has none; the sampling rate of each record, 0 where it says nothing about it)."""
        rec = self.records(body)
        rate = _rate_column(rec, np.zeros(len(rec), dtype=np.uint64))
        return (_col(rec, "sampler") if "sampler" in self.names else None), rate


_COMPILED: dict[tuple[int, bool, tuple[tuple[int, int], ...]], Template] = {}


def _usable(ie: int, n: int) -> bool:
    name = KNOWN[ie]
    return n == ADDR_LEN[name] if name in ADDR_LEN else 1 <= n <= 8


def _format(name: str, n: int) -> object:
    if name in ADDR_LEN or n not in (1, 2, 4, 8):
        return ("u1", (n,))
    return f">u{n}"


def compile_template(tid: int, options: bool, fields: list[tuple[int, int]]) -> Template:
    """The template's numpy layout. Exporters announce the same templates again and again (every few
    seconds, per domain): the compiled object is reused (bounded memo), so their data sets queue together."""
    key = (tid, options, tuple(fields))
    tmpl = _COMPILED.get(key)
    if tmpl is None:
        if len(_COMPILED) >= MAX_COMPILED:
            _COMPILED.clear()
        tmpl = _COMPILED[key] = _compile(tid, options, fields)
    return tmpl


def _compile(tid: int, options: bool, fields: list[tuple[int, int]]) -> Template:
    names: list[str] = []
    formats: list[object] = []
    offsets: list[int] = []
    pos, variable = 0, False
    for ie, n in fields:
        if n == VARLEN:
            variable = True
            continue
        if ie in KNOWN and _usable(ie, n):
            name = KNOWN[ie]
            if name not in names:
                names.append(name)
                formats.append(_format(name, n))
                offsets.append(pos)
            else:  # a second field of the same meaning: skipped like an unknown one
                fields = [(f if f != (ie, n) else (-1, n)) for f in fields]
        pos += n
    if not variable and pos == 0:
        raise BadDatagram(f"template {tid}: zero-length records")
    if variable:  # packed: the known fields one after another, in template order
        packed = np.dtype({"names": names, "formats": formats})
        return Template(tid, options, tuple(fields), packed, 0)
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": pos})
    return Template(tid, options, tuple(fields), dtype, pos)


def parse_templates(body: bytes, options: bool, ipfix: bool) -> list[Template]:
    """Every template (or options template) record of one template set."""
    out = []
    pos, end = 0, len(body)
    while pos + 4 <= end:
        tid, count = struct.unpack_from(">HH", body, pos)
        pos += 4
        if options and not ipfix:  # v9: scope and option lengths in bytes, 4 per field
            if pos > end or count % 4:
                raise BadDatagram(f"options template {tid}: scope length {count}")
            if pos + 2 > end:
                raise BadDatagram(f"options template {tid}: truncated")
            count = (count + struct.unpack_from(">H", body, pos)[0]) // 4
            pos += 2
        elif options:
            if pos + 2 > end:
                raise BadDatagram(f"options template {tid}: truncated")
            pos += 2  # scope field count: scope fields are fields like the others here
        if tid < 256 or count > MAX_FIELDS:
            raise BadDatagram(f"template {tid} with {count} fields")
        if count == 0:  # IPFIX template withdrawal: nothing to compile
            continue
        fields, pos = _fields(body, pos, count, ipfix, tid)
        out.append(compile_template(tid, options, fields))
        if not ipfix and end - pos < 4:
            break
    return out


def _fields(body: bytes, pos: int, count: int, ipfix: bool, tid: int) -> tuple[list[tuple[int, int]], int]:
    fields = []
    for _ in range(count):
        if pos + 4 > len(body):
            raise BadDatagram(f"template {tid}: truncated field list")
        ie, n = struct.unpack_from(">HH", body, pos)
        pos += 4
        if ipfix and ie & 0x8000:  # enterprise field: 4 more bytes of enterprise number, then skipped
            pos += 4
            ie = -1
        if n == 0 or (n == VARLEN and not ipfix):
            raise BadDatagram(f"template {tid}: field {ie} of length {n}")
        fields.append((ie, n))
    if pos > len(body):
        raise BadDatagram(f"template {tid}: truncated field list")
    return fields, pos


def _col(rec: np.ndarray, name: str) -> np.ndarray:
    c = rec[name]
    return be_uint(c) if c.ndim == 2 else c.astype(np.uint64)


def sampler_ids(rec: np.ndarray) -> np.ndarray:
    """The sampler id (v9 field 48, IPFIX selectorId 302) of each record, as uint64."""
    return _col(rec, "sampler")


def _rate_column(rec: np.ndarray, rate: np.ndarray) -> np.ndarray:
    names = rec.dtype.names or ()
    if "interval" in names:
        rate = np.where(_col(rec, "interval") > 0, _col(rec, "interval"), rate)
    if "pinterval" in names and "pspace" in names:
        pi, ps = _col(rec, "pinterval"), _col(rec, "pspace")
        rate = np.where(pi > 0, (pi + ps) // np.maximum(pi, np.uint64(1)), rate)
    if "ssize" in names and "spop" in names:
        size, pop = _col(rec, "ssize"), _col(rec, "spop")
        rate = np.where(size > 0, pop // np.maximum(size, np.uint64(1)), rate)
    return rate


def flows_of(tmpl: Template, rec: np.ndarray, rate: np.ndarray, ts: np.ndarray) -> Flows:
    """The flows of records of one template (rate and ts per record); records without addresses or
    counters are left out."""
    names = tmpl.names
    n = len(rec)
    if n == 0 or "packets" not in names:
        return Flows.empty(0)
    f = Flows.empty(n)
    if "src6" in names and "dst6" in names:
        f.src, f.dst = rec["src6"], rec["dst6"]
        f.ipver[:] = 6
    elif "src4" in names and "dst4" in names:
        f.src, f.dst = v4_addrs(rec["src4"]), v4_addrs(rec["dst4"])
        f.ipver[:] = 4
    else:
        return Flows.empty(0)
    for name in ("sport", "dport", "proto", "flags", "ttl"):
        if name in names:
            setattr(f, name, _col(rec, name).astype(np.int64))
    f.flags &= 0xFF
    if "icmp" in names:
        icmp = (f.proto == 1) | (f.proto == 58)
        code = _col(rec, "icmp").astype(np.int64)
        f.sport[icmp], f.dport[icmp] = code[icmp] >> 8, code[icmp] & 0xFF
    f.packets = _col(rec, "packets")
    f.octets = _col(rec, "octets") if "octets" in names else f.packets * np.uint64(64)
    f.rate = _rate_column(rec, rate)
    f.ts = ts
    return f


class TemplateCache:
    def __init__(self, max_templates: int, timeout: float, pending_sets: int, pending_seconds: float) -> None:
        self.max = max_templates
        self.timeout = timeout
        self.pending_max = pending_sets
        self.pending_seconds = pending_seconds
        self.templates: OrderedDict[tuple[Domain, int], tuple[Template, float]] = OrderedDict()
        self.rates: OrderedDict[Domain, int] = OrderedDict()
        self.sampler_rates: OrderedDict[tuple[Domain, int], int] = OrderedDict()  # (domain, sampler id) -> rate
        self.pending: OrderedDict[int, tuple[Domain, int, bytes, float]] = OrderedDict()
        self._seq = 0
        self.stats = {"templates_evicted": 0, "templates_expired": 0, "pending_expired": 0,
                      "pending_evicted": 0, "late_sets_decoded": 0}

    def put(self, key: Domain, tmpl: Template, now: float) -> list[tuple[Domain, bytes]]:
        """Store a template; returns the data sets that were waiting for it (to decode now)."""
        k = (key, tmpl.tid)
        self.templates.pop(k, None)
        self.templates[k] = (tmpl, now + self.timeout)
        while len(self.templates) > self.max:
            self.templates.popitem(last=False)
            self.stats["templates_evicted"] += 1
        late = [seq for seq, (d, tid, _, _) in self.pending.items() if d == key and tid == tmpl.tid]
        out = []
        for seq in late:
            d, _, body, _ = self.pending.pop(seq)
            out.append((d, body))
        self.stats["late_sets_decoded"] += len(out)
        return out

    def get(self, key: Domain, tid: int, now: float) -> Template | None:
        entry = self.templates.get((key, tid))
        if entry is None:
            return None
        if entry[1] < now:
            del self.templates[(key, tid)]
            self.stats["templates_expired"] += 1
            return None
        return entry[0]

    def hold(self, key: Domain, tid: int, body: bytes, now: float) -> bool:
        """Keep a data set until its template comes; False when holding is off."""
        if self.pending_max <= 0 or self.pending_seconds <= 0:
            return False
        self.expire(now)
        while len(self.pending) >= self.pending_max:
            self.pending.popitem(last=False)
            self.stats["pending_evicted"] += 1
        self._seq += 1
        self.pending[self._seq] = (key, tid, body, now)
        return True

    def expire(self, now: float) -> None:
        while self.pending:
            seq, (_, _, _, t) = next(iter(self.pending.items()))
            if now - t <= self.pending_seconds:
                break
            del self.pending[seq]
            self.stats["pending_expired"] += 1

    def set_rate(self, key: Domain, rate: int) -> None:
        self.rates.pop(key, None)
        self.rates[key] = rate
        while len(self.rates) > self.max:
            self.rates.popitem(last=False)

    def rate(self, key: Domain) -> int:
        return self.rates.get(key, 0)

    def set_sampler_rate(self, key: Domain, sampler: int, rate: int) -> None:
        k = (key, sampler)
        self.sampler_rates.pop(k, None)
        self.sampler_rates[k] = rate
        while len(self.sampler_rates) > self.max:
            self.sampler_rates.popitem(last=False)

    def sampler_rate(self, key: Domain, sampler: int) -> int:
        """The rate an options record announced for this sampler id of the domain (0: none known)."""
        return self.sampler_rates.get((key, sampler), 0)
