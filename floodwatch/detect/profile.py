"""The evidence of an incident: TrafficWindows summed into one bounded profile.

Counters are summed; top lists are merged by key and pruned to a fixed size, so memory does not depend
on how many sources an attacker uses. The source count merges the windows' HyperLogLog registers
(register-wise maximum, as the aggregator documents them: mergeable across windows) and, when the
kernel sampled, scales what the sample showed to the packets it stood for (hll.distinct_in_population).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from floodwatch.aggregate.hll import distinct_in_population, estimate_regs
from floodwatch.messages import TrafficWindow, Victim

TOP_KEEP = 2000  # entries kept per merged top list (pruned to the biggest when it grows past 2x)
VICTIM_KEEP = 512
WINDOW_TOP = 10  # a window's top list this long is full: a key left out of it had at most its last count
TOPS = ("src_ips", "dst_ips", "src_ports", "dst_ports")


def _add(dst: Counter[Any], src: dict[Any, int]) -> None:
    for k, v in src.items():
        if isinstance(v, int | float):
            dst[k] += int(v)


def _prune(c: Counter[Any], keep: int, floors: Counter[Any] | None = None) -> None:
    if len(c) > 2 * keep:
        for k, _ in c.most_common()[keep:]:
            del c[k]
            if floors is not None:
                floors.pop(k, None)


@dataclass
class Profile:
    """Sums of the inbound evidence of a run of windows."""

    windows: int = 0
    t_first: float = 0.0
    t_last: float = 0.0
    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bidir_packets: int = 0
    proto: Counter[str] = field(default_factory=Counter)
    ipver: Counter[str] = field(default_factory=Counter)
    tcp_flags: Counter[str] = field(default_factory=Counter)
    fragments: Counter[str] = field(default_factory=Counter)
    ttl: Counter[int] = field(default_factory=Counter)
    signatures: Counter[str] = field(default_factory=Counter)
    src_ips: Counter[str] = field(default_factory=Counter)
    dst_ips: Counter[str] = field(default_factory=Counter)
    dst_bytes: Counter[str] = field(default_factory=Counter)
    src_ports: Counter[tuple[str, int]] = field(default_factory=Counter)
    dst_ports: Counter[tuple[str, int]] = field(default_factory=Counter)
    countries: Counter[str] = field(default_factory=Counter)  # the windows' geo: at most ~250 keys
    src_distinct: int = 0
    sampled: int = 0
    sampled_src: int = 0  # inbound records with an IP header: the sample the source registers hold ...
    sampled_pop: int = 0  # ... and the packets they stood for (windows that tell sampled_src only)
    scaled: float = 0.0  # the sampled records scaled by their sample rate (packets per record: per_record)
    malformed: int = 0  # inbound frames whose IP header did not parse (no addresses, no ports)
    peak_pps: int = 0  # the busiest window's inbound rates
    peak_bps: int = 0
    hll: np.ndarray | None = None  # merged source registers
    # Top lists are sums of the windows' own top lists: a key left out of a full window list may have had
    # up to that list's smallest count there. floor_total[name] sums those smallest counts over the
    # windows, floors[name][key] over the windows that listed the key: the difference bounds what the
    # key's sum may miss (error()).
    floor_total: Counter[str] = field(default_factory=Counter)
    floors: dict[str, Counter[Any]] = field(default_factory=lambda: {name: Counter() for name in TOPS})
    # When an incident is about victims (addresses, or prefixes written with a "/"), its protocol, flag
    # and source-port counts come from the windows' per-victim rows of those, so busy traffic to other
    # addresses does not name it. Victims found later in the incident join the focus.
    focus: set[str] = field(default_factory=set)
    prefix_lens: tuple[int, int] = (24, 64)

    def error(self, name: str, key: Any) -> int:
        """How many packets the top list `name` may be missing for `key` (windows that left it out)."""
        return int(self.floor_total[name] - self.floors[name][key])

    def _note(self, name: str, keys: list[Any], counts: list[int]) -> None:
        floor = min(counts) if len(counts) >= WINDOW_TOP else 0
        if floor:
            self.floor_total[name] += floor
            f = self.floors[name]
            for k in keys:
                f[k] += floor

    @property
    def per_record(self) -> float:
        """Packets each sampled record stands for (1.0 unsampled): the noise of every count."""
        return max(1.0, self.scaled / self.sampled) if self.sampled else 1.0

    @property
    def sources(self) -> int:
        """Distinct inbound sources over all the windows (HLL merge; window maximum as a floor), scaled from
        the sampled records to the packets they stood for."""
        merged = estimate_regs(self.hll) if self.hll is not None else 0
        return distinct_in_population(max(merged, self.src_distinct), self.sampled_src, self.sampled_pop)

    def _merge_hll(self, regs: bytes | np.ndarray) -> None:
        r = np.frombuffer(regs, dtype=np.uint8) if isinstance(regs, bytes) else regs
        if r.size == 0 or r.size & (r.size - 1):
            return
        if self.hll is None or self.hll.size != r.size:
            self.hll = r.copy() if self.hll is None or r.size > self.hll.size else self.hll
            return
        np.maximum(self.hll, r, out=self.hll)

    def add(self, w: TrafficWindow) -> None:
        if self.windows == 0:
            self.t_first = w.t_start
        self.windows += 1
        self.t_last = max(self.t_last, w.t_end)
        self.packets_in += w.packets_in
        self.bytes_in += w.bytes_in
        self.packets_out += w.packets_out
        self.bidir_packets += w.bidir_packets
        self.sampled += w.sampled
        if w.sampled_src:
            self.sampled_src += w.sampled_src
            self.sampled_pop += sum(w.ttl_hist.values())  # the same records as the TTLs, scaled
        self.scaled += w.sample_rate * w.sampled
        self.src_distinct = max(self.src_distinct, w.src_distinct)
        self._merge_hll(w.src_hll)
        seconds = max(w.t_end - w.t_start, 1e-3)
        self.peak_pps = max(self.peak_pps, round(w.packets_in / seconds))
        self.peak_bps = max(self.peak_bps, round(w.bytes_in * 8 / seconds))
        _add(self.ipver, w.ipver_in)
        _add(self.fragments, w.fragments)
        _add(self.signatures, w.signatures)
        _add(self.countries, w.geo)
        for k, v in w.ttl_hist.items():
            self.ttl[int(k)] += int(v)
        rows = self._focus_rows(w)
        if rows is None:
            self.malformed += w.malformed_in
            _add(self.proto, w.proto_in)
            _add(self.tcp_flags, w.tcp_flags)
            self._add_tops(w)
        else:
            self._add_victims(w, rows)

    def _focus_rows(self, w: TrafficWindow) -> list[Victim] | None:
        if not self.focus:
            return None
        from floodwatch.detect.victims import prefix_of

        rows = []
        for v in w.victims:
            if not isinstance(v, dict):
                continue
            ip = str(v.get("ip", ""))
            if ip in self.focus or prefix_of(ip, *self.prefix_lens) in self.focus:
                rows.append(v)
        return rows

    def _add_victims(self, w: TrafficWindow, rows: list[Victim]) -> None:
        """Protocol, flag and source-port evidence of the focused victims only."""
        for v in rows:
            if isinstance(v.get("proto"), dict):
                _add(self.proto, v["proto"])
            if isinstance(v.get("tcp_flags"), dict):
                _add(self.tcp_flags, v["tcp_flags"])
            port = v.get("top_src_port")
            if isinstance(port, dict) and port.get("packets"):
                self.src_ports[(str(port.get("proto")), int(port.get("port", 0)))] += int(port["packets"])
            self.dst_ips[str(v.get("ip"))] += int(v.get("packets", 0))
            self.dst_bytes[str(v.get("ip"))] += int(v.get("bytes", 0))
        self._add_list("src_ips", [(str(row[0]), int(row[1])) for row in w.top_src_ips], TOP_KEEP)

    def _add_list(self, name: str, rows: list[tuple[Any, int]], keep: int) -> None:
        counter: Counter[Any] = getattr(self, name)
        for k, n in rows:
            counter[k] += n
        self._note(name, [k for k, _ in rows], [n for _, n in rows])
        _prune(counter, keep, self.floors[name])

    def _add_tops(self, w: TrafficWindow) -> None:
        self._add_list("src_ips", [(str(row[0]), int(row[1])) for row in w.top_src_ips], TOP_KEEP)
        self._add_list("dst_ips", [(str(row[0]), int(row[1])) for row in w.top_dst_ips], VICTIM_KEEP)
        for row in w.top_dst_ips:
            if len(row) > 2:
                self.dst_bytes[str(row[0])] += int(row[2])
        _prune(self.dst_bytes, VICTIM_KEEP)
        self._add_list("src_ports", [((str(r[0]), int(r[1])), int(r[2])) for r in w.top_src_ports], TOP_KEEP)
        self._add_list("dst_ports", [((str(r[0]), int(r[1])), int(r[2])) for r in w.top_dst_ports], TOP_KEEP)

    def merge(self, other: Profile) -> None:
        """Add another profile (e.g. the confirmation run) into this one."""
        if other.windows == 0:
            return
        if self.windows == 0 or other.t_first < self.t_first:
            self.t_first = other.t_first
        self.windows += other.windows
        self.t_last = max(self.t_last, other.t_last)
        for name in ("packets_in", "bytes_in", "packets_out", "bidir_packets", "sampled", "sampled_src",
                     "sampled_pop", "scaled", "malformed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.src_distinct = max(self.src_distinct, other.src_distinct)
        if other.hll is not None:
            self._merge_hll(other.hll)
        self.peak_pps = max(self.peak_pps, other.peak_pps)
        self.peak_bps = max(self.peak_bps, other.peak_bps)
        for name in ("proto", "ipver", "tcp_flags", "fragments", "ttl", "signatures", "src_ips", "dst_ips",
                     "dst_bytes", "src_ports", "dst_ports", "countries"):
            getattr(self, name).update(getattr(other, name))
        self.floor_total.update(other.floor_total)
        for name in TOPS:
            self.floors[name].update(other.floors[name])

    @property
    def duration(self) -> float:
        return max(0.0, self.t_last - self.t_first)

    def proto_total(self) -> int:
        return sum(self.proto.values())


def profile_of(windows: list[TrafficWindow]) -> Profile:
    p = Profile()
    for w in windows:
        p.add(w)
    return p
