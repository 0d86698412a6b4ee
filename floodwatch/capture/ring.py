"""AF_PACKET TPACKET_V3 receive ring, read with mmap + struct (+ numpy for the per-packet headers).

Both directions are captured; the kernel's packet type (sockaddr_ll.sll_pkttype, PACKET_OUTGOING = 4)
says which is which. A VLAN tag the kernel took off the frame (TP_STATUS_VLAN_VALID) is put back into
the record's vlan field. PACKET_STATISTICS gives the ring's drops (read-and-reset by the kernel, summed
here). PACKET_FANOUT spreads one interface over several capture processes.
"""

from __future__ import annotations

import contextlib
import mmap
import select
import socket
import struct
from dataclasses import dataclass

import numpy as np

from floodwatch.capture import bpf
from floodwatch.capture.fastparse import parse_many
from floodwatch.capture.ifstats import ARPHRD_NONE, if_type
from floodwatch.capture.parse import LINKTYPE_ETHERNET, LINKTYPE_RAW
from floodwatch.errors import CaptureError
from floodwatch.records import DIR_IN, DIR_OUT

SOL_PACKET = 263
PACKET_RX_RING, PACKET_STATISTICS, PACKET_VERSION, PACKET_FANOUT = 5, 6, 10, 18
TPACKET_V3 = 2
ETH_P_ALL = 0x0003
TP_STATUS_KERNEL, TP_STATUS_USER = 0, 1
TP_STATUS_VLAN_VALID = 0x10
PACKET_OUTGOING = 4
FANOUT_MODES = {"hash": 0, "lb": 1, "cpu": 2}
FANOUT_FLAG_DEFRAG = 0x8000
FRAME_SIZE = 2048  # V3 packs packets of any size into blocks; frame_size only has to divide the block
# tpacket3_hdr: next_offset, sec, nsec, snaplen, len, status, mac, net, rxhash, vlan_tci
HDR_DTYPE = np.dtype([("next", "<u4"), ("sec", "<u4"), ("nsec", "<u4"), ("snaplen", "<u4"), ("len", "<u4"),
                      ("status", "<u4"), ("mac", "<u2"), ("net", "<u2"), ("rxhash", "<u4"), ("tci", "<u4")])
HDR_SIZE = HDR_DTYPE.itemsize  # 36
PKTTYPE_AT = 48 + 10  # sockaddr_ll follows the 48-byte tpacket3_hdr; sll_pkttype is its byte 10
_AR_HDR = np.arange(HDR_SIZE)
_AR4 = np.arange(4)
GUESS_MIN = 32  # runs shorter than this are walked
GUESSES = 8
_NEXT = struct.Struct("<I").unpack_from
_BLOCK = struct.Struct("<III").unpack_from  # block_status, num_pkts, offset_to_first_pkt (at byte 8)


@dataclass
class Block:
    """The packets of one ring block as arrays; rows are RECORD_DTYPE (ts/direction/vlan filled)."""

    rows: np.ndarray
    frame_offs: np.ndarray  # where each frame's bytes start in the ring
    caps: np.ndarray


