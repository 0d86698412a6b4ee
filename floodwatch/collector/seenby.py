"""Which exporter saw traffic to which protected address: a small side table fed per batch with numpy.

The collector adds each batch's (exporter index, destination, packets scaled by sampling) columns; one
np.unique folds a batch into at most TOP_PER_BATCH pairs, and the table keeps MAX_PAIRS pairs at most
(new pairs past that are counted in `dropped`). `take()` empties it into the pairs of an ExporterTraffic
message, heaviest first. Outbound rows (the protected address is the source) are not victims.
"""

from __future__ import annotations

import numpy as np

from floodwatch.records import DIR_OUT, RECORD_DTYPE, addr_text

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
        if n == 0:
            return
        key = np.empty((n, 24), dtype=np.uint8)
        key[:, :8] = exporter[inbound].astype("<i8").view(np.uint8).reshape(n, 8)
        u8 = rows[inbound].view(np.uint8).reshape(n, RECORD_DTYPE.itemsize)
        key[:, 8:] = u8[:, _DST : _DST + 16]
        uniq, inverse = np.unique(key.view("V24").ravel(), return_inverse=True)
        sums = np.bincount(inverse.ravel(), weights=weight[inbound].astype(np.float64))
        top = np.argsort(sums)[::-1][:TOP_PER_BATCH]
        for i in top.tolist():  # at most TOP_PER_BATCH per batch
            raw = uniq[i].tobytes()
            k = (int.from_bytes(raw[:8], "little"), raw[8:])
            if k not in self.pairs and len(self.pairs) >= MAX_PAIRS:
                self.dropped += 1
                continue
            self.pairs[k] = self.pairs.get(k, 0) + int(sums[i])

    def take(self, names: list[str]) -> list[list[object]]:
        """[[exporter, destination, packets]], heaviest first; the table starts afresh."""
        items = sorted(self.pairs.items(), key=lambda kv: -kv[1])
        self.pairs = {}
        return [[names[e], addr_text(dst), n] for (e, dst), n in items if 0 <= e < len(names)]
