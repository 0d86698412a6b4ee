"""Encoding capture files: classic pcap (microsecond stamps) and pcapng (with comments), one place.

The reader is `floodwatch.capture.pcapfile`. The recorder's atomic, size-limited files
(`floodwatch.recorder.writer.CaptureWriter`) and `write_pcap` (the traffic generator, the tests) both
encode with the functions here.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Sequence

LINKTYPE_ETHERNET = 1
SNAPLEN = 65535
PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAPNG_SHB, PCAPNG_BOM = 0x0A0D0D0A, 0x1A2B3C4D
BT_IDB, BT_EPB = 1, 6
OPT_END, OPT_COMMENT, OPT_SHB_USERAPPL, OPT_IF_TSRESOL = 0, 1, 4, 9

_PCAP_HDR = struct.Struct("<IHHiIII")
_PCAP_REC = struct.Struct("<IIII")
_NG_BLOCK_HEAD = struct.Struct("<II")
_NG_EPB_HEAD = struct.Struct("<IIIIIII")
_NG_OPT = struct.Struct("<HH")


def _usec(ts: float) -> int:
    return round(ts * 1_000_000)


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _option(code: int, value: bytes) -> bytes:
    return _NG_OPT.pack(code, len(value)) + value + b"\0" * _pad4(len(value))


def _block(block_type: int, body: bytes) -> bytes:
    total = len(body) + 12
    return _NG_BLOCK_HEAD.pack(block_type, total) + body + struct.pack("<I", total)


def pcap_header(linktype: int, snaplen: int) -> bytes:
    return _PCAP_HDR.pack(PCAP_MAGIC_USEC, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(ts: float, data: bytes, wirelen: int) -> bytes:
    sec, usec = divmod(_usec(ts), 1_000_000)
    return _PCAP_REC.pack(sec & 0xFFFFFFFF, usec, len(data), wirelen) + data


def pcapng_header(linktype: int, snaplen: int, comment: str) -> bytes:
    """Section header (with the comment and our name) and one interface description block (usec stamps)."""
    shb_opts = _option(OPT_COMMENT, comment.encode()) + _option(OPT_SHB_USERAPPL, b"floodwatch") + \
        _NG_OPT.pack(OPT_END, 0)
    shb = _block(PCAPNG_SHB, struct.pack("<IHHq", PCAPNG_BOM, 1, 0, -1) + shb_opts)
    idb = _block(BT_IDB, struct.pack("<HHI", linktype, 0, snaplen) + _option(OPT_IF_TSRESOL, b"\x06") +
                 _NG_OPT.pack(OPT_END, 0))
    return shb + idb


def pcapng_record(ts: float, data: bytes, wirelen: int, comment: str = "") -> bytes:
    """An enhanced packet block of interface 0, with an optional comment."""
    us = _usec(ts)
    n = len(data)
    opts = (_option(OPT_COMMENT, comment.encode()) + _NG_OPT.pack(OPT_END, 0)) if comment else b""
    body_len = 28 + n + _pad4(n) + len(opts) + 4
    head = _NG_EPB_HEAD.pack(BT_EPB, body_len, 0, (us >> 32) & 0xFFFFFFFF, us & 0xFFFFFFFF, n, wirelen)
    return head + data + b"\0" * _pad4(n) + opts + struct.pack("<I", body_len)


def write_pcap(path: str | os.PathLike[str], frames: Iterable[tuple[float, bytes]], linktype: int = LINKTYPE_ETHERNET,
               snaplen: int = SNAPLEN, wirelens: Sequence[int] | None = None) -> int:
    """Write (timestamp, frame) pairs as classic pcap, each cut to `snaplen` bytes (the wire length is the
    frame's, or `wirelens[i]`); returns the number of packets written."""
    n = 0
    with open(path, "wb") as f:
        f.write(pcap_header(linktype, snaplen))
        for ts, frame in frames:
            f.write(pcap_record(ts, frame[:snaplen], wirelens[n] if wirelens else len(frame)))
            n += 1
    return n
