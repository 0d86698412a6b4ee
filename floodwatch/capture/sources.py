"""Packet sources: `afpacket` (live rings), `pcap` (file replay). `pyshark` lives in pyshark_source.py.

A source is pumped by the capture actor: `pump(out)` does a bounded amount of work (a few ring blocks,
one file chunk) and returns how many packets it handled; 0 means idle, then `idle_ms()` says how long
the actor may sleep. Live sources also produce CounterSamples and take sample-rate changes.
"""

from __future__ import annotations

import math
import select
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from floodwatch.capture.fastparse import parse_many
from floodwatch.capture.ifstats import IfCounters, IfStats
from floodwatch.capture.output import NOTHING_DUE_MS, Output
from floodwatch.capture.parse import Buf
from floodwatch.capture.pcapfile import Chunk, PcapReader
from floodwatch.capture.ring import Block, Ring
from floodwatch.errors import CaptureError
from floodwatch.messages import CounterSample
from floodwatch.settings.capture import CaptureSettings

BLOCKS_PER_PUMP = 4
RATE_SPLIT_WINDOW = 5.0  # seconds after a rate change during which blocks are checked for older packets


def frame_rows(buf: Buf, ts: np.ndarray, wires: np.ndarray, offs: np.ndarray, caps: np.ndarray,
               snaplen: int) -> list[list[Any]]:
    """FrameBatch rows [ts, wirelen, data] of the frames buf[offs[i]:offs[i] + caps[i]] (at most snaplen
    bytes each): one tolist() per column, no numpy scalar per frame."""
    ends = (offs + np.minimum(caps, snaplen)).tolist()
    return [[t, w, buf[o:e]] for t, w, o, e in zip(ts.tolist(), wires.tolist(), offs.tolist(), ends, strict=True)]


