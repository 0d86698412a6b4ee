"""Exact traffic from cumulative kernel counters: deltas (with wrap and reset handling) spread over
the windows each sampling interval covers.

A counter that goes down is either a 32-bit counter wrapping (the previous value was at least 2**31
and below 2**32: delta = new + 2**32 - old) or a reset (the interface was re-created or the counters
cleared: delta = new, the traffic since the reset). Each is counted in `wraps` / `resets`.
The delta between two samples at t0 < t1 is split over the windows overlapping (t0, t1]: in proportion
to the packet records each window holds in that stretch of time when there are enough of them (the
records say when the packets came; a flood that began late in the interval is not spread back over its
start), else in proportion to the overlap; with cumulative rounding so the parts add up exactly.
Records are only a fair sample of the interval when none were lost in it: an interval whose kernel
drops or send drops grew is split by time. Records may also lag the counters (capture behind): they
then cover the interval only up to the last record's time; that part gets the share of the delta the
records account for, and the rest of the kernel's count goes by time to the part not covered yet
(never onto the windows that happen to have records already: a steady flood read late is no 3x burst).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

from floodwatch.messages import CounterSample

FIELDS = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "kernel_drops", "send_drops")
WEIGHED = {"rx_packets": 0, "rx_bytes": 0, "tx_packets": 1, "tx_bytes": 1}  # by inbound / outbound records
MIN_WEIGHT = 8.0  # fewer records than this in an interval (one direction): split by time instead
# (window index, t0, t1) -> (inbound, outbound) records of that window within (t0, t1], or None if unknown
Weigh = Callable[[int, float, float], "tuple[float, float] | None"]
_WRAP32 = 1 << 32
# Timestamps are float epoch seconds (about 0.24 us resolution today) made from integer us or ns: a
# packet stamped on a window boundary must land in the later window whatever the float rounding.
BOUNDARY_SLACK = 5e-7


def window_index(ts: float, width: float) -> int:
    return math.floor((ts + BOUNDARY_SLACK) * round(1 / width))


def counter_delta(old: int, new: int) -> tuple[int, str]:
    """(delta, kind) with kind "" for a normal step, "wrap" or "reset"."""
    if new >= old:
        return new - old, ""
    if (1 << 31) <= old < _WRAP32:
        return new + _WRAP32 - old, "wrap"
    return new, "reset"


@dataclass
class Piece:
    """The part of one interval's deltas that falls into one window."""

    window: int
    values: dict[str, int]


class CounterTracker:
    def __init__(self, width: float, max_windows: int = 100) -> None:
        self.width = width
        self.per_second = round(1 / width)
        self.max_windows = max_windows
        self.last: dict[str, CounterSample] = {}
        self.wraps = 0
        self.resets = 0
        self.unweighed = 0  # intervals split by time because records were lost in them
        self.conn_count = -1

    def feed(self, s: CounterSample, weigh: Weigh | None = None, records_until: float = math.inf) -> list[Piece]:
        """One sample -> the pieces of its delta per window (nothing for an interface's first sample).
        `records_until`: the time up to which this interface's records have arrived (they lag the
        kernel's count when capture is behind)."""
        if s.conn_count >= 0:
            self.conn_count = s.conn_count
        prev = self.last.get(s.iface)
        self.last[s.iface] = s
        if prev is None:
            return []
        deltas: dict[str, int] = {}
        kinds = set()
        for name in FIELDS:
            deltas[name], kind = counter_delta(getattr(prev, name), getattr(s, name))
            kinds.add(kind)
        if "reset" in kinds:  # counted once per sample
            self.resets += 1
        elif "wrap" in kinds:
            self.wraps += 1
        if deltas["kernel_drops"] or deltas["send_drops"]:
            # records were lost in this interval (ring overflow, batches dropped): those left are no
            # fair sample of when the packets came, and weighing by them would pile the interval's
            # packets into the windows that kept records
            weigh = None
            self.unweighed += 1
        return self.split(prev.ts, s.ts, deltas, weigh, records_until)

    def split(self, t0: float, t1: float, deltas: dict[str, int], weigh: Weigh | None = None,
              records_until: float = math.inf) -> list[Piece]:
        w1 = window_index(t1 - 2 * BOUNDARY_SLACK, self.width)  # the interval is (t0, t1]
        w0 = window_index(t0, self.width)
        if t1 <= t0 or w1 == w0 or w1 - w0 > self.max_windows:
            return [Piece(w1, dict(deltas))]
        bounds = [(w + 1) / self.per_second for w in range(w0, w1)]  # window ends inside (t0, t1)
        edges = [t0, *bounds, t1]
        by_time = [(b - a) / (t1 - t0) for a, b in itertools.pairwise(edges)]
        shares = [by_time, by_time]  # [inbound, outbound] fraction of the delta per window
        if weigh is not None:
            shares = self._weighed(edges, w0, deltas, weigh, min(max(records_until, t0), t1), shares)
        return self._pieces(w0, by_time, shares, deltas)

    @staticmethod
    def _weighed(edges: list[float], w0: int, deltas: dict[str, int], weigh: Weigh, until: float,
                 fallback: list[list[float]]) -> list[list[float]]:
        """Shares by the records up to `until` (the part of the interval they cover), the rest of the
        kernel's count by time over the part they do not cover yet: records that lag are never taken
        as a flood that stopped (nor their windows' share as the whole interval's)."""
        parts = list(itertools.pairwise(edges))
        weights = [weigh(w0 + i, a, min(b, until)) if a < until else (0.0, 0.0) for i, (a, b) in enumerate(parts)]
        if any(w is None for w in weights):
            return fallback
        late = [max(0.0, b - max(a, until)) for a, b in parts]
        late_total = sum(late)
        out = []
        for d, count in ((0, deltas["rx_packets"]), (1, deltas["tx_packets"])):
            seen = sum(w[d] for w in weights if w is not None)
            if seen < MIN_WEIGHT:
                out.append(fallback[d])
                continue
            covered = 1.0 if late_total <= 0 or count <= 0 else min(1.0, seen / count)
            rest = [(1.0 - covered) * x / late_total for x in late] if late_total > 0 else [0.0] * len(parts)
            out.append([covered * w[d] / seen + r for w, r in zip(weights, rest, strict=True) if w is not None])
        return out

    def _pieces(self, w0: int, by_time: list[float], shares: list[list[float]],
                deltas: dict[str, int]) -> list[Piece]:
        # cumulative fractions at each window end: [time, inbound, outbound]
        cum = [[0.0, 0.0, 0.0]]
        for i in range(len(by_time)):
            prev = cum[-1]
            cum.append([prev[0] + by_time[i], prev[1] + shares[0][i], prev[2] + shares[1][i]])
        done = dict.fromkeys(deltas, 0)
        pieces: list[Piece] = []
        last = len(by_time) - 1
        for i in range(last + 1):
            part = {}
            for name, total in deltas.items():
                col = 1 + WEIGHED[name] if name in WEIGHED else 0
                upto = total if i == last else round(total * cum[i + 1][col])
                part[name] = upto - done[name]
                done[name] = upto
            pieces.append(Piece(w0 + i, part))
        return pieces
