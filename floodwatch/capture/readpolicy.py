"""When live capture reads its ring and its counters: pure logic with an injected (wall) clock.

Three modes, decided at each counter reading from the wire rate since the previous one:

* eager (the default): every block the kernel hands over is read at once;
* lazy (AF_PACKET, 0 < rate < lazy_pps, the ring holds 1.5 counter intervals of a trickle's blocks):
  the ring is read at each counter reading only, so a trickle does not wake every actor on the path at
  each block. A flood must not wait for the next reading, so the reader looks at the first block handed
  over after each reading (a full one is a flood starting: eager at once) and, if that block was a
  trickle's, counts every packet handed over since the reading half way to the next one (more than a
  trickle's worth is a flood that began after the first block: eager);
* paced (AF_PACKET, the kernel samples 1 in N > 1, paced_reads and the ring holds two busy readings'
  worth of blocks): a flood above the budget; the ring is read at each counter reading and half way
  between two, all the blocks handed over at once (one parse, one batch), not at every block; when
  sampling starts, what the ring holds (the flood's unsampled start) is read at once;
* quiet (quiet_interval > 0 and no packet since the last reading): readings every quiet_interval, and
  every idle_interval once idle_after has passed since the last reading at IDLE_RESET_PPS or more (a
  link's chatter, a few packets now and then, does not count as traffic there); the first packet after
  the silence brings back exact counters at once (and no lazy mode at that reading, whose rate covers
  the silence).

Readings keep to the aggregator's windows: each comes just after a window's end plus the aggregator's
lateness, so the records and counters it sends close that window at once.

The actor (actors/capture.py) does the I/O: it asks `lazy_step` what to do while lazy, tells the policy
about packets (`woke`) and readings (`on_reading`), and schedules readings with `next_reading`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from floodwatch.settings.capture import CaptureSettings

READING_MARGIN = 0.005  # seconds after window end + lateness at which the counters are read
# A reading at a lower rate, over one second at least (a link's chatter: router solicitations, ARP), does
# not restart the idle clock: idle_after counts from the last reading with traffic an incident could be
# made of.
IDLE_RESET_PPS = 10.0


class Ring(Protocol):
    """What the policy needs of a live source's ring."""

    def wait(self, timeout_ms: float) -> None:
        """Block until the kernel hands over a block, or the timeout."""

    def ready_packets(self) -> int:
        """Packets in the first block handed over and not read yet."""

    def pending_packets(self) -> int:
        """Packets in every block handed over and not read yet."""


@dataclass(frozen=True)
class LazyStep:
    eager: bool  # a flood: read every block from now on (and the counters now)
    poll_ms: float  # then wait this long for timers and control


