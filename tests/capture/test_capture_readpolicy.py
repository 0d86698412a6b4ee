"""The capture ring's reading policy (lazy / peek / half-way check / quiet) with a fake clock and a fake ring.

The timing of the real thing (how soon a flood after a trickle is read, how many readings a silent link
costs) is measured by `benchmarks/capture_reading.py`.
"""

from __future__ import annotations

import dataclasses

import pytest

from floodwatch.capture.readpolicy import READING_MARGIN, ReadPolicy
from floodwatch.settings.capture import CaptureSettings

T0 = 1000.0
# readings 1 s apart (exact in binary floating point), ring blocks handed over after 100 ms at the latest
SLOW = CaptureSettings(counter_interval=1.0, busy_counter_interval=0.5, quiet_interval=2.0, lazy_pps=2000,
                       ring_blocks=32, ring_block_timeout_ms=100)


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeRing:
    """Blocks the kernel hands over at given times; wait() moves the clock to the next one (or the timeout)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.blocks: list[tuple[float, int]] = []  # (handed over at, packets), not read yet
        self.waits: list[float] = []

    def hand_over(self, at: float, packets: int) -> None:
        self.blocks.append((at, packets))
        self.blocks.sort()

    def _ready(self) -> list[int]:
        return [n for at, n in self.blocks if at <= self.clock.t]

    def wait(self, timeout_ms: float) -> None:
        self.waits.append(timeout_ms)
        if self._ready():
            return
        later = [at for at, _ in self.blocks if at > self.clock.t]
        self.clock.t = min([self.clock.t + timeout_ms / 1000, *later])

    def ready_packets(self) -> int:
        ready = self._ready()
        return ready[0] if ready else 0

    def pending_packets(self) -> int:
        return sum(self._ready())


def lazy_policy(s: CaptureSettings = SLOW) -> tuple[ReadPolicy, Clock, FakeRing]:
    """A policy that saw a 50 packets/s trickle at its last two readings (T0 - 1 and T0): lazy."""
    clock = Clock(T0 - 1)
    p = ReadPolicy(s, lateness=0.05, clock=clock)
    assert p.on_reading(1000, clock.t) is False and not p.lazy  # the first reading has no rate
    clock.t = T0
    assert p.on_reading(1050, clock.t) is False
    assert p.lazy and not p.quiet
    return p, clock, FakeRing(clock)


def test_a_trickle_makes_the_reader_lazy_and_a_flood_found_at_a_reading_ends_it() -> None:
    p, clock, _ = lazy_policy()
    clock.t += 1.0
    assert p.on_reading(1100, clock.t) is False and p.lazy  # still 50 packets/s
    clock.t += 1.0
    assert p.on_reading(1100 + 50_000, clock.t) is True  # 50,000 packets/s: sampling decided now
    assert not p.lazy and p.lazy_exits == 0  # found by a reading, not between readings
    clock.t += 1.0
    assert p.on_reading(1100 + 50_000 + 9000, clock.t) is False and not p.lazy  # busy, not lazy again


def test_lazy_only_when_the_ring_holds_one_and_a_half_readings_of_a_trickle() -> None:
    small = dataclasses.replace(SLOW, ring_blocks=8)  # 8 x 100 ms < 1.5 s
    clock = Clock()
    p = ReadPolicy(small, lateness=0.05, clock=clock)
    p.on_reading(1000, T0)
    assert p.on_reading(1050, T0 + 1) is False and not p.lazy
    default = ReadPolicy(CaptureSettings(), lateness=0.05, clock=clock)  # 16 x 10 ms >= 1.5 x 100 ms
    default.on_reading(1000, T0)
    default.on_reading(1005, T0 + 0.1)
    assert default.lazy


def test_a_full_first_block_after_a_reading_is_a_flood_read_at_once() -> None:
    p, clock, ring = lazy_policy()
    ring.hand_over(T0 + 0.02, p.flood_block)  # the first block after the reading is full
    step = p.lazy_step(ring, timer_ms=1000)
    assert ring.waits == [1000] and clock.t == T0 + 0.02  # slept on the ring until the block came
    assert step.eager and step.poll_ms == 0
    assert not p.lazy and p.lazy_exits == 1


def test_no_block_before_the_reading_leaves_the_reader_lazy() -> None:
    p, clock, ring = lazy_policy()
    step = p.lazy_step(ring, timer_ms=1000)
    assert not step.eager and step.poll_ms == 0 and clock.t == T0 + 1.0 and p.lazy  # the reading is due


def test_a_trickle_block_takes_the_peek_and_the_half_way_check_finds_a_later_flood() -> None:
    p, clock, ring = lazy_policy()
    ring.hand_over(T0 + 0.1, 5)  # a trickle's block: the peek sees no flood
    step = p.lazy_step(ring, timer_ms=1000)
    assert not step.eager and p.lazy and clock.t == T0 + 0.1
    clock.t = T0 + 0.25
    step = p.lazy_step(ring, timer_ms=750)  # no more peeking: sleep to the half-way check (T0 + 0.5)
    assert not step.eager and step.poll_ms == 250 and ring.waits == [1000]
    for k in range(3):  # a flood from T0 + 0.3: full blocks, none of them the first after the reading
        ring.hand_over(T0 + 0.3 + k * 0.05, 20_000)
    clock.t = T0 + 0.5
    step = p.lazy_step(ring, timer_ms=500)
    assert step.eager and not p.lazy and p.lazy_exits == 1


def test_the_half_way_check_leaves_a_trickle_for_the_reading() -> None:
    p, clock, ring = lazy_policy()
    for k in range(5):  # 50 packets/s handed over in blocks of 5 every 100 ms
        ring.hand_over(T0 + 0.1 * (k + 1), 5)
    assert not p.lazy_step(ring, timer_ms=1000).eager
    clock.t = T0 + 0.5
    step = p.lazy_step(ring, timer_ms=500)
    assert not step.eager and step.poll_ms == 0 and p.lazy and ring.pending_packets() == 25
    assert p.lazy_step(ring, timer_ms=500).poll_ms == 500  # checked once: now it sleeps to the reading
    # up to twice lazy_pps since the reading is still a trickle; more is a flood
    p.on_reading(1050 + 50, T0 + 1)
    clock.t = T0 + 1.0
    ring.blocks = [(T0 + 1.05, 5)]
    assert not p.lazy_step(ring, timer_ms=1000).eager
    ring.hand_over(T0 + 1.2, 2000 - 5)  # exactly 2 x 2000 packets/s x 0.5 s by T0 + 1.5
    clock.t = T0 + 1.5
    assert p.lazy_step(ring, timer_ms=500).eager


def test_a_silent_link_is_read_slowly_and_the_first_packet_brings_back_exact_counters() -> None:
    clock = Clock()
    p = ReadPolicy(SLOW, lateness=0.05, clock=clock)
    p.on_reading(1000, T0)
    assert not p.woke()  # not quiet: packets read eagerly change nothing
    assert p.on_reading(1000, T0 + 1) is False and p.quiet and not p.lazy
    stretched = p.slow(0.1, factor=5.0)
    assert stretched() == 10.0  # quiet_interval x 5 while silent
    assert p.woke() and not p.quiet and not p.woke()  # once: read the counters now
    assert stretched() == 0.1
    # the reading the packet asked for covers the silence: its low rate does not make the reader lazy
    assert p.on_reading(1001, T0 + 1.2) is False and not p.lazy and not p.quiet
    assert p.on_reading(1051, T0 + 2.2) is False and p.lazy  # the next one, at 50 packets/s, does


def test_a_long_silence_is_read_every_idle_interval_and_the_first_packet_still_reads_at_once() -> None:
    clock = Clock()
    p = ReadPolicy(SLOW, lateness=0.05, clock=clock)  # quiet 2 s; idle_interval 5 s after idle_after 10 s
    p.on_reading(1000, T0)
    t = T0 + 1.0
    for _ in range(5):  # the first idle_after seconds of a silence: quiet_interval (a resolving incident)
        clock.t = t
        p.on_reading(1000, t)
        assert p.quiet and p.next_reading() <= 2.0
        t += 2.0
    clock.t = t  # 10 s into the silence: every idle_interval, on the window grid
    p.on_reading(1000, t)
    assert 2.0 < p.next_reading() <= 5.0
    clock.t = t + p.next_reading()
    p.on_reading(1000, clock.t)
    assert p.next_reading() == pytest.approx(5.0)
    # a link's chatter (two router solicitations) is read at once, and the silence after it stays idle
    assert p.woke() and not p.quiet
    p.on_reading(1002, clock.t + 0.01)
    clock.t += 1.0
    p.on_reading(1002, clock.t)
    assert p.quiet and p.next_reading() == pytest.approx(5.0, abs=1.0)
    # traffic (a flood's first reading): read at once, and quiet_interval again for idle_after after it
    assert p.woke()
    p.on_reading(3002, clock.t + 0.05)
    clock.t += 1.0
    p.on_reading(3002, clock.t)
    assert p.quiet and p.next_reading() <= 2.0
    off = ReadPolicy(dataclasses.replace(SLOW, idle_interval=0.0), lateness=0.05, clock=clock)
    off.on_reading(1000, T0)
    off.on_reading(1000, T0 + 1)
    clock.t = T0 + 100
    assert off.quiet and off.next_reading() <= 2.0


def test_quiet_interval_zero_never_slows_down() -> None:
    p = ReadPolicy(dataclasses.replace(SLOW, quiet_interval=0.0), lateness=0.05, clock=Clock())
    p.on_reading(1000, T0)
    p.on_reading(1000, T0 + 1)
    assert not p.quiet and not p.woke()


@pytest.mark.parametrize(("now", "state", "expected"), [
    (T0, "busy", 0.055),  # the grid: multiples of the step plus lateness and the margin
    (T0 + 0.06, "busy", 0.495),  # busy_counter_interval 0.5
    (T0 + 0.06, "lazy", 0.995),  # counter_interval 1.0
    (T0 + 0.06, "quiet", 1.995),  # quiet_interval 2.0 (T0 + 0.055 is on the 2 s grid: 1000 is even)
])
def test_readings_keep_to_the_aggregators_window_grid(now: float, state: str, expected: float) -> None:
    assert READING_MARGIN == 0.005
    clock = Clock(now)
    p = ReadPolicy(SLOW, lateness=0.05, clock=clock)
    p.lazy, p.quiet = state == "lazy", state == "quiet"
    assert p.next_reading() == pytest.approx(expected)
    clock.t += p.next_reading() + 0.001  # just after a reading: the next one is a whole step later
    assert p.next_reading() == pytest.approx({"busy": 0.5, "lazy": 1.0, "quiet": 2.0}[state] - 0.001)


def test_while_the_kernel_samples_the_ring_is_read_at_the_readings_and_half_way() -> None:
    clock = Clock()
    p = ReadPolicy(CaptureSettings(), lateness=0.05, clock=clock)  # 32 blocks x 10 ms >= 2 x 100 ms
    p.on_reading(1000, T0)
    p.on_rate(1)
    assert not p.paced  # 1 in 1: every block at once
    p.on_rate(32)  # a flood over the budget: paced, and what the ring holds now (unsampled) is read at once
    assert p.paced and p.read_now() and not p.read_now()
    p.on_rate(64)  # already sampling: the readings read the ring
    assert p.paced and not p.read_now()
    assert p.half_wait_ms() == pytest.approx(50)
    clock.t = T0 + 0.05  # half way to the next reading: once
    assert p.read_now() and not p.read_now() and p.half_wait_ms() == 1000
    clock.t = T0 + 0.1
    p.on_reading(400_000, clock.t)
    assert p.paced and not p.read_now() and p.half_wait_ms() == pytest.approx(50)
    p.on_rate(1)  # the flood is over: every block at once again
    assert not p.paced
    p.on_rate(4)
    assert p.paced and p.read_now()


def test_paced_reading_stops_on_a_silent_link_and_needs_a_ring_that_holds_two_readings() -> None:
    clock = Clock()
    p = ReadPolicy(CaptureSettings(), lateness=0.05, clock=clock)
    p.on_rate(16)
    p.on_reading(1000, T0)
    assert p.paced
    p.on_reading(1000, T0 + 0.1)  # silent: the ring wakes the reader at its first block instead
    assert p.quiet and not p.paced
    assert p.woke() and p.paced
    for settings in (CaptureSettings(ring_blocks=16),  # 16 x 10 ms < 2 x 100 ms
                     CaptureSettings(busy_counter_interval=0.2),  # 32 x 10 ms < 2 x 200 ms
                     CaptureSettings(paced_reads=False),
                     CaptureSettings(source="pcap", pcap_file="x.pcap")):
        other = ReadPolicy(settings, lateness=0.05, clock=clock)
        other.on_rate(16)
        assert not other.paced, settings
