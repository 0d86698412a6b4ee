"""pcap and pcapng reader over a read-only mmap: no copy per packet, clear errors on bad files.

`PcapReader(path)` opens the file; iterating it yields `(ts, linktype, off, caplen, wirelen)` with the
frame at `reader.buf[off:off + caplen]`; `read_frames(path)` yields the frames' bytes. A truncated or
corrupt file raises CaptureError naming the file, the packet number and the byte offset, after the packets
before the damage have been yielded. The one reader of capture files (the writer: pcapwrite.py).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from floodwatch.capture.parse import LINKTYPE_ALIASES, LINKTYPES
from floodwatch.errors import CaptureError

MAX_FRAME = 262144  # the largest frame a sane capture holds (tcpdump's maximum snaplen)
PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
PCAPNG_SHB = 0x0A0D0D0A
BOM = 0x1A2B3C4D
BT_IDB, BT_PB, BT_SPB, BT_EPB = 1, 2, 3, 6
OPT_TSRESOL, OPT_TSOFFSET = 9, 14
RUN_MIN = 8  # records of one length in a row below which the walk goes one by one for a while
ONE_BY_ONE = 64

Packet = tuple[float, int, int, int, int]  # ts, linktype, offset, caplen, wirelen


@dataclass
class Chunk:
    """Consecutive packets of one link type, as arrays (offsets into the reader's buf)."""

    linktype: int
    ts: np.ndarray  # float64 epoch seconds (file clock)
    offs: np.ndarray  # int64
    caps: np.ndarray  # int64
    wires: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.offs)


def _chunk(linktype: int, rows: list[Packet]) -> Chunk:
    a = np.array(rows, dtype=np.float64).reshape(-1, 5)
    ints = a[:, 2:].astype(np.int64)
    return Chunk(linktype, a[:, 0].copy(), ints[:, 0].copy(), ints[:, 1].copy(), ints[:, 2].copy())


