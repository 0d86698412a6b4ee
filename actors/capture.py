"""The capture actor: packets from a live interface or a file -> PacketBatch / CounterSample / FrameBatch.

It owns its loop (run_loop): pump the source (a few ring blocks or one file chunk), send batches that
are full or old, and call the base's poll_once() between turns for timers, heartbeats and control.
File sources block at the aggregator's HWM (no loss, same result at any speed); live sources never
block: a batch the aggregator cannot take is dropped and counted (send_drops in CounterSample).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import zmq

from floodwatch.capture.batch import Directions
from floodwatch.capture.conns import ConnCounter
from floodwatch.capture.ifstats import resolve_interfaces
from floodwatch.capture.output import Output
from floodwatch.capture.readpolicy import ReadPolicy
from floodwatch.capture.sampling import SamplingController
from floodwatch.capture.sources import AfPacketSource, FailedSource, PcapSource
from floodwatch.config import Config
from floodwatch.errors import CaptureError
from floodwatch.messages import Message, StreamEnded
from floodwatch.runtime.actor import Actor, Pusher
from floodwatch.runtime.entry import run_actor
from floodwatch.settings.capture import CaptureSettings


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
        # when the ring and the counters are read (lazy / peek / half-way check / quiet): readpolicy.py
        self.policy = ReadPolicy(self.s, config.aggregator.lateness, time.time)
        self.packets_push: Pusher | None = None
        self.frames_push: Pusher | None = None
        self.count_from(self._source_counters, gauges=("sample_rate", "wire_pps"))

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
            self.source.wake_on(self._wake_fd)  # the ring wait sleeps to the next timer: a signal ends it
        clock = time.monotonic
        self.out = Output(self.source.name, self.source.ifaces, s.batch_records, s.batch_interval,
                          s.frames_per_second, s.frames_batch, s.snaplen, self._send, clock,
                          Directions(s.local_networks) if not self.source.live else None)
        if self.source.live:
            self.every(self.policy.next_reading, self._counters, first=0.0)
            if s.source == "afpacket":
                self.controller = SamplingController(s.budget_pps, s.max_sample_rate, clock, s.sample_rate)
                self.policy.on_rate(self.source.rate)  # a fixed sample_rate > 1: paced from the start
                # a silent link needs no sampling decision: the first packet brings back the pace
                self.every(self.policy.slow(s.controller_interval, 5.0), self._control)
        self.log.info("capturing from {} on {}", self.source.name,
                      s.pcap_file if s.source == "pcap" else ", ".join(self.source.ifaces))

    def run_loop(self) -> None:
        assert self.out is not None
        while not self.stopping:
            if self.policy.lazy:  # a low rate: the ring is read at each counter reading, not at every block
                step = self.policy.lazy_step(self.source, self.next_timeout_ms())
                if step.eager:
                    self._go_eager()
                self.poll_once(step.poll_ms)
                continue
            if self.policy.paced:  # the kernel samples (a flood): the ring is read at the readings
                self._paced_step()
                continue
            n = self.source.pump(self.out)
            self.out.flush_due()
            if self.source.finished and not self.ended:
                self._end_stream()
            if n:
                if self.policy.woke():  # the first packets after a silence: exact counters from now on
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

    def _paced_step(self) -> None:
        """Paced: the counter readings read the ring, and half way between two (and the first turn after
        sampling started)."""
        assert self.out is not None
        if self.policy.read_now():
            self.source.pump(self.out, self.s.ring_blocks)
            self.out.flush_all()
        self.poll_once(min(self.next_timeout_ms(), self.policy.half_wait_ms()))

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
    def _go_eager(self) -> None:
        if self.controller is not None:
            # the sampling rate first, from the counters as they are now: the flood's backlog in the ring
            # was kept whole (1 in 1), and while it is read the flood goes on filling the ring
            self.source.read_counters()
            self._control()
        self.due_now(self._counters)

    def _counters(self) -> None:
        assert self.out is not None and self.packets_push is not None
        now = self.policy.clock()
        if self.s.source == "afpacket":
            # what the ring holds goes out before the counters: a window the counters close has its records
            self.source.pump(self.out, self.s.ring_blocks)
            self.out.flush_all()
        wire = 0
        for sample in self.source.counter_samples(now, self.out.send_drops, self.conns.count()):
            self.packets_push.send(sample)
            wire += sample.rx_packets + sample.tx_packets
        if self.policy.on_reading(wire, now) and self.controller is not None:
            self._control()  # a flood this reading found: the sampling rate now, not at the controller's turn

    def _control(self) -> None:
        assert self.controller is not None and self.out is not None
        if not self.source.last:
            self.source.read_counters()
        rate = self.controller.update(self.source.wire_packets(), self.source.kernel_drops())
        if rate != self.source.rate:
            self.out.flush_all()
            self.source.set_rate(rate)
            self.policy.on_rate(rate)
            self.log.info("sampling 1 in {} (wire {:.0f} pps, budget {} pps)", rate,
                          self.controller.last_pps, self.s.budget_pps)

    def _source_counters(self) -> dict[str, Any]:
        """The output's, the source's and the sampling controller's counters, read at each heartbeat."""
        if self.out is None:
            return {}
        src = self.source
        out: dict[str, Any] = {**self.out.counters, "sample_rate": getattr(src, "rate", 1),
                               "lazy_exits": self.policy.lazy_exits}  # floods a lazy reader saw between readings
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
