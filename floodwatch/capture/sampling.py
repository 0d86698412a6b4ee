"""The adaptive sampling controller: 1 in N packets reach Python, N chosen to keep within a budget.

Pure logic with an injected clock. It is fed the exact number of packets the kernel saw on the watched
interfaces (cumulative interface counters) and the capture's kernel drops; it answers with the 1-in-N
rate to use. N is a power of two. It rises at once when the load would pass 80 % of the budget (or the
ring dropped packets), and falls only after the load has stayed under 50 % of the budget at the lower
rate for `hold` seconds, so that it does not flap.
"""

from __future__ import annotations

from collections.abc import Callable

UP_HEADROOM = 0.8
DOWN_HEADROOM = 0.5


def pow2_at_least(x: float) -> int:
    n = 1
    while n < x:
        n <<= 1
    return n


class SamplingController:
    def __init__(self, budget_pps: int, max_rate: int, clock: Callable[[], float],
                 fixed_rate: int = 0, hold: float = 2.0) -> None:
        self.budget = float(budget_pps)
        self.max_rate = max_rate
        self.clock = clock
        self.fixed = fixed_rate
        self.hold = hold
        self.rate = fixed_rate or 1
        self.changes = 0
        self.last_pps = 0.0
        self._last: tuple[float, int, int] | None = None
        self._low_since: float | None = None

    def update(self, packets_total: int, drops_total: int = 0) -> int:
        """Feed cumulative counters; returns the rate to use from now on."""
        now = self.clock()
        if self.fixed:
            return self.rate
        last, self._last = self._last, (now, packets_total, drops_total)
        if last is None:
            return self.rate
        dt = now - last[0]
        delta = packets_total - last[1]
        if dt <= 0 or delta < 0:  # counters were reset (interface re-created): start over
            return self.rate
        pps = self.last_pps = delta / dt
        up = pow2_at_least(pps / (self.budget * UP_HEADROOM))
        if drops_total > last[2] and self.rate < self.max_rate:
            up = max(up, self.rate * 2)  # the ring overflowed at this rate: Python is too slow for it
        if up > self.rate:
            return self._set(min(up, self.max_rate))
        down = pow2_at_least(pps / (self.budget * DOWN_HEADROOM))
        if down < self.rate:
            if self._low_since is None:
                self._low_since = now
            elif now - self._low_since >= self.hold:
                return self._set(max(down, self.rate // 4, 1))
        else:
            self._low_since = None
        return self.rate

    def _set(self, rate: int) -> int:
        if rate != self.rate:
            self.changes += 1
        self.rate = rate
        self._low_since = None
        return rate
