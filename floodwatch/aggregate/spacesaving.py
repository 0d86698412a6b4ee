"""Heavy hitters with bounded memory: a mergeable Space-Saving / Misra-Gries summary, batched.

`HeavyHitters(capacity)` counts weighted uint64 keys. Updates are appended to a pending buffer (no work
per key) and folded in, vectorised, when the buffer is full or a result is asked for: the table and the
buffer are summed per key; if more than `capacity` keys remain, the (capacity+1)-th largest count v is
subtracted from every key and keys left at zero or less are dropped (Misra-Gries, as merged in Agarwal
et al., "Mergeable summaries", 2012; Space-Saving with capacity+1 counters is the same summary).

Guarantees, with N the total weight added and `error` the sum of the subtracted v's:
  count(x) <= true(x) <= count(x) + error,   error <= (N - sum(counts)) / (capacity + 1),
so every key heavier than N / (capacity + 1) is in the table, and while nothing was ever dropped
(`exact`), counts are exact and `len()` is the exact number of distinct keys.
Memory: at most (capacity + buffer) rows of 8-byte key, 8-byte count and the optional payload and
auxiliary columns, plus a transient copy while folding.
"""

from __future__ import annotations

import numpy as np

_EMPTY_U64 = np.zeros(0, dtype=np.uint64)
_EMPTY_I64 = np.zeros(0, dtype=np.int64)


class HeavyHitters:
    """Top keys by weight. `payload_width` uint64 words ride along per key (e.g. IPv6 address bytes);
    `aux` int64 columns are summed per key like the count but only as lower bounds (e.g. bytes)."""

    def __init__(self, capacity: int, buffer: int = 65536, payload_width: int = 0, aux: int = 0) -> None:
        if capacity < 1 or buffer < 1:
            raise ValueError("capacity and buffer must be positive")
        self.capacity = capacity
        self.buffer = buffer
        self.payload_width = payload_width
        self.aux_width = aux
        self.keys = _EMPTY_U64
        self.counts = _EMPTY_I64
        self.payload = np.zeros((0, payload_width), dtype=np.uint64)
        self.aux = np.zeros((0, aux), dtype=np.int64)
        self.error = 0
        self.total = 0
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]] = []
        self._pending_rows = 0

    def __len__(self) -> int:
        self.fold()
        return int(self.keys.size)

    @property
    def exact(self) -> bool:
        """True while nothing was ever dropped: counts and len() are exact. Folds only when the answer
        depends on it (a table past capacity with its pending rows): asked once per window of a run,
        a fold each time would sort the whole run's table ten times a second."""
        if self.error:
            return False  # the error never decreases
        if self.keys.size + self._pending_rows > self.capacity:
            self.fold()  # may prune (inexact) or not (duplicates): only a fold tells
        return self.error == 0

    def update(
        self,
        keys: np.ndarray,
        weights: np.ndarray | int = 1,
        payload: np.ndarray | None = None,
        aux: np.ndarray | None = None,
    ) -> None:
        """Add keys with a weight each (an array, or one int for all); O(1) Python work."""
        n = int(keys.size)
        if n == 0:
            return
        w = np.full(n, weights, dtype=np.int64) if isinstance(weights, int) else weights.astype(np.int64)
        self.total += int(w.sum())
        self._pending.append((keys.astype(np.uint64, copy=False), w, payload, aux))
        self._pending_rows += n
        if self._pending_rows >= self.buffer:
            self.fold()

    def merge(self, other: HeavyHitters) -> None:
        """Add another summary of the same kind (its error adds to ours)."""
        other.fold()
        if other.keys.size:
            self.update(other.keys, other.counts, other.payload if self.payload_width else None,
                        other.aux if self.aux_width else None)
            self.total += other.total - int(other.counts.sum())
        else:
            self.total += other.total
        self.error += other.error

    def fold(self) -> None:
        """Fold the pending buffer into the table (vectorised), pruning to capacity."""
        if not self._pending:
            return
        table = self.keys.size != 0
        if table or len(self._pending) > 1:
            keys = np.concatenate([self.keys, *(p[0] for p in self._pending)])
            counts = np.concatenate([self.counts, *(p[1] for p in self._pending)])
        else:  # a window's one part: no copies
            keys, counts = self._pending[0][0], self._pending[0][1]
        payload = self._stack(self.payload, 2, self.payload_width, np.uint64)
        aux = self._stack(self.aux, 3, self.aux_width, np.int64)
        self._pending = []
        self._pending_rows = 0
        # the table is sorted already: a merge sort (timsort's runs) sorts only the pending rows and merges,
        # ~30x quicker than a quicksort of a 100,000-key run table and a window's 1,000; equal keys carry the
        # same payload, so which of them gives it does not matter
        order = np.argsort(keys, kind="stable" if table else None)
        skeys = keys[order]
        starts = np.flatnonzero(np.concatenate(([True], skeys[1:] != skeys[:-1])))
        self.keys = skeys[starts]
        dup = starts.size < keys.size  # no key twice (new sources only): no sums to make
        self.counts = np.add.reduceat(counts[order], starts) if dup else counts[order]
        first = order[starts]
        self.payload = _rows_at(payload, first)
        if not self.aux_width:
            self.aux = np.zeros((starts.size, 0), dtype=np.int64)  # np.take of zero-width rows is not free
        else:
            self.aux = np.add.reduceat(aux[order], starts, axis=0) if dup else _rows_at(aux, order)
        if self.keys.size > self.capacity:
            self._prune()

    def _stack(self, current: np.ndarray, col: int, width: int, dtype: type) -> np.ndarray:
        if not width:
            rows = current.shape[0] + self._pending_rows
            return np.zeros((rows, 0), dtype=dtype)
        parts = [current]
        for p in self._pending:
            part = p[col]
            parts.append(np.zeros((p[0].size, width), dtype=dtype) if part is None else part.reshape(-1, width))
        return np.concatenate(parts)

    def _prune(self) -> None:
        k = self.capacity
        # the (k+1)-th largest count by a full sort: numpy's vectorised sort is ~10x quicker than
        # np.partition's selection on counts that are mostly equal (a run's table of single packets)
        v = int(np.sort(self.counts)[self.counts.size - (k + 1)])
        keep = self.counts > v
        self.keys = self.keys[keep]
        self.counts = self.counts[keep] - v
        self.payload = np.compress(keep, self.payload, axis=0)  # ~6x quicker than a mask index of 2-d rows
        self.aux = np.compress(keep, self.aux, axis=0)
        self.error += v

    def top(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The n heaviest keys, by count descending then key ascending: keys, counts, payload, aux."""
        self.fold()
        if self.keys.size == 0 or n <= 0:
            return self.keys[:0], self.counts[:0], self.payload[:0], self.aux[:0]
        order = np.lexsort((self.keys, -self.counts))[:n]
        return self.keys[order], self.counts[order], self.payload[order], self.aux[order]

    def clear(self) -> None:
        self.__init__(self.capacity, self.buffer, self.payload_width, self.aux_width)  # type: ignore[misc]

    def max_bytes(self) -> int:
        """Worst-case bytes held (table + buffer), times two for the transient copy while folding."""
        row = 16 + 8 * (self.payload_width + self.aux_width)
        return 2 * (self.capacity + self.buffer) * row


def _rows_at(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """a[idx] of a 2-d array's rows: np.take is ~5x quicker than fancy indexing of rows."""
    return np.take(a, idx, axis=0)
