"""Payload signature counts from a bounded sample of payload heads per window.

The detector's `floodwatch.signatures.SignatureMatcher` (Aho-Corasick over built-in signatures and IOC
patterns) is called on at most `budget` records with payload per window, spread evenly over each batch
and over the batches of the window (as many as the previous window had); counts are scaled to the
window's records with payload and by the sample rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from floodwatch.signatures import SignatureMatcher

_PER_BATCH = 64  # most payload heads checked in one batch
_MIN_PER_BATCH = 4


def load_matcher(ioc_patterns: Sequence[Mapping[str, Any]] | None = None) -> SignatureMatcher:
    """The built-in signatures, plus IOC patterns when given (unusable ones listed in `rejected_iocs`)."""
    return SignatureMatcher.with_iocs(ioc_patterns) if ioc_patterns else SignatureMatcher.default()


class WindowSignatures:
    def __init__(self, matcher: SignatureMatcher | None, budget: int, sampler: SignatureSampler | None = None) -> None:
        self.matcher = matcher
        self.budget = budget
        self.sampler = sampler
        self.per_batch = 0  # set at the first batch, from the last finished window
        self.batches = 0
        self.checked = 0
        self._est: dict[str, float] = {}
        self._covered = 0  # scaled records with payload whose batch was sampled
        self._uncovered = 0  # scaled records with payload after the budget ran out

    def add(self, recs: np.ndarray, rate: int) -> None:
        if self.matcher is None:
            return
        pay = np.flatnonzero(recs["paylen"] > 0)
        if pay.size == 0:
            return
        self.batches += 1
        if not self.per_batch:
            self.per_batch = self.sampler.per_batch(self.budget) if self.sampler else _PER_BATCH
        left = min(self.budget - self.checked, self.per_batch, int(pay.size))
        if left <= 0:
            self._uncovered += int(pay.size) * rate
            return
        pick = pay[even_picks(int(pay.size), left)]
        counts = self.matcher.count(recs[pick])
        self.checked += left
        self._covered += int(pay.size) * rate
        scale = pay.size / left * rate
        for name, c in counts.items():
            self._est[name] = self._est.get(name, 0.0) + c * scale

    def result(self) -> dict[str, int]:
        if self.sampler is not None and self.batches:
            self.sampler.last_batches = self.batches
        if not self._est:
            return {}
        scale = (self._covered + self._uncovered) / self._covered if self._covered else 1.0
        return {name: round(v * scale) for name, v in self._est.items() if round(v * scale) > 0}


def even_picks(size: int, k: int) -> np.ndarray:
    """np.linspace(0, size - 1, k).astype(np.intp) for 1 <= k <= size (the same float arithmetic), without
    linspace's Python-level checks (~10 us a call, once per batch with payload)."""
    if k == 1:
        return np.zeros(1, dtype=np.intp)
    y = np.arange(k, dtype=np.float64) * ((size - 1) / (k - 1))
    y[-1] = size - 1
    return y.astype(np.intp)


class SignatureSampler:
    """Holds the current matcher; each window gets its own bounded counter."""

    def __init__(self, matcher: SignatureMatcher | None = None) -> None:
        self.matcher = matcher
        self.last_batches = 0  # batches with payload in the last finished window

    def window(self, budget: int) -> WindowSignatures:
        return WindowSignatures(self.matcher, budget, self)

    def per_batch(self, budget: int) -> int:
        """Heads to check per batch: the budget spread over as many batches as the last window had."""
        if not self.last_batches:
            return _PER_BATCH
        return max(_MIN_PER_BATCH, min(_PER_BATCH, budget // self.last_batches))
