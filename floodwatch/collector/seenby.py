"""Which exporter saw traffic to which protected address: a small side table fed per batch with numpy.

The collector adds each batch's (exporter index, destination, packets scaled by sampling) columns; one
np.unique folds a batch into at most TOP_PER_BATCH pairs, and the table keeps MAX_PAIRS pairs at most
(new pairs past that are counted in `dropped`). `take()` empties it into the pairs of an ExporterTraffic
message, heaviest first. Outbound rows (the protected address is the source) are not victims.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from floodwatch.records import DIR_OUT, RECORD_DTYPE, V4_MAPPED_PREFIX, addr_text

TOP_PER_BATCH = 64  # pairs kept from one batch (the heaviest)
MAX_PAIRS = 1024  # pairs held between two messages
_DST = RECORD_DTYPE.fields["dst"][1]  # type: ignore[index]


class SeenBy:
    def __init__(self) -> None:
        self.pairs: dict[tuple[int, bytes], int] = {}
        self.dropped = 0

    def add(self, exporter: np.ndarray, rows: np.ndarray, weight: np.ndarray) -> None:
        """Fold a batch in: exporter indexes, RECORD_DTYPE rows, packets each row stands for."""
        inbound = rows["direction"] != DIR_OUT
        n = int(inbound.sum())
        if n:
            dst = rows[inbound].view(np.uint8).reshape(n, RECORD_DTYPE.itemsize)[:, _DST : _DST + 16]
            self.add_columns(exporter[inbound], dst, weight[inbound])

    def add_columns(self, exporter: np.ndarray, dst: np.ndarray, weight: np.ndarray) -> None:
        """Fold a batch of inbound packets in: exporter indexes, (n, 16) uint8 destinations, weights."""
        if not len(exporter):
            return
        exp = exporter.astype(np.int64)
        dst = np.ascontiguousarray(dst)
        keys, sums = _groups(exp, dst, weight.astype(np.float64))
        top = np.argsort(sums)[::-1][:TOP_PER_BATCH]
        for i in top.tolist():  # at most TOP_PER_BATCH per batch
            k = keys(i)
            if k not in self.pairs and len(self.pairs) >= MAX_PAIRS:
                self.dropped += 1
                continue
            self.pairs[k] = self.pairs.get(k, 0) + int(sums[i])

    def take(self, names: list[str]) -> list[list[object]]:
        """[[exporter, destination, packets]], heaviest first; the table starts afresh."""
        items = sorted(self.pairs.items(), key=lambda kv: -kv[1])
        self.pairs = {}
        return [[names[e], addr_text(dst), n] for (e, dst), n in items if 0 <= e < len(names)]


def _groups(exp: np.ndarray, dst: np.ndarray, weight: np.ndarray) -> tuple[Callable[[int], tuple[int, bytes]],
                                                                          np.ndarray]:
    """(the (exporter, destination) of group i, the weight of each group). IPv4 (v4-mapped) destinations
    and exporter indexes below 2**16 pack into one uint64 key, much quicker to group; else 24-byte keys."""
    words = dst.view(">u8")  # (n, 2): the address's high and low 64 bits
    if (words[:, 0] == 0).all() and (words[:, 1] >> np.uint64(32) == 0xFFFF).all() and exp.max() < 1 << 16:
        key = (words[:, 1] & np.uint64(0xFFFFFFFF)) | (exp.astype(np.uint64) << np.uint64(32))
        uniq, inverse = np.unique(key, return_inverse=True)
        sums = np.bincount(inverse.ravel(), weights=weight, minlength=len(uniq))

        def v4(i: int) -> tuple[int, bytes]:
            k = int(uniq[i])
            return k >> 32, V4_MAPPED_PREFIX + (k & 0xFFFFFFFF).to_bytes(4, "big")

        return v4, sums
    wide = np.empty((len(exp), 24), dtype=np.uint8)
    wide[:, :8] = exp.astype("<i8").view(np.uint8).reshape(-1, 8)
    wide[:, 8:] = dst
    _, first, inverse = np.unique(wide.view("V24").ravel(), return_index=True, return_inverse=True)
    sums = np.bincount(inverse.ravel(), weights=weight, minlength=len(first))
    return (lambda i: (int(exp[first[i]]), dst[first[i]].tobytes())), sums
