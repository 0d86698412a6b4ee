"""Per-second rollups of closed windows, and the whole-run summary (bounded, also in live mode)."""

from __future__ import annotations

from typing import Any

import numpy as np

from floodwatch.aggregate.features import FLAG_NAMES, PROTO_NAMES
from floodwatch.aggregate.hll import HyperLogLog, relative_error
from floodwatch.aggregate.spacesaving import HeavyHitters
from floodwatch.aggregate.window import PORT_SPACE, WindowStats, hh_rows, top_ports
from floodwatch.messages import PortCount, TrafficSecond, TrafficSummary, TrafficWindow


class SecondRollup:
    """Sums the windows of one second of stream time into a TrafficSecond."""

    def __init__(self, index: int, hll_p: int) -> None:
        self.index = index
        self.t_start = float("inf")
        self.t_end = 0.0
        self.windows = 0
        self.hll = HyperLogLog(hll_p)
        self.vals = dict.fromkeys(("pin", "bin", "pout", "bout", "drops", "malformed", "sampled", "scaled"), 0)
        self.proto = np.zeros(4, dtype=np.int64)
        self.exact = True
        self.conn = -1

    def add(self, w: TrafficWindow) -> None:
        self.windows += 1
        self.t_start = min(self.t_start, w.t_start)
        self.t_end = max(self.t_end, w.t_end)
        v = self.vals
        v["pin"] += w.packets_in
        v["bin"] += w.bytes_in
        v["pout"] += w.packets_out
        v["bout"] += w.bytes_out
        v["drops"] += w.kernel_drops
        v["malformed"] += w.malformed
        v["sampled"] += w.sampled
        v["scaled"] += round(w.sample_rate * w.sampled)
        self.proto += [w.proto_in[p] + w.proto_out[p] for p in PROTO_NAMES]
        if w.sampled:  # a window without records has an empty sketch: nothing to merge
            self.hll.merge_bytes(w.src_hll)
        self.exact = self.exact and w.exact
        self.conn = w.conn_count if w.conn_count >= 0 else self.conn

    def to_message(self) -> TrafficSecond:
        v = self.vals
        span = max(self.t_end - self.t_start, 1e-9)
        total = int(self.proto.sum())
        pct = [round(100.0 * float(c) / total, 2) if total else 0.0 for c in self.proto.tolist()]
        return TrafficSecond(
            t_start=self.t_start,
            t_end=self.t_end,
            pps=round((v["pin"] + v["pout"]) / span),
            bps=round((v["bin"] + v["bout"]) * 8 / span),
            pps_in=round(v["pin"] / span),
            bps_in=round(v["bin"] * 8 / span),
            pps_out=round(v["pout"] / span),
            bps_out=round(v["bout"] * 8 / span),
            tcp_pct=pct[0],
            udp_pct=pct[1],
            icmp_pct=pct[2],
            other_pct=pct[3],
            conn_count=self.conn,
            src_distinct=self.hll.estimate(),
            sample_rate=v["scaled"] / v["sampled"] if v["sampled"] else 1.0,
            exact=self.exact,
            kernel_drops=v["drops"],
            malformed=v["malformed"],
        )


class RunSummary:
    """The whole run: totals, protocol counts, distinct sources (exact up to run_capacity, then
    HyperLogLog), top sources/destinations (heavy hitters) and top ports (exact dense counts)."""

    def __init__(self, run_capacity: int, buffer: int, hll_p: int, top_n: int) -> None:
        self.top_n = top_n
        self.src = HeavyHitters(run_capacity, buffer, payload_width=2)
        self.dst = HeavyHitters(4096, buffer, payload_width=2, aux=1)
        self.hll = HyperLogLog(hll_p)
        self.sport = np.zeros(PORT_SPACE, dtype=np.int64)
        self.dport = np.zeros(PORT_SPACE, dtype=np.int64)
        self.proto = np.zeros(4, dtype=np.int64)
        self.ipproto = np.zeros(256, dtype=np.int64)
        self.ipver = np.zeros(8, dtype=np.int64)
        self.flags = np.zeros(len(FLAG_NAMES), dtype=np.int64)
        self.frag = np.zeros(3, dtype=np.int64)
        self.packets = 0
        self.bytes = 0
        self.malformed = 0
        self.sampled = 0
        self.scaled = 0
        self.windows = 0
        self.t_first = 0.0
        self.t_last = 0.0

    def add(self, ws: WindowStats, msg: TrafficWindow) -> None:
        self.windows += 1
        self.packets += msg.packets_in + msg.packets_out
        self.bytes += msg.bytes_in + msg.bytes_out
        self.malformed += msg.malformed
        if not ws.has_records():  # counters only: every record-derived sum below would add zeros
            return
        if ws.sampled:
            self.t_first = self.t_first or ws.t_first
            self.t_last = max(self.t_last, ws.t_last)
        self.sampled += ws.sampled
        self.scaled += int(ws.packets.sum())
        self.proto += ws.proto[:4] + ws.proto[4:]
        self.ipproto += ws.ipproto
        self.ipver += ws.ipver
        self.flags += ws.flags
        self.frag += ws.frag
        for dense, counts in ((self.sport, ws.sport), (self.dport, ws.dport)):
            idx, n = counts.touched()
            dense[idx] += n
            counts.release()
        self.hll.merge(ws.src_hll)
        self.src.merge(ws.src)
        self.dst.merge(ws.dst)

    def source_count(self) -> tuple[int, bool]:
        if self.src.exact:
            return len(self.src), True
        return self.hll.estimate(), False

    def to_message(self) -> TrafficSummary:
        self.src.fold()  # the error bound below counts every source added (`exact` may not fold)
        count, exact = self.source_count()
        extra: dict[str, Any] = {
            "ip_protocols": {int(p): int(self.ipproto[p]) for p in np.flatnonzero(self.ipproto).tolist()},
            "ipver": {"4": int(self.ipver[4]), "6": int(self.ipver[6])},
            "windows": self.windows,
            "sampled": self.sampled,
            "top_src_exact": self.src.exact,
            "top_src_error_bound": int(self.src.error),
            "source_ip_count_rel_error": 0.0 if exact else round(relative_error(self.hll.p), 4),
        }
        return TrafficSummary(
            t_first=self.t_first,
            t_last=self.t_last,
            packets=self.packets,
            bytes=self.bytes,
            protocols={n: int(c) for n, c in zip(PROTO_NAMES, self.proto.tolist(), strict=True)},
            source_ip_count=count,
            source_ip_count_exact=exact,
            top_src_ips=[{"ip": ip, "count": c} for ip, c, _ in hh_rows(self.src, self.top_n)],
            top_dst_ips=[{"ip": ip, "count": c, "bytes": a[0]} for ip, c, a in hh_rows(self.dst, self.top_n)],
            top_src_ports=_port_dicts(top_ports(self.sport, self.top_n)),
            top_dst_ports=_port_dicts(top_ports(self.dport, self.top_n)),
            tcp_flags={n: int(c) for n, c in zip(FLAG_NAMES, self.flags.tolist(), strict=True) if c},
            fragments={"first": int(self.frag[1]), "later": int(self.frag[2])},
            malformed=self.malformed,
            sample_rate=self.scaled / self.sampled if self.sampled else 1.0,
            extra=extra,
        )


def _port_dicts(rows: list[list[Any]]) -> list[PortCount]:
    return [{"port": port, "proto": proto, "count": c} for proto, port, c in rows]
