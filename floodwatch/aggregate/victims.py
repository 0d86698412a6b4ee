"""Per-destination detail for the top victims of one window, in a fixed number of rows.

Each row holds a destination's packets, bytes, protocol and TCP-flag counts, a small HyperLogLog of its
sources (p=8: 256 bytes, 6.5 % standard error) and its busiest source ports (estimated from an even
sample of up to 256 records per batch). Per batch the table admits
at most `rows` candidate destinations (the batch's heaviest); a candidate heavier in the batch than the
lightest row replaces it (that row's counts start again). While a window has no more inbound
destinations than rows (the usual case: the host's own addresses), every row is exact.
"""

from __future__ import annotations

import numpy as np

from floodwatch.aggregate.features import FLAG_NAMES, PROTO_NAMES
from floodwatch.aggregate.hll import estimate_regs, hashed_index_rank
from floodwatch.aggregate.keys import halves_bytes, key_text
from floodwatch.messages import Victim

VICTIM_HLL_P = 8
_PORTS_KEPT = 64  # source ports remembered per row (pruned to the busiest half beyond that)
_PORTS_PER_BATCH = 4
_PORT_SAMPLE = 256  # records per batch looked at for the busiest source ports


class VictimTable:
    def __init__(self, rows: int) -> None:
        self.n = rows
        self.keys = np.zeros(rows, dtype=np.uint64)
        self.used = np.zeros(rows, dtype=bool)
        self._filled = 0  # rows [0, _filled) are in use
        self.addr = np.zeros((rows, 2), dtype=np.uint64)
        self.packets = np.zeros(rows, dtype=np.int64)
        self.bytes = np.zeros(rows, dtype=np.int64)
        self.proto = np.zeros((rows, len(PROTO_NAMES)), dtype=np.int64)
        self.flags = np.zeros((rows, len(FLAG_NAMES)), dtype=np.int64)
        self.hll = np.zeros((rows, 1 << VICTIM_HLL_P), dtype=np.uint8)
        self.ports: list[dict[int, int]] = [{} for _ in range(rows)]
        self._row_of: dict[int, int] = {}
        self.evictions = 0

    def add(self, group: tuple[np.ndarray, ...], dhalves: np.ndarray, cols: dict[str, np.ndarray],
            rate: int) -> None:
        """Inbound IP records of one batch grouped by destination (np.unique's keys, first index,
        inverse and counts); dhalves are the destination addresses, cols holds wirelen, pidx (protocol
        index), fidx (flag combo, or 255 when not TCP), shash (the source keys' fmix64), sport and l4
        (has ports) per record; dhalves holds the address of each destination in `group` (IPv6 keys
        need it for their text)."""
        uniq, _first, inv, cnt = group
        cand = np.argsort(-cnt, kind="stable")[: self.n]
        rowmap = np.full(uniq.size, -1, dtype=np.intp)
        claimed = np.zeros(self.n, dtype=bool)  # rows given to this batch's candidates stay theirs
        for j in cand.tolist():
            row = self._row_for(int(uniq[j]), dhalves[j], int(cnt[j]) * rate, claimed)
            rowmap[j] = row
            if row >= 0:
                claimed[row] = True
        rows = rowmap[inv]
        sel = rows >= 0
        if not sel.all():
            rows = rows[sel]
            cols = {k: v[sel] for k, v in cols.items()}
        n, npro, nfl = self.n, len(PROTO_NAMES), len(FLAG_NAMES)
        self.packets += np.bincount(rows, minlength=n) * rate
        self.bytes += np.bincount(rows, weights=cols["wirelen"], minlength=n).astype(np.int64) * rate
        self.proto += np.bincount(rows * npro + cols["pidx"], minlength=n * npro).reshape(n, npro) * rate
        tcp = cols["fidx"] != 255
        fl = np.bincount(rows[tcp] * nfl + cols["fidx"][tcp], minlength=n * nfl)
        self.flags += fl.reshape(n, nfl) * rate
        idx, rank = hashed_index_rank(cols["shash"], VICTIM_HLL_P)
        np.maximum.at(self.hll.reshape(-1), rows * (1 << VICTIM_HLL_P) + idx, rank)  # 1-d: ~5x faster
        self._add_ports(rows, cols["sport"], cols["l4"], cols["pidx"], rate)

    def _row_for(self, key: int, halves: np.ndarray, weight: int, claimed: np.ndarray) -> int:
        row = self._row_of.get(key)
        if row is not None:
            return row
        if self._filled < self.n:  # rows are taken in order and never given back: the next is still zero
            row = self._filled
            self._filled += 1
        else:
            row = int(np.argmin(np.where(claimed, np.iinfo(np.int64).max, self.packets)))
            if claimed[row] or self.packets[row] >= weight:
                return -1
            del self._row_of[int(self.keys[row])]
            self.evictions += 1
            self._reset(row)
        self.used[row] = True
        self.keys[row] = key
        self.addr[row] = halves
        self._row_of[key] = row
        return row

    def _reset(self, row: int) -> None:
        for arr in (self.packets, self.bytes, self.proto, self.flags, self.hll):
            arr[row] = 0
        self.ports[row] = {}

    def _add_ports(self, rows: np.ndarray, sport: np.ndarray, l4: np.ndarray, pidx: np.ndarray,
                   rate: int) -> None:
        step = max(1, rows.size // _PORT_SAMPLE)  # the busiest ports show in an even sample
        if step > 1:
            rows, sport, l4, pidx, rate = rows[::step], sport[::step], l4[::step], pidx[::step], rate * step
        if not l4.any():
            return
        combo = rows[l4].astype(np.int64) * 131072 + pidx[l4].astype(np.int64) * 65536 + sport[l4]
        keys, counts = np.unique(combo, return_counts=True)
        grp = keys // 131072
        order = np.lexsort((-counts, grp))
        keys, counts, grp = keys[order], counts[order], grp[order]
        head = np.concatenate(([True], grp[1:] != grp[:-1]))
        at = np.arange(keys.size)
        rank = at - np.maximum.accumulate(np.where(head, at, 0))
        keep = rank < _PORTS_PER_BATCH
        for k, c in zip(keys[keep].tolist(), counts[keep].tolist(), strict=True):
            ports = self.ports[k // 131072]
            ports[k % 131072] = ports.get(k % 131072, 0) + c * rate
            if len(ports) > _PORTS_KEPT:
                best = sorted(ports.items(), key=lambda kv: -kv[1])[: _PORTS_KEPT // 2]
                self.ports[k // 131072] = dict(best)

    def top(self, n: int) -> list[Victim]:
        """The n heaviest rows as TrafficWindow.victims entries."""
        order = np.lexsort((self.keys, -self.packets))
        order = order[self.used[order]][:n].tolist()
        return [self._row_dict(r) for r in order]

    def _row_dict(self, r: int) -> Victim:
        key = int(self.keys[r])
        ip = key_text(key, halves_bytes(int(self.addr[r, 0]), int(self.addr[r, 1])))
        port = max(self.ports[r].items(), key=lambda kv: (kv[1], -kv[0]), default=(0, 0))
        return {
            "ip": ip,
            "packets": int(self.packets[r]),
            "bytes": int(self.bytes[r]),
            "proto": {name: int(c) for name, c in zip(PROTO_NAMES, self.proto[r].tolist(), strict=True)},
            "tcp_flags": {n: int(c) for n, c in zip(FLAG_NAMES, self.flags[r].tolist(), strict=True) if c},
            "top_src_port": {"proto": PROTO_NAMES[port[0] // 65536], "port": port[0] % 65536,
                             "packets": port[1]} if port[1] else None,
            "src_distinct": estimate_regs(self.hll[r]),
        }

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.keys, self.addr, self.packets, self.bytes, self.proto,
                                          self.flags, self.hll))) + self.n * _PORTS_KEPT * 100
