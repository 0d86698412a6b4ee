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

from floodwatch import bus
from floodwatch.collector.core import Collector
from floodwatch.config import Config
from floodwatch.messages import Message
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
        self.count_from(self._core_counters, gauges=("templates_cached",))

    def on_start(self) -> None:
        self.packets_push = self.push(self.endpoints.packets, self.config.bus.hwm_packets, "packets")
        self.frames_push = self.push(self.endpoints.frames, self.config.bus.hwm_frames, "frames")
        for proto, (host, port) in self.settings.addresses().items():
            sock = bus.udp_listener(host, port, self.settings.recv_buffer)
            self.socks.append(sock)
            kind = "sflow" if proto == "sflow" else "flow"
            self.add_fd_reader(sock.fileno(), lambda s=sock, k=kind: self._read(s, k))  # type: ignore[misc]
            self.log.info("listening for {} on udp {}:{}", proto, host, port)
        self.every(self.settings.batch_interval, self.core.flush_due)
        self.every(TICK, lambda: self.core.tick(time.time()))
        self.every(1.0, lambda: self.core.flows.cache.expire(time.time()))

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
        pusher = self.packets_push if channel == "packets" else self.frames_push
        assert pusher is not None
        return pusher.send(msg)

    def _core_counters(self) -> dict[str, Any]:
        c = self.core
        out: dict[str, Any] = dict(c.counters)
        out.update(c.flows.stats)
        out.update(c.flows.cache.stats)
        out["templates_cached"] = len(c.flows.cache.templates)
        out["exporters"] = dict(list(c.exporters_seen.items())[:64])
        return out


def _exporter(host: str) -> str:
    """The exporter's address as text, IPv4-mapped IPv6 (a dual-stack socket) as plain IPv4."""
    return host[7:] if host.startswith("::ffff:") else host


def main(argv: list[str] | None = None) -> int:
    return run_actor(CollectorActor, argv)


if __name__ == "__main__":
    sys.exit(main())