class PcapSource:
    """Replay a pcap/pcapng file: as fast as possible (speed 0) or paced by its timestamps."""

    name = "pcap"
    live = False

    def __init__(self, settings: CaptureSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.ifaces = ["pcap"]
        self.speed = settings.speed
        self.clock = clock
        self.reader = PcapReader(settings.pcap_file)
        self._flat = np.frombuffer(self.reader.buf, dtype=np.uint8)
        self._chunks: Iterator[Chunk] = self.reader.chunks(settings.batch_records)
        self.pending: Chunk | None = None
        self.finished = False
        self.error = ""
        self.packets = 0
        self.last_ts = 0.0
        self._t0: tuple[float, float] | None = None  # (file time, clock time) of the first packet

    def _next_chunk(self) -> Chunk | None:
        if self.pending is not None:
            chunk, self.pending = self.pending, None
            return chunk
        try:
            return next(self._chunks)
        except StopIteration:
            self.finished = True
        except CaptureError as e:
            self.finished, self.error = True, str(e)
        return None

    def _due(self, chunk: Chunk) -> Chunk | None:
        """The part of the chunk whose time has come (speed > 0); the rest stays pending."""
        if self._t0 is None:
            self._t0 = (float(chunk.ts[0]), self.clock())
        f0, c0 = self._t0
        file_now = f0 + (self.clock() - c0) * self.speed
        k = int(np.searchsorted(chunk.ts, file_now, side="right"))
        if k < len(chunk):
            self.pending = Chunk(chunk.linktype, chunk.ts[k:], chunk.offs[k:], chunk.caps[k:], chunk.wires[k:])
        if k == 0:
            return None
        return Chunk(chunk.linktype, chunk.ts[:k], chunk.offs[:k], chunk.caps[:k], chunk.wires[:k])

    def pump(self, out: Output) -> int:
        if self.finished:
            return 0
        chunk = self._next_chunk()
        if chunk is not None and self.speed > 0:
            chunk = self._due(chunk)
        if chunk is None:
            return 0
        rows = parse_many(self.reader.buf, chunk.offs, chunk.caps, chunk.wires, chunk.linktype, self._flat)
        rows["ts"] = chunk.ts
        out.add_rows(0, rows, 1)
        self.packets += len(chunk)
        self.last_ts = float(chunk.ts[-1])
        k = out.frames_wanted(len(chunk), now=self.last_ts)
        if k:
            out.add_frames(0, chunk.linktype, 1, frame_rows(self.reader.buf, chunk.ts[:k], chunk.wires[:k],
                                                            chunk.offs[:k], chunk.caps[:k], out.snaplen))
        return len(chunk)

    def idle_ms(self) -> float:
        if self.finished:
            return 100.0
        if self.pending is None or self._t0 is None:
            return 0.0
        f0, c0 = self._t0
        wait = (float(self.pending.ts[0]) - f0) / self.speed - (self.clock() - c0)
        return max(0.0, min(50.0, wait * 1000))

    def close(self) -> None:
        del self._flat
        self.reader.close()


class FailedSource:
    """A file that could not be opened: the stream ends at once, with the error."""

    name = "pcap"
    live = False
    finished = True
    packets = 0
    last_ts = 0.0

    def __init__(self, error: str) -> None:
        self.ifaces = ["pcap"]
        self.error = error

    def pump(self, out: Output) -> int:
        return 0

    def idle_ms(self) -> float:
        return 100.0

    def close(self) -> None:
        pass


class AfPacketSource:
    """Live capture on one or more interfaces through TPACKET_V3 rings, sampled in the kernel."""

    name = "afpacket"
    live = True
    finished = False
    error = ""

    def __init__(self, settings: CaptureSettings, ifaces: list[str]) -> None:
        self.ifaces = ifaces
        self.rings: list[Ring] = []
        self.stats: list[IfStats] = []
        try:
            for name in ifaces:
                self.stats.append(IfStats(name))
                self.rings.append(Ring(name, settings.ring_block_bytes, settings.ring_blocks,
                                       settings.ring_block_timeout_ms, settings.snaplen,
                                       settings.fanout_group, settings.fanout_mode))
        except CaptureError:
            self.close()
            raise
        self.rate = 1
        self.prev_rate = 1
        self.rate_since = 0.0
        self.last: list[IfCounters] = []
        self.poller = select.poll()
        for ring in self.rings:
            self.poller.register(ring.fileno(), select.POLLIN | select.POLLERR)
        if settings.sample_rate > 1:
            self.set_rate(settings.sample_rate)

    def set_rate(self, rate: int) -> None:
        for ring in self.rings:
            ring.set_rate(rate)
        self.prev_rate, self.rate, self.rate_since = self.rate, rate, time.time()

    def pump(self, out: Output, most: int = BLOCKS_PER_PUMP) -> int:
        """Read up to `most` handed-over blocks of each ring (parsed together); the packets handled."""
        n = 0
        for idx, ring in enumerate(self.rings):
            block, k = ring.read_blocks(most)
            if block is None:
                continue
            try:
                self._emit(out, idx, ring, block)
            finally:
                ring.release(k)
            n += len(block.rows)
        return n

    def _emit(self, out: Output, idx: int, ring: Ring, block: Block) -> None:
        rows = block.rows
        if len(rows) == 0:
            return
        split = 0
        if self.rate_since and time.time() - self.rate_since < RATE_SPLIT_WINDOW:
            split = int(np.searchsorted(rows["ts"], self.rate_since))  # admitted under the old rate
        if split:
            out.add_rows(idx, rows[:split], self.prev_rate)
        out.add_rows(idx, rows[split:], self.rate)
        k = out.frames_wanted(len(rows))
        if k:
            frames = frame_rows(ring.mm, rows["ts"][:k], rows["wirelen"][:k], block.frame_offs[:k], block.caps[:k],
                                out.snaplen)
            if split:
                out.add_frames(idx, ring.linktype, self.prev_rate, frames[:split])
            out.add_frames(idx, ring.linktype, self.rate, frames[split:])

    def idle_ms(self) -> float:
        """No reason of its own to wake: the ring descriptors wake the wait when a block is handed over,
        and the actor's signal descriptor (wake_on) when it is told to stop; the timers bound the rest."""
        return NOTHING_DUE_MS

    def wake_on(self, fd: int) -> None:
        """Also end wait() when `fd` is readable (the actor's signal wake-up: SIGTERM stops at once)."""
        self.poller.register(fd, select.POLLIN)

    def wait(self, timeout_ms: float) -> None:
        if not any(r.ready() for r in self.rings):
            self.poller.poll(math.ceil(timeout_ms))

    def ready_packets(self) -> int:
        """Packets in the blocks the kernel has handed over and we have not read (the first of each ring)."""
        return sum(r.ready_packets() for r in self.rings)

    def pending_packets(self) -> int:
        """Packets in every handed-over block we have not read, all rings."""
        return sum(r.pending_packets() for r in self.rings)

    def read_counters(self) -> list[IfCounters]:
        self.last = [s.read() for s in self.stats]
        return self.last

    def wire_packets(self) -> int:
        """Packets the kernel counted on the watched interfaces (both directions), from the last read."""
        return sum(c.rx_packets + c.tx_packets for c in self.last)

    def counter_samples(self, now: float, send_drops: list[int], conn_count: int) -> list[CounterSample]:
        out = []
        for idx, (ring, c) in enumerate(zip(self.rings, self.read_counters(), strict=True)):
            _, drops = ring.stats()
            out.append(CounterSample(iface=ring.ifname, ts=now, rx_packets=c.rx_packets, rx_bytes=c.rx_bytes,
                                     tx_packets=c.tx_packets, tx_bytes=c.tx_bytes, kernel_drops=drops,
                                     send_drops=send_drops[idx], sample_rate=self.rate, conn_count=conn_count))
        return out

    def kernel_drops(self) -> int:
        return sum(r.drops for r in self.rings)

    def close(self) -> None:
        for ring in self.rings:
            ring.close()
        for s in self.stats:
            s.close()
        self.rings, self.stats = [], []
