"""Building PacketBatch and FrameBatch contents: preallocated record rows, directions, a frame budget."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import numpy as np

from floodwatch.capture.parse import Parsed
from floodwatch.records import (
    DIR_IN,
    DIR_OUT,
    DIR_UNKNOWN,
    RECORD_DTYPE,
    RECORD_SIZE,
    RECORD_STRUCT,
    V4_MAPPED_PREFIX,
    opaque,
)

PKTTYPE_OUTGOING = 4


class RecordBatch:
    """Up to `capacity` records packed into one preallocated bytearray (RECORD_STRUCT rows)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.buf = bytearray(capacity * RECORD_SIZE)
        self.n = 0
        self.t_first = 0.0
        self.t_last = 0.0
        self.malformed = 0
        self._pack = RECORD_STRUCT.pack_into

    def full(self) -> bool:
        return self.n >= self.capacity

    def add(self, ts: float, wirelen: int, direction: int, iface: int, p: Parsed) -> None:
        """Append one parsed packet (the caller checks full() first)."""
        if self.n == 0:
            self.t_first = ts
        self.t_last = ts
        self._pack(self.buf, self.n * RECORD_SIZE, ts, wirelen, p.sport, p.dport, p.paylen, p.vlan,
                   direction, p.ipver, p.proto, p.flags, p.ttl, p.frag, iface, p.malformed,
                   p.src, p.dst, p.payload)
        self.malformed += p.malformed
        self.n += 1

    def extend(self, rows: np.ndarray) -> int:
        """Append rows of RECORD_DTYPE (as many as fit); returns how many were taken."""
        k = min(len(rows), self.capacity - self.n)
        if k <= 0:
            return 0
        if self.n == 0:
            self.t_first = float(rows["ts"][0])
        self.t_last = float(rows["ts"][k - 1])
        opaque(self.view())[self.n : self.n + k] = opaque(rows[:k])
        self.malformed += int(np.count_nonzero(rows["malformed"][:k]))
        self.n += k
        return k

    def view(self) -> np.ndarray:
        """The whole buffer as a writable RECORD_DTYPE array (rows [:n] are filled)."""
        return np.frombuffer(self.buf, dtype=RECORD_DTYPE)

    def take(self) -> bytes:
        """The filled rows as bytes; the batch is empty afterwards."""
        out = bytes(self.buf[: self.n * RECORD_SIZE])
        self.n = 0
        self.malformed = 0
        return out


def _prefix_rows(cidrs: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each CIDR as (mask, network): two big-endian 64-bit words each, in record address form (IPv4
    v4-mapped), so an address matches when (words & mask) == network in both words."""
    out = []
    for text in cidrs:
        net = ipaddress.ip_network(text, strict=False)
        if net.version == 4:
            addr, plen = V4_MAPPED_PREFIX + net.network_address.packed, 96 + net.prefixlen
        else:
            addr, plen = net.network_address.packed, net.prefixlen
        mask_int = ((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1)
        mask = np.frombuffer(mask_int.to_bytes(16, "big"), dtype=">u8")
        out.append((mask, np.frombuffer(addr, dtype=">u8") & mask))
    return out


class Directions:
    """Direction of file packets from the host's networks: dst local -> in, src local -> out, else unknown.

    Cooked (SLL/SLL2) captures record the kernel's packet type: it is used where no local network matches.
    """

    def __init__(self, local_networks: list[str]) -> None:
        self._nets = _prefix_rows(local_networks)

    def __bool__(self) -> bool:
        return bool(self._nets)

    @staticmethod
    def of_pkttype(pkttype: int) -> int:
        if pkttype < 0:
            return DIR_UNKNOWN
        return DIR_OUT if pkttype == PKTTYPE_OUTGOING else DIR_IN

    def local(self, addrs: np.ndarray) -> np.ndarray:
        """Which of the addresses ((n, 16) uint8 or S16, record form) are in the networks."""
        words = np.ascontiguousarray(addrs).view(">u8").reshape(-1, 2)
        hi, lo = words[:, 0], words[:, 1]
        hit = np.zeros(len(words), dtype=bool)
        for mask, net in self._nets:
            hit |= ((hi & mask[0]) == net[0]) & ((lo & mask[1]) == net[1])
        return hit

    def of(self, src: np.ndarray, dst: np.ndarray, default: np.ndarray | int = DIR_UNKNOWN) -> np.ndarray:
        """Directions of n packets from their addresses ((n, 16) uint8 or S16): `default` where neither is
        local."""
        d = np.empty(len(src), dtype=np.uint8)
        d[:] = default
        d[self.local(src)] = DIR_OUT
        d[self.local(dst)] = DIR_IN
        return d

    def apply(self, rows: np.ndarray) -> None:
        """Set `direction` in place on RECORD_DTYPE rows (a writable view)."""
        if not self._nets or len(rows) == 0:
            return
        rows["direction"] = self.of(rows["src"], rows["dst"], rows["direction"])


class FrameBudget:
    """A token bucket of raw frames per second for the recorder (injected clock)."""

    def __init__(self, per_second: int, clock: Callable[[], float]) -> None:
        self.rate = per_second
        self.clock = clock
        self.tokens = float(per_second)
        self.last = clock()

    def take(self, wanted: int, now: float | None = None) -> int:
        """How many of `wanted` frames may go now (0 when the budget is spent); `now` overrides the clock
        (file sources use the file's time)."""
        if self.rate <= 0 or wanted <= 0:
            return 0
        if now is None:
            now = self.clock()
        if now < self.last:  # a file's clock may start anywhere: follow it
            self.last = now
        self.tokens = min(float(self.rate), self.tokens + (now - self.last) * self.rate)
        self.last = now
        k = min(wanted, int(self.tokens))
        self.tokens -= k
        return k