def read_frames(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """Every packet's captured bytes, in file order."""
    with PcapReader(path) as r:
        for _, _, off, caplen, _ in r:
            yield bytes(r.buf[off : off + caplen])


def _linktype(raw: int, where: str) -> int:
    lt = raw & 0x0FFFFFFF  # the upper bits carry FCS length flags
    lt = LINKTYPE_ALIASES.get(lt, lt)
    if lt not in LINKTYPES:
        raise CaptureError(f"{where}: link type {lt} is not supported (only {', '.join(LINKTYPES.values())})")
    return lt


class PcapReader:
    """One capture file, pcap or pcapng (chosen by its magic number)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    raise CaptureError(f"{self.path}: empty file, not a capture")
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                self._mm.madvise(mmap.MADV_SEQUENTIAL)  # read once, front to back: pages can go behind us
        except OSError as e:
            raise CaptureError(f"{self.path}: cannot open capture: {e.strerror or e}") from e
        self.buf: mmap.mmap = self._mm
        self.size = size
        magic = self._mm[:4]
        if magic in PCAP_MAGICS:
            self.format = "pcap"
        elif len(magic) == 4 and struct.unpack("<I", magic)[0] == PCAPNG_SHB:
            self.format = "pcapng"
        else:
            self.close()
            raise CaptureError(f"{self.path}: not a pcap or pcapng file (magic {magic.hex()})")
        self.linktype = 0  # of the first interface; pcapng files may mix link types per packet
        self.packets = 0

    def close(self) -> None:
        with contextlib.suppress(BufferError):  # a live view of the map: the GC closes it later
            self._mm.close()

    def __enter__(self) -> PcapReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Packet]:
        return self._pcap() if self.format == "pcap" else self._pcapng()

    def chunks(self, max_packets: int) -> Iterator[Chunk]:
        """The packets in chunks of at most max_packets (split where the link type changes).

        On a damaged file the packets before the damage come first, then the CaptureError.
        """
        if self.format == "pcap":
            yield from self._pcap_chunks(max_packets)
            return
        rows: list[Packet] = []
        lt = -1
        try:
            for pkt in self:
                if len(rows) >= max_packets or (pkt[1] != lt and rows):
                    yield _chunk(lt, rows)
                    rows = []
                lt = pkt[1]
                rows.append(pkt)
        except CaptureError:
            if rows:
                yield _chunk(lt, rows)
            raise
        if rows:
            yield _chunk(lt, rows)

    def _fail(self, off: int, what: str) -> CaptureError:
        return CaptureError(f"{self.path}: {what} at byte {off} (after {self.packets} packets)")

    # -- pcap ------------------------------------------------------------------------------------
    def _pcap(self) -> Iterator[Packet]:
        mm, size = self._mm, self.size
        endian, unit, lt, limit = self._pcap_header()
        rec = struct.Struct(endian + "IIII").unpack_from
        off = 24
        while off < size:
            if off + 16 > size:
                raise self._fail(off, "truncated packet header")
            sec, frac, caplen, wirelen = rec(mm, off)
            if caplen > limit or caplen > wirelen + 65536:
                raise self._fail(off, f"corrupt packet header (captured length {caplen})")
            data = off + 16
            if data + caplen > size:
                raise self._fail(off, f"truncated packet (needs {caplen} bytes, {size - data} left)")
            self.packets += 1
            yield sec + frac * unit, lt, data, caplen, wirelen
            off = data + caplen

    def _pcap_header(self) -> tuple[str, float, int, int]:
        """-> (byte order, timestamp unit, link type, largest captured length accepted)."""
        if self.size < 24:
            raise self._fail(0, "truncated file header")
        endian, unit = PCAP_MAGICS[self._mm[:4]]
        _, _, _, _, snaplen, network = struct.unpack_from(endian + "HHiIII", self._mm, 4)
        self.linktype = _linktype(network, str(self.path))
        return endian, unit, self.linktype, max(MAX_FRAME, snaplen if snaplen < (1 << 26) else 0)

    def _pcap_chunks(self, max_packets: int) -> Iterator[Chunk]:
        """pcap in chunks: the record lengths followed by runs (numpy) or one by one; numpy reads the
        record headers."""
        endian, unit, lt, limit = self._pcap_header()
        mm, size = self._mm, self.size
        cap_at = struct.Struct(endian + "I").unpack_from
        hdr_dtype = np.dtype(endian + "u4")
        flat = np.frombuffer(mm, dtype=np.uint8)
        ar16 = np.arange(16)
        off = 24
        try:
            while off < size:
                err: CaptureError | None = None
                safe = size - 16 - limit  # records starting up to here need no bounds checks
                parts, off = self._walk(off, safe, max_packets, limit, hdr_dtype, cap_at)
                offs: list[int] = []
                add = offs.append
                for _ in range(max_packets - sum(len(p) for p in parts)):
                    if off >= size:
                        break
                    if off + 16 > size:
                        err = self._fail(off, "truncated packet header")
                        break
                    cap = cap_at(mm, off + 8)[0]
                    if cap > limit or off + 16 + cap > size:
                        err = self._bad_record(off, cap, limit)
                        break
                    add(off)
                    off += 16 + cap
                if offs:
                    parts.append(np.array(offs, dtype=np.int64))
                if parts:
                    o = np.concatenate(parts) if len(parts) > 1 else parts[0]
                    h = flat[o[:, None] + ar16].view(hdr_dtype).astype(np.int64)
                    if np.any(h[:, 2] > h[:, 3] + 65536):
                        bad = int(np.argmax(h[:, 2] > h[:, 3] + 65536))
                        self.packets += bad
                        raise self._fail(int(o[bad]), f"corrupt packet header (captured length {h[bad, 2]})")
                    self.packets += len(o)
                    yield Chunk(lt, h[:, 0] + h[:, 1] * unit, o + 16, h[:, 2].copy(), h[:, 3].copy())
                if err is not None:
                    raise err
        finally:
            del flat

    def _walk(self, off: int, safe: int, want: int, limit: int, u4: np.dtype,
              cap_at: Callable[[Any, int], tuple[int]]) -> tuple[list[np.ndarray], int]:
        """The offsets of up to `want` records from `off` on while they start at or before `safe` (header
        and data inside the file), stopping before a length over `limit`; -> (arrays of offsets, the next
        offset). Records of one captured length (a flood's, a snaplen's) go by runs: one strided numpy
        read of their length fields finds where the run ends; after a short run, one by one for a while."""
        mm = self._mm
        parts: list[np.ndarray] = []
        got = 0
        while got < want and off <= safe:
            cap = cap_at(mm, off + 8)[0]
            if cap > limit:
                break  # the careful loop reports it
            stride = 16 + cap
            m = min(want - got, (safe - off) // stride + 1)
            lens = np.ndarray((m,), u4, mm, off + 8, (stride,))
            ends = np.flatnonzero(lens != cap)
            del lens  # no view of the map outlives the walk (close() needs none)
            k = int(ends[0]) if ends.size else m
            parts.append(off + stride * np.arange(k, dtype=np.int64))
            got, off = got + k, off + stride * k
            if k < RUN_MIN and got < want:
                most = min(ONE_BY_ONE, want - got)
                offs, off = _one_by_one(mm, off, safe, most, limit, cap_at)
                parts.append(np.array(offs, dtype=np.int64))
                got += len(offs)
                if len(offs) < most:
                    break  # stopped early: past safe, or a length over limit
        return parts, off

    def _bad_record(self, off: int, cap: int, limit: int) -> CaptureError:
        if cap > limit:
            return self._fail(off, f"corrupt packet header (captured length {cap})")
        return self._fail(off, f"truncated packet (needs {cap} bytes, {self.size - off - 16} left)")

    # -- pcapng ----------------------------------------------------------------------------------
    def _pcapng(self) -> Iterator[Packet]:
        mm, size = self._mm, self.size
        endian = "<"
        ifaces: list[tuple[int, float, float, int]] = []  # linktype, ts unit, ts offset, snaplen
        off = 0
        while off < size:
            if off + 12 > size:
                raise self._fail(off, "truncated block header")
            btype = struct.unpack_from(endian + "I", mm, off)[0]
            if btype == PCAPNG_SHB:
                endian = self._section_endian(off)
                ifaces = []
            blen = struct.unpack_from(endian + "I", mm, off + 4)[0]
            if blen < 12 or blen % 4 or off + blen > size:
                what = "truncated block" if off + blen > size and blen >= 12 else f"corrupt block length {blen}"
                raise self._fail(off, what)
            if struct.unpack_from(endian + "I", mm, off + blen - 4)[0] != blen:
                raise self._fail(off, "corrupt block (trailing length differs)")
            body, body_end = off + 8, off + blen - 4
            if btype == BT_IDB:
                ifaces.append(self._idb(endian, body, body_end))
                if len(ifaces) == 1:
                    self.linktype = ifaces[0][0]
            elif btype in (BT_EPB, BT_PB, BT_SPB):
                pkt = self._packet_block(btype, endian, body, body_end, ifaces)
                self.packets += 1
                yield pkt
            off += blen

    def _section_endian(self, off: int) -> str:
        if off + 12 > self.size:
            raise self._fail(off, "truncated section header")
        bom = self._mm[off + 8 : off + 12]
        if bom == struct.pack("<I", BOM):
            return "<"
        if bom == struct.pack(">I", BOM):
            return ">"
        raise self._fail(off, "corrupt section header (byte-order magic)")

    def _idb(self, endian: str, body: int, body_end: int) -> tuple[int, float, float, int]:
        if body + 8 > body_end:
            raise self._fail(body, "corrupt interface description block")
        raw_lt, _, snaplen = struct.unpack_from(endian + "HHI", self._mm, body)
        lt = _linktype(raw_lt, f"{self.path}: interface {body}")
        unit, tsoff = 1e-6, 0.0
        pos = body + 8
        while pos + 4 <= body_end:
            code, olen = struct.unpack_from(endian + "HH", self._mm, pos)
            if code == 0:
                break
            if pos + 4 + olen > body_end:
                raise self._fail(pos, "corrupt interface option")
            if code == OPT_TSRESOL and olen >= 1:
                r = self._mm[pos + 4]
                unit = 2.0 ** -(r & 0x7F) if r & 0x80 else 10.0 ** -r
            elif code == OPT_TSOFFSET and olen >= 8:
                tsoff = float(struct.unpack_from(endian + "q", self._mm, pos + 4)[0])
            pos += 4 + ((olen + 3) & ~3)
        return lt, unit, tsoff, snaplen

    def _packet_block(self, btype: int, endian: str, body: int, body_end: int,
                      ifaces: list[tuple[int, float, float, int]]) -> Packet:
        mm = self._mm
        if btype == BT_SPB:
            if body + 4 > body_end or not ifaces:
                raise self._fail(body, "corrupt simple packet block")
            wirelen = struct.unpack_from(endian + "I", mm, body)[0]
            lt, _, _, snaplen = ifaces[0]
            caplen = min(wirelen, snaplen or wirelen, body_end - body - 4)
            return 0.0, lt, body + 4, caplen, wirelen
        if body + 20 > body_end:
            raise self._fail(body, "corrupt packet block")
        if btype == BT_EPB:
            ifid, hi, lo, caplen, wirelen = struct.unpack_from(endian + "IIIII", mm, body)
        else:
            ifid, _, hi, lo, caplen, wirelen = struct.unpack_from(endian + "HHIIII", mm, body)
        if ifid >= len(ifaces):
            raise self._fail(body, f"packet of undeclared interface {ifid}")
        if caplen > MAX_FRAME or body + 20 + caplen > body_end:
            raise self._fail(body, f"corrupt packet block (captured length {caplen})")
        lt, unit, tsoff, _ = ifaces[ifid]
        return ((hi << 32) | lo) * unit + tsoff, lt, body + 20, caplen, wirelen


def _one_by_one(mm: mmap.mmap, off: int, safe: int, most: int, limit: int,
                cap_at: Callable[[Any, int], tuple[int]]) -> tuple[list[int], int]:
    """Up to `most` record offsets from `off`, one length read each (captures of mixed lengths)."""
    offs: list[int] = []
    add = offs.append
    for _ in range(most):
        if off > safe:
            break
        cap = cap_at(mm, off + 8)[0]
        if cap > limit:
            break
        add(off)
        off += 16 + cap
    return offs, off
