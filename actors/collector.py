"""The collector actor: sFlow, NetFlow v5/v9 and IPFIX datagrams from routers -> PacketBatch / FrameBatch.

Network mode (docs/collector.md). It listens on UDP ([collector] listen), hands each datagram to the
pure floodwatch.collector.core.Collector, and pushes what it makes on the same channels capture uses:
records to the aggregator (bus.packets), sFlow raw headers to the recorder (bus.frames). It never
blocks on a full peer (a live source: a batch that cannot go is dropped and counted) and runs beside
capture or alone. `python -m actors.collector --config FILE`.
"""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

import zmq

from floodwatch import bus
from floodwatch.collector.core import Collector
from floodwatch.collector.pcapsource import datagrams
from floodwatch.config import Config
from floodwatch.errors import CaptureError
from floodwatch.messages import Message, StreamEnded
from floodwatch.runtime.actor import Actor, Pusher
from floodwatch.runtime.entry import run_actor
from floodwatch.settings.collector import CollectorSettings

RECV_BURST = 512  # datagrams read from one socket per turn
RECV_SIZE = 65535
TICK = 0.1  # seconds between the stream-time ticks to the aggregator (windows close without flows)


class CollectorActor(Actor[CollectorSettings]):
    name = "collector"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.core = Collector(self.settings, self._send, time.monotonic)
        self.socks: list[socket.socket] = []
        self.packets_push: Pusher | None = None
        self.frames_push: Pusher | None = None
        self.file_stats: dict[str, int] = {}
        self.count_from(self._core_counters, gauges=("templates_cached",))

    def on_start(self) -> None:
        self.packets_push = self.push(self.endpoints.packets, self.config.bus.hwm_packets, "packets")
        self.frames_push = self.push(self.endpoints.frames, self.config.bus.hwm_frames, "frames")
        if self.settings.pcap_file:
            return  # run_loop reads the file
        for proto, (host, port) in self.settings.addresses().items():
            sock = bus.udp_listener(host, port, self.settings.recv_buffer)
            self.socks.append(sock)
            kind = "sflow" if proto == "sflow" else "flow"
            self.add_fd_reader(sock.fileno(), lambda s=sock, k=kind: self._read(s, k))  # type: ignore[misc]
            self.log.info("listening for {} on udp {}:{}", proto, host, port)
        self.every(self.settings.batch_interval, self.core.flush_due)
        self.every(TICK, lambda: self.core.tick(time.time()))
        self.every(1.0, lambda: self.core.flows.cache.expire(time.time()))

    def run_loop(self) -> None:
        if self.settings.pcap_file:
            self._replay()
        super().run_loop()

    def _replay(self) -> None:
        """A capture of flow export traffic: every datagram at its file time, then StreamEnded."""
        path, stats = self.settings.pcap_file, self.file_stats
        last, error = 0.0, ""
        try:
            for n, (ts, exporter, kind, data) in enumerate(datagrams(path, stats)):
                self.core.feed(kind, data, exporter, ts)
                last = ts
                if n % 256 == 0:
                    self.poll_once(0)
                    if self.stopping:
                        return
        except CaptureError as e:
            error = str(e)
            self.health = f"stream ended: {e}"
            self.log.error("{}", e)
        self.core.flush_all()
        self.core.publish_seen(last)
        msg = StreamEnded(source=path, packets=stats.get("packets", 0), ts=last, error=error)
        self._send(msg, "packets")
        self._send(msg, "frames")
        if error:
            self.publish(msg)
        self.log.info("end of {}: {} flow export datagrams", path, stats.get("datagrams", 0))

    def _read(self, sock: socket.socket, kind: str) -> None:
        now = time.time()
        for _ in range(RECV_BURST):
            try:
                data, addr = sock.recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.counters["recv_errors"] = self.counters.get("recv_errors", 0) + 1
                break
            self.core.feed(kind, data, _exporter(addr[0]), now)
        self.core.flush_due()

    def on_stop(self) -> None:
        self.core.flush_all()
        self.freeze_counters()
        for sock in self.socks:
            sock.close()

    def _send(self, msg: Message, channel: str) -> bool:
        if channel == "events":
            self.publish(msg)
            return True
        pusher = self.packets_push if channel == "packets" else self.frames_push
        assert pusher is not None
        if not self.settings.pcap_file:
            return pusher.send(msg)  # live: never wait for a full peer
        while not pusher.sock.poll(100, zmq.POLLOUT):  # a file: wait rather than lose a batch
            self.poll_once(0)
            if self.stopping:
                return pusher.send(msg)
        return pusher.send(msg, block=True, timeout=1.0)

    def _core_counters(self) -> dict[str, Any]:
        c = self.core
        out: dict[str, Any] = dict(c.counters)
        out.update(c.flows.stats)
        out.update(c.flows.cache.stats)
        out["templates_cached"] = len(c.flows.cache.templates)
        out["exporter_pairs_dropped"] = c.seen.dropped
        out["exporters"] = dict(list(c.exporters_seen.items())[:64])
        out["counter_records"] = c.interfaces.per_exporter(c.exporter_names)  # sFlow interface counters
        out["interfaces"] = c.interfaces.snapshot(c.exporter_names)
        out.update({f"file_{k}": v for k, v in self.file_stats.items()})
        return out


def _exporter(host: str) -> str:
    """The exporter's address as text, IPv4-mapped IPv6 (a dual-stack socket) as plain IPv4."""
    return host[7:] if host.startswith("::ffff:") else host


def main(argv: list[str] | None = None) -> int:
    return run_actor(CollectorActor, argv)


if __name__ == "__main__":
    sys.exit(main())
