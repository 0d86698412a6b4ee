"""The capture actor: packets from a live interface or a file -> PacketBatch / CounterSample / FrameBatch.

It owns its loop (run_loop): pump the source (a few ring blocks or one file chunk), send batches that
are full or old, and call the base's poll_once() between turns for timers, heartbeats and control.
File sources block at the aggregator's HWM (no loss, same result at any speed); live sources never
block: a batch the aggregator cannot take is dropped and counted (send_drops in CounterSample).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import zmq

from floodwatch.capture.batch import Directions
from floodwatch.capture.conns import ConnCounter
from floodwatch.capture.ifstats import resolve_interfaces
from floodwatch.capture.output import Output
from floodwatch.capture.sampling import SamplingController
from floodwatch.capture.sources import AfPacketSource, FailedSource, PcapSource
from floodwatch.config import Config
from floodwatch.errors import CaptureError
from floodwatch.messages import Message, StreamEnded
from floodwatch.runtime.actor import Actor, Pusher
from floodwatch.runtime.entry import run_actor
from floodwatch.settings.capture import CaptureSettings

READING_MARGIN = 0.005  # seconds after window end + lateness at which the counters are read


class CaptureActor(Actor[CaptureSettings]):
    name = "capture"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.s = self.settings
        self.source: Any = None
        self.out: Output | None = None
        self.controller: SamplingController | None = None
        self.conns = ConnCounter(self.s.conn_source)
        self.ended = False
        self._last_wire = -1
        self._last_time = 0.0
        self._woken = False  # the next reading was asked for by the first packet after a silence
        self.lazy = False  # under lazy_pps: the ring is read at each counter reading only
        self._peek = True  # lazy: look at the first block handed over after a reading
        self._check_at = 0.0  # lazy: when to count every block handed over since the reading (wall time)
        # a block with this many packets is no trickle (twice lazy_pps over one ring block timeout)
        self._flood_block = max(8, 2 * self.s.lazy_pps * self.s.ring_block_timeout_ms // 1000)
        # a trickle hands over one block per ring_block_timeout_ms: lazy reading needs a ring that holds
        # one and a half counter intervals of those (the default 16 blocks x 10 ms: 160 ms for 100 ms)
        self._lazy_fits = 1.5 * self.s.counter_interval <= self.s.ring_blocks * self.s.ring_block_timeout_ms / 1000
        self.quiet = False  # the link was silent at the last counter reading: counters every quiet_interval
        self.packets_push: Pusher | None = None
        self.frames_push: Pusher | None = None
        self.counters["lazy_exits"] = 0  # floods (or busier traffic) seen by a lazy reader between readings
        self.count_from(self._source_counters)

    # -- lifecycle -------------------------------------------------------------------------------
    def on_start(self) -> None:
        s = self.s
        self.packets_push = self.push(self.endpoints.packets, self.config.bus.hwm_packets, "packets")
        self.frames_push = self.push(self.endpoints.frames, self.config.bus.hwm_frames, "frames")
        if s.source == "pcap":
            try:
                self.source = PcapSource(s)
            except CaptureError as e:  # reported as the end of the stream, with the reason
                self.source = FailedSource(str(e))
        elif s.source == "pyshark":
            from floodwatch.capture.pyshark_source import PysharkSource

            self.source = PysharkSource(s, resolve_interfaces(s.interfaces))
        else:
            self.source = AfPacketSource(s, resolve_interfaces(s.interfaces))
        clock = time.monotonic
        self.out = Output(self.source.name, self.source.ifaces, s.batch_records, s.batch_interval,
                          s.frames_per_second, s.frames_batch, s.snaplen, self._send, clock,
                          Directions(s.local_networks) if not self.source.live else None)
        if self.source.live:
            self.every(self._next_reading, self._counters, first=0.0)
            if s.source == "afpacket":
                self.controller = SamplingController(s.budget_pps, s.max_sample_rate, clock, s.sample_rate)
                # a silent link needs no sampling decision: the first packet brings back the pace
                self.every(self._slow(s.controller_interval, 5.0), self._control)
        self.log.info("capturing from {} on {}", self.source.name,
                      s.pcap_file if s.source == "pcap" else ", ".join(self.source.ifaces))

    def run_loop(self) -> None:
        assert self.out is not None
        while not self.stopping:
            if self.lazy:  # a low rate: the ring is read at each counter reading, not at every block
                self._lazy_wait()
                continue
            n = self.source.pump(self.out)
            self.out.flush_due()
            if self.source.finished and not self.ended:
                self._end_stream()
            if n:
                if self.quiet:  # the first packets after a silence: exact counters from now on
                    self.quiet, self._woken = False, True
                    self.due_now(self._counters)
                    self.due_now(self._control)
                self.poll_once(0)
                continue
            idle = min(self.next_timeout_ms(), self.source.idle_ms(), self.out.due_in_ms())
            if self.source.live:
                self.source.wait(idle)
                self.poll_once(0)
            else:
                self.poll_once(idle)

    def on_stop(self) -> None:
        if self.out is not None:
            self.out.flush_all()
        self.freeze_counters()
        if self.source is not None:
            self.source.close()

    # -- output ----------------------------------------------------------------------------------
    def _send(self, msg: Message, channel: str) -> bool:
        pusher = self.packets_push if channel == "packets" else self.frames_push
        assert pusher is not None
        if channel == "packets" and not self.source.live:
            return self._send_blocking(pusher, msg)
        return pusher.send(msg)

    def _send_blocking(self, pusher: Pusher, msg: Message) -> bool:
        """File sources: wait at the HWM (keeping heartbeats going) rather than lose a batch."""
        timeout = self.s.send_timeout
        deadline = time.monotonic() + timeout if timeout else None
        while not pusher.sock.poll(100, zmq.POLLOUT):
            self.poll_once(0)
            if self.stopping or (deadline is not None and time.monotonic() > deadline):
                return pusher.send(msg)  # one last try; counted as dropped if it fails
        return pusher.send(msg, block=True, timeout=1.0)

    def _end_stream(self) -> None:
        assert self.out is not None
        self.ended = True
        self.out.flush_all()
        src = self.source
        msg = StreamEnded(source=self.s.pcap_file or src.name, packets=src.packets, ts=src.last_ts,
                          error=src.error)
        self._send(msg, "packets")
        self._send(msg, "frames")
        if src.error:
            self.health = f"stream ended: {src.error}"
            self.log.error("{}", src.error)
            self.publish(msg)
        else:
            self.log.info("end of {}: {} packets", self.s.pcap_file, src.packets)

    # -- live: counters and sampling -----------------------------------------------------------
    def _lazy_wait(self) -> None:
        """Sleep to the next timer; but look at the first block the kernel hands over after each reading (a
        full one is a flood starting), and half way to the next reading at every block handed over since
        (more than a trickle's worth is a flood that began after that first block): a flood is read at
        once, before it fills the ring (which a trickle is slowly filling too, one block per 10 ms)."""
        if self._peek:
            self.source.wait(self.next_timeout_ms())
            waiting = self.source.ready_packets()
            if waiting >= self._flood_block:
                self._go_eager()
            elif waiting:
                self._peek = False  # a trickle's block: it waits for the reading
            self.poll_once(0)
            return
        wait = self.next_timeout_ms()
        if self._check_at:
            left = self._check_at - time.time()
            if left <= 0:
                self._check_at = 0.0
                since = max(time.time() - self._last_time, 0.01)
                if self.source.pending_packets() >= max(self._flood_block, 2 * self.s.lazy_pps * since):
                    self._go_eager()
                self.poll_once(0)
                return
            wait = min(wait, math.ceil(left * 1000))
        self.poll_once(wait)

    def _go_eager(self) -> None:
        self.lazy = False
        self.counters["lazy_exits"] += 1
        if self.controller is not None:
            # the sampling rate first, from the counters as they are now: the flood's backlog in the ring
            # was kept whole (1 in 1), and while it is read the flood goes on filling the ring
            self.source.read_counters()
            self._control()
        self.due_now(self._counters)

    def _slow(self, seconds: float, factor: float = 1.0) -> Callable[[], float]:
        """A timer period that stretches to quiet_interval (x factor) while the link is silent."""
        quiet = max(seconds, self.s.quiet_interval * factor)
        return lambda: quiet if self.quiet else seconds

    def _next_reading(self) -> float:
        """Seconds to the next counter reading. Readings keep to the aggregator's windows: each comes just
        after a window's end plus the aggregator's lateness, so the records and counters it sends close
        that window at once (and a reading never straddles a window boundary by much)."""
        s = self.s
        if self.quiet:
            step = max(s.counter_interval, s.quiet_interval)
        elif self.lazy or s.source != "afpacket":
            step = s.counter_interval
        else:
            step = s.busy_counter_interval
        phase = self.config.aggregator.lateness + READING_MARGIN
        now = time.time()
        return (math.floor((now - phase) / step) + 1) * step + phase - now

    def _counters(self) -> None:
        assert self.out is not None and self.packets_push is not None
        now = time.time()
        if self.s.source == "afpacket":
            # what the ring holds goes out before the counters: a window the counters close has its records
            for _ in range(self.s.ring_blocks):
                if not self.source.pump(self.out):
                    break
            self.out.flush_all()
        wire = 0
        for sample in self.source.counter_samples(now, self.out.send_drops, self.conns.count()):
            self.packets_push.send(sample)
            wire += sample.rx_packets + sample.tx_packets
        # silent since the last reading: downstream still gets windows (the aggregator fills the
        # gap with empty ones), but every actor on the path wakes once a second instead of ten times
        self.quiet = self.s.quiet_interval > 0 and wire == self._last_wire
        # a trickle (background traffic): read the ring only here, ten times a second, rather than at
        # every block the kernel hands over (each wakes capture, aggregator and recorder); a flood is
        # seen at the next reading at the latest, and from then on every block is read at once
        rate = (wire - self._last_wire) / max(now - self._last_time, 1e-3) if self._last_wire >= 0 else 0.0
        # (not on the reading the first packet after a silence asked for: its rate covers the silence)
        was_lazy = self.lazy
        self.lazy = (self.s.source == "afpacket" and not self.quiet and not self._woken and self._lazy_fits
                     and 0 < rate < self.s.lazy_pps)
        if was_lazy and not self.lazy and rate >= self.s.lazy_pps and self.controller is not None:
            self._control()  # a flood this reading found: the sampling rate now, not at the controller's turn
        self._woken = False
        self._peek = True
        self._check_at = now + self.s.counter_interval / 2 if self.lazy else 0.0
        self._last_wire, self._last_time = wire, now

    def _control(self) -> None:
        assert self.controller is not None and self.out is not None
        if not self.source.last:
            self.source.read_counters()
        rate = self.controller.update(self.source.wire_packets(), self.source.kernel_drops())
        if rate != self.source.rate:
            self.out.flush_all()
            self.source.set_rate(rate)
            self.log.info("sampling 1 in {} (wire {:.0f} pps, budget {} pps)", rate,
                          self.controller.last_pps, self.s.budget_pps)

    def _source_counters(self) -> dict[str, Any]:
        """The output's, the source's and the sampling controller's counters, read at each heartbeat."""
        if self.out is None:
            return {}
        src = self.source
        out: dict[str, Any] = {**self.out.counters, "sample_rate": getattr(src, "rate", 1)}
        if src.live:
            out["kernel_drops"] = src.kernel_drops()
        else:
            out["file_packets"] = src.packets
        if self.controller is not None:
            out["wire_pps"] = round(self.controller.last_pps)
            out["rate_changes"] = self.controller.changes
        return out


def main(argv: list[str] | None = None) -> int:
    return run_actor(CaptureActor, argv)


if __name__ == "__main__":
    sys.exit(main())
