"""The `pyshark` source: live capture through tshark, for low rates (see docs/capture.md for what it holds).

One thread per interface reads pyshark's packets (tshark JSON with the raw frame) into a bounded queue;
the actor's loop drains it and parses the raw frames with the same parser as the other sources. When the
queue is full, packets are dropped and counted as capture loss (kernel_drops in CounterSample). tshark
does not say which packets were outgoing: the direction comes from `local_networks`, or, when that is
empty, from the interface's own addresses.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any

import numpy as np

from floodwatch.capture.batch import Directions
from floodwatch.capture.fastparse import parse_many
from floodwatch.capture.ifstats import ARPHRD_NONE, IfStats, if_type, interface_addresses
from floodwatch.capture.output import Output
from floodwatch.capture.parse import LINKTYPE_ETHERNET, LINKTYPE_RAW
from floodwatch.errors import CaptureError
from floodwatch.messages import CounterSample
from floodwatch.settings.capture import CaptureSettings

QUEUE_MAX = 20000
# Records are made from the raw frame by our own parser: tshark need not dissect (and print) the layers,
# which makes it about ten times cheaper per packet.
TSHARK_LEAN = ["--disable-protocol", "eth", "--disable-protocol", "sll", "--disable-protocol", "ip",
               "--disable-protocol", "ipv6"]
DRAIN_MAX = 4096


def interface_networks(ifname: str) -> list[str]:
    """The interface's own addresses as /32 and /128 networks, [] when unknown."""
    return [f"{a}/{128 if ':' in a else 32}" for a in interface_addresses(ifname)]


class PysharkSource:
    name = "pyshark"
    live = True
    finished = False

    def __init__(self, settings: CaptureSettings, ifaces: list[str]) -> None:
        self.ifaces = ifaces
        self.settings = settings
        self.rate = 1
        self.error = ""
        self.queue: queue.Queue[tuple[int, float, int, bytes]] = queue.Queue(QUEUE_MAX)
        self.lost = 0
        self._held: list[tuple[int, float, int, bytes]] = []  # taken by wait(), first out in pump()
        self.stats = [IfStats(name) for name in ifaces]
        self.linktypes = [LINKTYPE_RAW if if_type(n) == ARPHRD_NONE else LINKTYPE_ETHERNET for n in ifaces]
        nets = list(settings.local_networks)
        if not nets:
            for name in ifaces:
                nets += interface_networks(name)
        self.directions = Directions(nets)
        self._stop = threading.Event()
        self._captures: list[Any] = []
        self._threads = [threading.Thread(target=self._read, args=(i, name), daemon=True, name=f"pyshark-{name}")
                         for i, name in enumerate(ifaces)]
        for t in self._threads:
            t.start()

    def _read(self, idx: int, ifname: str) -> None:
        import pyshark

        try:
            cap = pyshark.LiveCapture(interface=ifname, bpf_filter=self.settings.pyshark_bpf or None,
                                      use_json=True, include_raw=True, custom_parameters=TSHARK_LEAN)
            self._captures.append(cap)
            for pkt in cap.sniff_continuously():
                if self._stop.is_set():
                    break
                item = (idx, float(pkt.sniff_timestamp), int(pkt.length), bytes(pkt.get_raw_packet()))
                try:
                    self.queue.put_nowait(item)
                except queue.Full:
                    self.lost += 1
        except Exception as e:  # noqa: BLE001 - reported through the actor's health, then it restarts us
            if not self._stop.is_set():
                self.error = f"pyshark on {ifname}: {type(e).__name__}: {e}"

    def pump(self, out: Output) -> int:
        if self.error:
            raise CaptureError(self.error)
        items, self._held = self._held, []
        try:
            while len(items) < DRAIN_MAX:
                items.append(self.queue.get_nowait())
        except queue.Empty:
            pass
        for idx in range(len(self.ifaces)):
            mine = [it for it in items if it[0] == idx]
            if mine:
                self._emit(out, idx, mine)
        return len(items)

    def _emit(self, out: Output, idx: int, items: list[tuple[int, float, int, bytes]]) -> None:
        caps = np.array([len(it[3]) for it in items], dtype=np.int64)
        offs = np.concatenate(([0], np.cumsum(caps)[:-1])).astype(np.int64)
        buf = b"".join(it[3] for it in items)
        rows = parse_many(buf, offs, caps, np.array([it[2] for it in items], dtype=np.int64), self.linktypes[idx])
        rows["ts"] = [it[1] for it in items]
        self.directions.apply(rows)
        out.add_rows(idx, rows, 1)
        for it in items[: out.frames_wanted(len(items))]:
            out.add_frame(idx, self.linktypes[idx], 1, it[1], it[2], it[3])

    def idle_ms(self) -> float:
        return 10.0

    def wait(self, timeout_ms: float) -> None:
        if self._held:
            return
        try:
            self._held.append(self.queue.get(timeout=timeout_ms / 1000))
        except queue.Empty:
            return

    def read_counters(self) -> list[Any]:
        return [s.read() for s in self.stats]

    def counter_samples(self, now: float, send_drops: list[int], conn_count: int) -> list[CounterSample]:
        return [CounterSample(iface=name, ts=now, rx_packets=c.rx_packets, rx_bytes=c.rx_bytes,
                              tx_packets=c.tx_packets, tx_bytes=c.tx_bytes, kernel_drops=self.lost,
                              send_drops=send_drops[i], sample_rate=1, conn_count=conn_count)
                for i, (name, c) in enumerate(zip(self.ifaces, self.read_counters(), strict=True))]

    def kernel_drops(self) -> int:
        return self.lost

    def close(self) -> None:
        self._stop.set()
        for cap in self._captures:  # end tshark/dumpcap now rather than at their next packet
            for proc in list(getattr(cap, "_running_processes", ())):
                with contextlib.suppress(ProcessLookupError, OSError):
                    proc.kill()
        for s in self.stats:
            s.close()