class ReadPolicy:
    def __init__(self, s: CaptureSettings, lateness: float, clock: Callable[[], float]) -> None:
        self.s = s
        self.lateness = lateness
        self.clock = clock
        self.lazy = False
        self.quiet = False  # the link was silent at the last counter reading
        self.lazy_exits = 0  # floods (or busier traffic) seen by a lazy reader between readings
        self._woken = False  # the next reading was asked for by the first packet after a silence
        self._peek = True  # lazy: look at the first block handed over after a reading
        self._check_at = 0.0  # lazy: when to count every block handed over since the reading
        self._last_wire = -1
        self._last_time = 0.0
        self._busy_at = 0.0  # the last reading at IDLE_RESET_PPS or more (or the first reading)
        # a block with this many packets is no trickle (twice lazy_pps over one ring block timeout)
        self.flood_block = max(8, 2 * s.lazy_pps * s.ring_block_timeout_ms // 1000)
        # a trickle hands over one block per ring_block_timeout_ms: lazy reading needs a ring that holds
        # one and a half counter intervals of those (the default 16 blocks x 10 ms: 160 ms for 100 ms)
        self.lazy_fits = 1.5 * s.counter_interval <= s.ring_blocks * s.ring_block_timeout_ms / 1000
        # paced reading keeps to half the ring between readings (blocks come at most every timeout)
        self.paced_fits = (s.source == "afpacket" and s.paced_reads
                           and 2 * s.busy_counter_interval <= s.ring_blocks * s.ring_block_timeout_ms / 1000)
        self.sampling = False  # the kernel keeps 1 in N > 1
        self._read_now = False  # paced: sampling just started, read the ring at once
        self._half_at = 0.0  # paced: also read half way between readings (less work at the reading)

    # -- events ----------------------------------------------------------------------------------
    def woke(self) -> bool:
        """Packets were read eagerly. True for the first after a silence: read the counters now."""
        if not self.quiet:
            return False
        self.quiet, self._woken = False, True
        return True

    def on_reading(self, wire: int, now: float) -> bool:
        """A counter reading at `now` found `wire` packets in total (both directions). True when it ended
        lazy reading for a flood: decide the sampling rate now, not at the controller's turn."""
        s = self.s
        # silent since the last reading: downstream still gets windows (the aggregator fills the gap
        # with empty ones), but every actor on the path wakes once a second instead of ten times
        self.quiet = s.quiet_interval > 0 and wire == self._last_wire
        rate = (wire - self._last_wire) / max(now - self._last_time, 1e-3) if self._last_wire >= 0 else 0.0
        # packets per second over a second at least: a lone packet soon after a reading is no traffic
        if wire - self._last_wire >= IDLE_RESET_PPS * max(now - self._last_time, 1.0) or not self._busy_at:
            self._busy_at = now
        was_lazy = self.lazy
        self.lazy = (s.source == "afpacket" and not self.quiet and not self._woken and self.lazy_fits
                     and 0 < rate < s.lazy_pps)
        self._woken = False
        self._peek = True
        self._check_at = now + s.counter_interval / 2 if self.lazy else 0.0
        self._last_wire, self._last_time = wire, now
        self._half_at = now + s.busy_counter_interval / 2
        return was_lazy and not self.lazy and rate >= s.lazy_pps

    def lazy_step(self, ring: Ring, timer_ms: float) -> LazyStep:
        """One turn of the lazy loop, `timer_ms` before the next timer: peek at the first block after the
        reading, else wait to the half-way check and count what was handed over since the reading."""
        if self._peek:
            ring.wait(timer_ms)
            waiting = ring.ready_packets()
            if waiting >= self.flood_block:
                return self._go_eager()
            if waiting:
                self._peek = False  # a trickle's block: it waits for the reading
            return LazyStep(eager=False, poll_ms=0)
        if not self._check_at:
            return LazyStep(eager=False, poll_ms=timer_ms)
        now = self.clock()
        left = self._check_at - now
        if left > 0:
            return LazyStep(eager=False, poll_ms=min(timer_ms, math.ceil(left * 1000)))
        self._check_at = 0.0
        since = max(now - self._last_time, 0.01)
        if ring.pending_packets() >= max(self.flood_block, 2 * self.s.lazy_pps * since):
            return self._go_eager()
        return LazyStep(eager=False, poll_ms=0)

    def _go_eager(self) -> LazyStep:
        self.lazy = False
        self.lazy_exits += 1
        return LazyStep(eager=True, poll_ms=0)

    def on_rate(self, rate: int) -> None:
        """The kernel now keeps 1 in `rate` packets: paced reading while it samples (rate > 1)."""
        if rate > 1 and not self.sampling:
            self._read_now = True  # the blocks admitted so far (a flood's start, unsampled) at once
        self.sampling = rate > 1

    @property
    def paced(self) -> bool:
        """Read the ring at the readings only: the kernel samples (a flood) and the link is not silent (a
        silent link waits for its first packet, as in eager mode)."""
        return self.sampling and self.paced_fits and not self.quiet

    def read_now(self) -> bool:
        """Paced: True once after sampling started (read what the ring holds now), and once half way
        between two readings (so that the reading, which closes a window, has half as much to read)."""
        if self._half_at and self.clock() >= self._half_at:
            self._read_now, self._half_at = True, 0.0
        now, self._read_now = self._read_now, False
        return now

    def half_wait_ms(self) -> float:
        """Paced: milliseconds to the half-way read (1000 when it was done)."""
        return max(0.0, (self._half_at - self.clock()) * 1000) if self._half_at else 1000.0

    # -- schedule --------------------------------------------------------------------------------
    def next_reading(self) -> float:
        """Seconds to the next counter reading, on the aggregator's window grid."""
        s = self.s
        if self.quiet:
            step = max(s.counter_interval, s.quiet_interval)
            if s.idle_interval and self._busy_at and self.clock() - self._busy_at >= s.idle_after:
                step = max(step, s.idle_interval)
        elif self.lazy or s.source != "afpacket":
            step = s.counter_interval
        else:
            step = s.busy_counter_interval
        phase = self.lateness + READING_MARGIN
        now = self.clock()
        return (math.floor((now - phase) / step) + 1) * step + phase - now

    def slow(self, seconds: float, factor: float = 1.0) -> Callable[[], float]:
        """A timer period that stretches to quiet_interval (x factor) while the link is silent."""
        quiet = max(seconds, self.s.quiet_interval * factor)
        return lambda: quiet if self.quiet else seconds