class Ring:
    """One interface's receive ring."""

    def __init__(self, ifname: str, block_size: int, blocks: int, timeout_ms: int, snaplen: int,
                 fanout_group: int = 0, fanout_mode: str = "hash") -> None:
        self.ifname = ifname
        self.block_size, self.blocks, self.snaplen = block_size, blocks, snaplen
        self.linktype = LINKTYPE_RAW if if_type(ifname) == ARPHRD_NONE else LINKTYPE_ETHERNET
        self.drops = 0  # cumulative tp_drops
        self.received = 0  # cumulative tp_packets (after the filter)
        self.freezes = 0
        self.cur = 0
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # 0: nothing until bind
        except OSError as e:
            raise CaptureError(f"cannot open an AF_PACKET socket (root or CAP_NET_RAW needed): {e}") from e
        try:
            bpf.attach(self.sock, bpf.sampling_program(1, snaplen))
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            req = struct.pack("IIIIIII", block_size, blocks, FRAME_SIZE, block_size // FRAME_SIZE * blocks,
                              timeout_ms, 0, 0)
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self.mm = mmap.mmap(self.sock.fileno(), block_size * blocks, mmap.MAP_SHARED,
                                mmap.PROT_READ | mmap.PROT_WRITE)
            self.sock.bind((ifname, ETH_P_ALL))
            if fanout_group:
                arg = fanout_group | ((FANOUT_MODES[fanout_mode] | FANOUT_FLAG_DEFRAG) << 16)
                self.sock.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("I", arg))  # flags pass INT_MAX
        except OSError as e:
            self.sock.close()
            raise CaptureError(f"{ifname}: cannot set up the packet ring: {e.strerror or e}") from e
        self.flat = np.frombuffer(self.mm, dtype=np.uint8)
        self.poller = select.poll()
        self.poller.register(self.sock.fileno(), select.POLLIN | select.POLLERR)

    def fileno(self) -> int:
        return self.sock.fileno()

    def set_rate(self, rate: int) -> None:
        """Keep 1 in `rate` packets from now on (the kernel filter is swapped atomically)."""
        bpf.attach(self.sock, bpf.sampling_program(rate, self.snaplen))

    def stats(self) -> tuple[int, int]:
        """(received, drops), cumulative since the ring was opened."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        packets, drops, freezes = struct.unpack("III", raw)
        self.received += packets
        self.drops += drops
        self.freezes += freezes
        return self.received, self.drops

    def ready(self) -> bool:
        return bool(_BLOCK(self.mm, self.cur * self.block_size + 8)[0] & TP_STATUS_USER)

    def ready_packets(self) -> int:
        """Packets in the current block if the kernel has handed it over, else 0 (nothing is read)."""
        status, num, _ = _BLOCK(self.mm, self.cur * self.block_size + 8)
        return int(num) if status & TP_STATUS_USER else 0

    def pending_packets(self) -> int:
        """Packets in all the blocks the kernel has handed over that we have not read (nothing is read)."""
        total = 0
        for i in range(self.blocks):
            status, num, _ = _BLOCK(self.mm, (self.cur + i) % self.blocks * self.block_size + 8)
            if not status & TP_STATUS_USER:
                break
            total += num
        return int(total)

    def wait(self, timeout_ms: float) -> bool:
        """Wait until the current block is ready (or timeout)."""
        if self.ready():
            return True
        self.poller.poll(timeout_ms)
        return self.ready()

    def read_blocks(self, most: int) -> tuple[Block | None, int]:
        """Up to `most` blocks the kernel has handed over, parsed together (the fixed numpy cost of a
        parse is paid once, not per block); (None, 0) when the kernel still owns the current block.
        Call release(k) with the returned k after."""
        parts: list[np.ndarray] = []
        k = 0
        while k < most:
            base = (self.cur + k) % self.blocks * self.block_size
            status, num, first = _BLOCK(self.mm, base + 8)
            if not status & TP_STATUS_USER:
                break
            if num:
                parts.append(self._walk(base + first, num))
            k += 1
        if k == 0:
            return None, 0
        offs = np.concatenate(parts) if len(parts) > 1 else parts[0] if parts else np.zeros(0, dtype=np.int64)
        return self._parse(offs), k

    def _walk(self, p: int, num: int) -> np.ndarray:
        """Offsets of the block's num packets, the first at p.

        Floods are often of one frame size: guess a run of equal strides and check every guessed
        packet's tp_next_offset at once (each checked hop proves the next position). Where the guess
        fails, the rest is walked hop by hop in Python.
        """
        parts: list[np.ndarray] = []
        left = num
        for _ in range(GUESSES):
            if left < GUESS_MIN:
                break
            d = _NEXT(self.mm, p)[0]
            guess = p + np.arange(left, dtype=np.int64) * d
            nxt = self.flat.take(guess[:-1, None] + _AR4, mode="clip").view("<u4").ravel()
            good = int(np.argmin(nxt == d)) if not np.all(nxt == d) else left - 1
            parts.append(guess[: good + 1])
            left -= good + 1
            if left == 0:
                return np.concatenate(parts)
            p = int(guess[good]) + int(nxt[good])
            if good < GUESS_MIN:
                break
        walk: list[int] = []
        add, nxt1, mm = walk.append, _NEXT, self.mm
        for _ in range(left):  # the only per-packet Python step: follow tp_next_offset
            add(p)
            p += nxt1(mm, p)[0]
        parts.append(np.array(walk, dtype=np.int64))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _parse(self, offs: np.ndarray) -> Block:
        n = len(offs)
        hdr = self.flat.take(offs[:, None] + _AR_HDR).view(HDR_DTYPE).reshape(n)
        frame_offs = offs + hdr["mac"]
        caps = hdr["snaplen"].astype(np.int64)
        wires = hdr["len"].astype(np.int64)
        tagged = (hdr["status"] & TP_STATUS_VLAN_VALID) != 0
        rows = parse_many(self.mm, frame_offs, caps, wires, self.linktype, self.flat)
        rows["ts"] = hdr["sec"] + hdr["nsec"] * 1e-9
        rows["direction"] = np.where(self.flat[offs + PKTTYPE_AT] == PACKET_OUTGOING, DIR_OUT, DIR_IN)
        if tagged.any():  # the kernel took the (outer) tag off the frame: put it back in the record
            rows["vlan"][tagged] = hdr["tci"][tagged] & 0x0FFF
            rows["wirelen"][tagged] += 4
        return Block(rows, frame_offs, caps)

    def release(self, k: int = 1) -> None:
        """Hand the k blocks read back to the kernel and move on."""
        for _ in range(k):
            struct.pack_into("<I", self.mm, self.cur * self.block_size + 8, TP_STATUS_KERNEL)
            self.cur = (self.cur + 1) % self.blocks

    def frame(self, off: int, cap: int) -> bytes:
        return self.mm[off : off + cap]

    def close(self) -> None:
        del self.flat
        with contextlib.suppress(BufferError):  # a live view of the map: the GC closes it later
            self.mm.close()
        self.sock.close()
